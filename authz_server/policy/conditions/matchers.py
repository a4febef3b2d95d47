"""`when.headers` and `when.query`: per-name string operators
(docs/policy/conditions.md#headers-and-query).

    headers:
      x-agent-task: {present: true}
      x-change-ticket: {regex: "CHG-[0-9]{4,8}"}
      x-env: {in: [staging, dev]}
    query:
      dry: {equals: "true"}

Operators: `equals`, `in`, `prefix`, `regex`, `present: true|false`. Several operators on
one name must all hold; every operator except `present: false` needs the value to be
there. Header names are case-insensitive; query names are not.

`regex` is RE2 (the `google-re2` binding): linear time in the input, whatever the pattern,
so a request cannot make matching backtrack; patterns RE2 rejects (backreferences,
lookaround) are load errors. It is anchored: the whole value must match.

Repeated values: Envoy joins a header sent twice into one value with `,` (the query
parser does the same for a repeated parameter), and backends disagree on which copy
counts. The operators see the whole joined value (`prefix` also requires that no `,`
follows the prefix); when that does not match but one comma-separated copy alone would,
the condition cannot be judged: an allow rule does not grant (`condition_failed`) and a
deny rule applies (`denied_by_rule`). So `x-role: user` + `x-role: admin` neither passes
`equals: user` nor dodges a deny rule on `equals: admin`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from authz_server.core.decision import Reason
from authz_server.core.errors import quote
from authz_server.core.yaml_source import Fields, Map, Scalar, Value
from authz_server.policy.conditions.base import HOLDS, ConditionResult, Outcome, RequestContext

__all__ = ["FieldCondition", "TextMatcher", "compile_fields", "compile_regex"]

_OPERATORS = frozenset({"equals", "in", "prefix", "regex", "present"})
_HEADER_NAME = re.compile(r":?[a-z0-9!#$%&'*+.^_`|~-]+")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


class Regex:
    """An anchored RE2 pattern: `fullmatch` in time linear in the text."""

    __slots__ = ("_compiled", "text")

    def __init__(self, pattern: str) -> None:
        try:
            self._compiled: Any = re2.compile(pattern, _RE2_OPTIONS)
        except re2.error as error:
            message = error.args[0] if error.args else error
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            raise ValueError(f"invalid regex {quote(pattern)}: {message}") from None
        self.text = pattern

    def fullmatch(self, value: str) -> bool:
        return self._compiled.fullmatch(value) is not None


def compile_regex(pattern: str) -> Regex:
    """RE2, anchored; ValueError naming the problem when RE2 refuses the pattern."""
    return Regex(pattern)


@dataclass(frozen=True, slots=True)
class TextMatcher:
    """The compiled operators for one header or query parameter."""

    checks: tuple[tuple[str, Callable[[str], bool]], ...]
    #: True / False for `present`, None when not given.
    present: bool | None

    def mismatch(self, value: str | None) -> str | None:
        """What does not hold for `value` (None when absent), or None when all hold."""
        if value is None:
            if self.present is False or not (self.checks or self.present):
                return None
            return "is absent"
        if self.present is False:
            return "is present"
        for name, check in self.checks:
            if not check(value):
                return f"fails {name}"
        return None

    def one_copy_passes(self, value: str) -> bool:
        """Whether one of the comma-separated copies in `value` would pass on its own."""
        if "," not in value or not self.checks:
            return False
        return any(
            all(check(part.strip()) for _, check in self.checks) for part in value.split(",")
        )


@dataclass(frozen=True, slots=True)
class FieldCondition:
    """`headers` or `query`: every listed name must satisfy its matcher."""

    kind: str
    matchers: tuple[tuple[str, TextMatcher], ...]

    def evaluate(self, ctx: RequestContext, params: Mapping[str, str]) -> ConditionResult:
        values = ctx.headers if self.kind == "headers" else ctx.query_params()
        if values is None:
            return ConditionResult.unknown(
                Reason.CONDITION_FAILED, "query is ambiguous or not decodable"
            )
        noun = "header" if self.kind == "headers" else "query parameter"
        unknown: ConditionResult | None = None
        for name, matcher in self.matchers:
            value = values.get(name)
            problem = matcher.mismatch(value)
            if problem is None:
                continue
            if value is not None and matcher.one_copy_passes(value):
                # Sent more than once (or with a comma): the backend may read the copy
                # that passes. An allow rule must not grant; a deny rule must apply.
                unknown = unknown or ConditionResult(
                    Outcome.UNKNOWN,
                    Reason.CONDITION_FAILED,
                    f"{noun} {name!r} has several values",
                    deny_reason=Reason.DENIED_BY_RULE,
                )
                continue
            return ConditionResult.fails(Reason.CONDITION_FAILED, f"{noun} {name!r} {problem}")
        return unknown or HOLDS


def compile_fields(fields: Fields, value: Value, path: str, kind: str) -> FieldCondition | None:
    """`headers` (kind "headers") or `query` (kind "query") → one condition."""
    if not isinstance(value, Map):
        fields.wrong_type(value, path, "a mapping of names to operators")
        return None
    if not value.entries:
        fields.issue(value.line, path, f"must not be empty (omit it for no {kind} condition)")
        return None
    before = len(fields.issues)
    matchers: list[tuple[str, TextMatcher]] = []
    seen: dict[str, str] = {}
    for raw_name, spec in value.entries.items():
        where = f"{path}.{raw_name}"
        name = raw_name.lower() if kind == "headers" else raw_name
        line = value.key_lines[raw_name]
        if kind == "headers" and _HEADER_NAME.fullmatch(name) is None:
            fields.issue(line, where, f"invalid header name {quote(raw_name)}")
            continue
        if not name:
            fields.issue(line, where, "empty query parameter name")
            continue
        if name in seen:
            fields.issue(line, where, f"{quote(name)} is already listed as {quote(seen[name])}")
            continue
        seen[name] = raw_name
        matcher = compile_text_matcher(fields, spec, where)
        if matcher is not None:
            matchers.append((name, matcher))
    if len(fields.issues) != before:
        return None
    return FieldCondition(kind, tuple(matchers))


def compile_text_matcher(fields: Fields, value: Value, path: str) -> TextMatcher | None:
    node = fields.mapping(value, path, _OPERATORS)
    if node is None:
        return None
    if not node.entries:
        fields.issue(node.line, path, "needs an operator: " + ", ".join(sorted(_OPERATORS)))
        return None
    before = len(fields.issues)
    checks: list[tuple[str, Callable[[str], bool]]] = []
    present: bool | None = None
    for op, spec in node.entries.items():
        where = f"{path}.{op}"
        if op not in _OPERATORS:
            continue  # already reported by `mapping`
        if op == "present":
            present = fields.boolean(spec, where)
        elif op == "in":
            listed = fields.compiled_list(spec, where, str, empty="must not be empty")
            if listed is not None:
                choices = frozenset(v for _, v in listed)
                checks.append(("in", choices.__contains__))
        else:
            text = _text(fields, spec, where)
            if text is None:
                continue
            if op == "equals":
                checks.append(("equals", text.__eq__))
            elif op == "prefix":
                checks.append(("prefix", _prefix(text)))
            else:  # regex
                try:
                    checks.append(("regex", compile_regex(text).fullmatch))
                except ValueError as error:
                    fields.issue(spec.line, where, str(error))
    if present is False and checks:
        fields.issue(node.line, path, "'present: false' cannot be combined with other operators")
    if len(fields.issues) != before:
        return None
    return TextMatcher(tuple(checks), present)


def _text(fields: Fields, value: Value, path: str) -> str | None:
    """A string operand; numbers and booleans are refused rather than guessed at."""
    if isinstance(value, Scalar) and isinstance(value.value, str):
        return value.value
    fields.wrong_type(value, path, "a string (quote numbers and booleans)")
    return None


def _prefix(prefix: str) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return value.startswith(prefix) and "," not in value[len(prefix) :]

    return check
