"""A rule's `when:` mapping → one compiled `When`, or located issues (SPEC §6).

Each key is compiled by the module of its kind. Keys this version cannot enforce yet
(`rate_limit`, `approval`) are load errors, never ignored: a condition that is silently
dropped would grant what the policy author meant to restrict.
"""

from __future__ import annotations

from collections.abc import Callable

from authz_server.policy.conditions.base import Condition, When
from authz_server.policy.conditions.body import compile_body
from authz_server.policy.conditions.cel import compile_expr
from authz_server.policy.conditions.matchers import compile_fields
from authz_server.policy.conditions.schedule import compile_schedule
from authz_server.policy.yaml_source import Fields, Value

__all__ = ["compile_when"]

Compiler = Callable[[Fields, Value, str], Condition | None]

_COMPILERS: dict[str, Compiler] = {
    "schedule": compile_schedule,
    "headers": lambda f, v, p: compile_fields(f, v, p, "headers"),
    "query": lambda f, v, p: compile_fields(f, v, p, "query"),
    "body": compile_body,
    "expr": compile_expr,
}
_LATER = frozenset({"rate_limit", "approval"})


def compile_when(fields: Fields, value: Value, path: str = "when") -> When | None:
    """The compiled conditions; None after recording issues."""
    node = fields.mapping(value, path, frozenset(_COMPILERS), _LATER)
    if node is None:
        return None
    if not node.entries:
        fields.issue(node.line, path, "must not be empty (omit 'when' for no conditions)")
        return None
    before = len(fields.issues)
    conditions: list[Condition] = []
    for key, spec in node.entries.items():
        compiler = _COMPILERS.get(key)
        if compiler is None:
            continue  # already reported by `mapping`
        condition = compiler(fields, spec, f"{path}.{key}")
        if condition is not None:
            conditions.append(condition)
    if len(fields.issues) != before:
        return None
    return When(tuple(conditions))
