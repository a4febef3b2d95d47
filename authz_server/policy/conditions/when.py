"""A rule's `when:` mapping → one compiled `When`, or located issues (SPEC §6).

Each key is compiled by the module of its kind. `rate_limit` and `approval` are stateful
(they count and consume in the store) and only make sense where a holding condition
grants something: on an allow rule. On a deny rule "holds" would mean "deny while under
the limit" or "deny once approved", which nobody means, so that is a load error, as is an
approval on an `unauthenticated` rule (an approval needs a requester to keep apart from
its approver).
"""

from __future__ import annotations

from collections.abc import Callable

from authz_server.policy.conditions.approval import compile_approval
from authz_server.policy.conditions.base import Condition, StatefulCondition, When
from authz_server.policy.conditions.body import compile_body
from authz_server.policy.conditions.cel import compile_expr
from authz_server.policy.conditions.matchers import compile_fields
from authz_server.policy.conditions.rate_limit import compile_rate_limit
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
_STATEFUL = frozenset({"rate_limit", "approval"})


def compile_when(
    fields: Fields,
    value: Value,
    path: str = "when",
    *,
    trust_domains: frozenset[str] | None = None,
    effect: str | None = None,
    unauthenticated: bool = False,
) -> When | None:
    """The compiled conditions; None after recording issues.

    `trust_domains` (None: unknown, not checked) bounds approver patterns; `effect` and
    `unauthenticated` are the rule's, for the checks of the stateful keys.
    """
    node = fields.mapping(value, path, frozenset(_COMPILERS) | _STATEFUL)
    if node is None:
        return None
    if not node.entries:
        fields.issue(node.line, path, "must not be empty (omit 'when' for no conditions)")
        return None
    before = len(fields.issues)
    conditions: list[Condition] = []
    stateful: list[StatefulCondition] = []
    for key, spec in node.entries.items():
        where = f"{path}.{key}"
        if key in _STATEFUL:
            if effect == "deny":
                fields.issue(node.key_lines[key], where, f"{key} is for allow rules only")
                continue
            if key == "approval" and unauthenticated:
                fields.issue(
                    node.key_lines[key],
                    where,
                    "an approval needs an identified caller: not with unauthenticated: true",
                )
                continue
            found: StatefulCondition | None
            if key == "approval":
                found = compile_approval(fields, spec, where, trust_domains)
            else:
                found = compile_rate_limit(fields, spec, where)
            if found is not None:
                stateful.append(found)
            continue
        compiler = _COMPILERS.get(key)
        if compiler is None:
            continue  # already reported by `mapping`
        condition = compiler(fields, spec, where)
        if condition is not None:
            conditions.append(condition)
    if len(fields.issues) != before:
        return None
    return When(tuple(conditions), tuple(stateful))
