"""`when.body`: fields of the JSON body by dotted path, compared with the operators of
docs/policy/conditions.md#body.

    body:
      amount: {gt: 0, lte: 1000}
      destination.country: {in: [DE, FR, NL]}
      items[0].sku: {regex: "SKU-[0-9]+"}
      metadata["content-type"]: {present: false}

Paths: names (`[A-Za-z_$][A-Za-z0-9_$-]*`) joined by `.`, list indexes `[0]`, and keys
that are not names as JSON strings in brackets (`["a.b"]`). Operators: `equals`, `in`,
`not_in` (scalars), `lt`, `lte`, `gt`, `gte` (numbers), `regex` (RE2, anchored, strings
only), `present: true|false`. Several operators on one path must all hold.

Comparisons are by JSON type, then value: `true` is not `1`, `"5"` is not `5`, `1e3`
equals `1000` (one number), and numbers compare exactly (see `jsonbody`). Every operator
except `present: false` needs the field to be there. A bound (`lt` ...) applied to a value
that is not a number cannot be judged (a backend may coerce `"1e9"`): an allow rule fails
and a deny rule applies. The body itself must be available (`jsonbody`), or the
condition is `body_unavailable`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from authz_server.core.decision import Reason
from authz_server.core.errors import quote
from authz_server.core.yaml_source import Fields, Map, Scalar, Seq, Value
from authz_server.policy.conditions.base import HOLDS, ConditionResult, Outcome, RequestContext
from authz_server.policy.conditions.jsonbody import JsonValue
from authz_server.policy.conditions.matchers import compile_regex

__all__ = ["BodyCondition", "compile_body", "parse_body_path", "resolve"]

_OPERATORS = ("equals", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "present")
_TOKEN = re.compile(
    r"""(?P<name>[A-Za-z_$][A-Za-z0-9_$-]*)
      | \[(?P<index>0|[1-9][0-9]{0,8})\]
      | \[(?P<key>"(?:[^"\\]|\\.)*")\]""",
    re.VERBOSE,
)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()

#: What a compiled operator says about one value: holds, fails, or cannot be judged.
Check = Callable[[JsonValue], Outcome]


def parse_body_path(text: str) -> tuple[str | int, ...]:
    """`a.b[0]["c d"]` → ("a", "b", 0, "c d"); ValueError naming the problem."""
    steps: list[str | int] = []
    pos = 0
    while pos < len(text):
        if steps and text[pos] == ".":
            pos += 1
            match = _TOKEN.match(text, pos)
            if match is None or match.group("name") is None:
                raise ValueError(f"body path {quote(text)}: expected a name after '.' at {pos}")
        else:
            match = _TOKEN.match(text, pos)
            if match is None or (steps and match.group("name") is not None):
                raise ValueError(f"body path {quote(text)}: unexpected {quote(text[pos:][:20])}")
        if match.group("name") is not None:
            steps.append(match.group("name"))
        elif match.group("index") is not None:
            steps.append(int(match.group("index")))
        else:
            try:
                steps.append(str(json.loads(match.group("key"))))
            except ValueError:
                raise ValueError(f"body path {quote(text)}: bad quoted key") from None
        pos = match.end()
    if not steps:
        raise ValueError("empty body path")
    return tuple(steps)


def resolve(document: JsonValue, steps: tuple[str | int, ...]) -> JsonValue:
    """The value at `steps`, or MISSING."""
    value = document
    for step in steps:
        if isinstance(step, str):
            if not isinstance(value, dict) or step not in value:
                return MISSING
            value = value[step]
        else:
            if not isinstance(value, list) or step >= len(value):
                return MISSING
            value = value[step]
    return value


def json_kind(value: JsonValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def same(a: JsonValue, b: JsonValue) -> bool:
    """JSON equality: same type, same value (`true` is not 1, numbers compare exactly)."""
    return json_kind(a) == json_kind(b) and bool(a == b)


@dataclass(frozen=True, slots=True)
class _Field:
    path: str
    steps: tuple[str | int, ...]
    checks: tuple[tuple[str, Check], ...]
    present: bool | None


@dataclass(frozen=True, slots=True)
class BodyCondition:
    fields: tuple[_Field, ...]
    kind: str = "body"
    needs_body: bool = True

    def evaluate(self, ctx: RequestContext, params: Mapping[str, str]) -> ConditionResult:
        document = ctx.json_body()
        if not document.available:
            return ConditionResult.unknown(Reason.BODY_UNAVAILABLE, document.problem or "")
        unknown: ConditionResult | None = None
        for field in self.fields:
            value = resolve(document.value, field.steps)
            if value is MISSING:
                if field.present is False:
                    continue
                return ConditionResult.fails(
                    Reason.CONDITION_FAILED, f"body field {field.path!r} is absent"
                )
            if field.present is False:
                return ConditionResult.fails(
                    Reason.CONDITION_FAILED, f"body field {field.path!r} is present"
                )
            for name, check in field.checks:
                outcome = check(value)
                if outcome is Outcome.FAILS:
                    return ConditionResult.fails(
                        Reason.CONDITION_FAILED, f"body field {field.path!r} fails {name}"
                    )
                if outcome is Outcome.UNKNOWN and unknown is None:
                    unknown = ConditionResult.unknown(
                        Reason.CONDITION_FAILED,
                        f"body field {field.path!r} is a {json_kind(value)}, {name} needs a number",
                    )
        return unknown or HOLDS


def compile_body(fields: Fields, value: Value, path: str) -> BodyCondition | None:
    if not isinstance(value, Map):
        fields.wrong_type(value, path, "a mapping of body paths to operators")
        return None
    if not value.entries:
        fields.issue(value.line, path, "must not be empty (omit it for no body condition)")
        return None
    before = len(fields.issues)
    compiled: list[_Field] = []
    for text, spec in value.entries.items():
        where = f"{path}.{text}"
        try:
            steps = parse_body_path(text)
        except ValueError as error:
            fields.issue(value.key_lines[text], where, str(error))
            continue
        field = _field(fields, spec, where, text, steps)
        if field is not None:
            compiled.append(field)
    if len(fields.issues) != before:
        return None
    return BodyCondition(tuple(compiled))


def _field(
    fields: Fields, value: Value, path: str, text: str, steps: tuple[str | int, ...]
) -> _Field | None:
    node = fields.mapping(value, path, frozenset(_OPERATORS))
    if node is None:
        return None
    if not node.entries:
        fields.issue(node.line, path, "needs an operator: " + ", ".join(_OPERATORS))
        return None
    before = len(fields.issues)
    checks: list[tuple[str, Check]] = []
    present: bool | None = None
    for op, spec in node.entries.items():
        where = f"{path}.{op}"
        if op == "present":
            present = fields.boolean(spec, where)
            continue
        if op not in _OPERATORS:
            continue  # already reported by `mapping`
        check = _operator(fields, op, spec, where)
        if check is not None:
            checks.append((f"{op} {_show(spec)}", check))
    if present is False and checks:
        fields.issue(node.line, path, "'present: false' cannot be combined with other operators")
    if len(fields.issues) != before:
        return None
    return _Field(text, steps, tuple(checks), present)


def _operator(fields: Fields, op: str, spec: Value, where: str) -> Check | None:
    if op in ("in", "not_in"):
        if not isinstance(spec, Seq) or not spec.items:
            fields.issue(spec.line, where, "expected a non-empty list of values")
            return None
        choices = [_scalar(fields, item, f"{where}[{i}]") for i, item in enumerate(spec.items)]
        if any(c is MISSING for c in choices):
            return None
        inside = op == "in"
        return lambda v: _outcome(any(same(v, c) for c in choices) is inside)
    if op == "regex":
        text = spec.value if isinstance(spec, Scalar) else None
        if not isinstance(text, str):
            fields.wrong_type(spec, where, "a string (an RE2 pattern)")
            return None
        try:
            regex = compile_regex(text)
        except ValueError as error:
            fields.issue(spec.line, where, str(error))
            return None
        return lambda v: _outcome(isinstance(v, str) and regex.fullmatch(v))
    if op == "equals":
        expected = _scalar(fields, spec, where)
        return None if expected is MISSING else lambda v: _outcome(same(v, expected))
    bound = _number(fields, spec, where)
    if bound is None:
        return None
    compare: Callable[[Any, Any], bool] = {
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
    }[op]
    return lambda v: _outcome(compare(v, bound)) if json_kind(v) == "number" else Outcome.UNKNOWN


def _outcome(holds: bool) -> Outcome:
    return Outcome.HOLDS if holds else Outcome.FAILS


def _scalar(fields: Fields, value: Value, where: str) -> JsonValue:
    """A policy scalar as the JSON value it stands for (floats exact as written), or MISSING."""
    if not isinstance(value, Scalar):
        fields.wrong_type(value, where, "a string, number, boolean or null")
        return MISSING
    v = value.value
    if isinstance(v, float):
        number = _number(fields, value, where)
        return MISSING if number is None else number
    return v


def _number(fields: Fields, value: Value, where: str) -> int | Decimal | None:
    v = value.value if isinstance(value, Scalar) else None
    if isinstance(v, bool) or not isinstance(v, int | float):
        fields.wrong_type(value, where, "a number")
        return None
    if isinstance(v, float):
        if not math.isfinite(v):
            fields.issue(value.line, where, f"{v} is not a JSON number")
            return None
        return Decimal(repr(v))  # the shortest text that reads back as v: 0.1 stays 0.1
    return v


def _show(value: Value) -> str:
    if isinstance(value, Scalar):
        return json.dumps(value.value)
    if isinstance(value, Seq):
        return "[" + ", ".join(_show(i) for i in value.items) + "]"
    return "…"
