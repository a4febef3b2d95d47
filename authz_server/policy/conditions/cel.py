"""`when.expr`: a CEL expression (Google's CEL via `cel-expr-python`), compiled at load.

    expr: 'request.body.currency == "EUR" && params.tenant == source.path.split("/")[2]'

Variables (type-checked at load, so `params.x == 1` is a load error):

    request  map: method, host, path, query (map, repeats comma-joined), headers (map,
             lower-case names), body (the JSON body; numbers that are not integers
             become doubles, integers beyond int64 are evaluation errors)
    source   map: principal, trust_domain, path ("" for an anonymous caller)
    params   map: captures from `paths` and `principals`
    now      timestamp of the Check (the server clock, or `check --at`)

The strings extension is on (`lowerAscii`, `split`, ...). The expression must return a
bool. A compile error is a load error naming the rule. At run time an evaluation error
(a missing key, a type mismatch, division by zero) is `condition_failed`, never a crash:
an allow rule does not grant and a deny rule applies.

The body is parsed, and must be available, only for expressions that read
`request.body` (or `request` as a whole); the check is done on the compiled syntax tree.
To bound the cost of a request with a huge list, a comprehension (`all`, `exists`,
`map`, `filter`) may not be nested in another one's body: evaluation stays linear in
the size of the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# cel-expr-python ships .pyi files without a py.typed marker; cel.expr is protobuf
# code generated without stubs (it comes with xds-protos).
from cel.expr import checked_pb2, syntax_pb2  # type: ignore[import-untyped]
from cel_expr_python import cel  # type: ignore[import-untyped]
from cel_expr_python.ext import ext_strings  # type: ignore[import-untyped]
from google.protobuf import any_pb2

from authz_server.core.decision import Reason
from authz_server.core.errors import quote
from authz_server.core.yaml_source import Fields, Value
from authz_server.policy.conditions.base import HOLDS, ConditionResult, RequestContext
from authz_server.policy.conditions.jsonbody import JsonValue

__all__ = ["ExprCondition", "compile_expr", "compile_expression"]

MAX_EXPRESSION_CHARS = 8192
REQUEST_FIELDS = frozenset({"method", "host", "path", "query", "headers", "body"})
SOURCE_FIELDS = frozenset({"principal", "trust_domain", "path"})

_T = cel.Type
_ENV = cel.NewEnv(
    variables={
        "request": _T.Map(_T.STRING, _T.DYN),
        "source": _T.Map(_T.STRING, _T.STRING),
        "params": _T.Map(_T.STRING, _T.STRING),
        "now": _T.TIMESTAMP,
    },
    extensions=[ext_strings.ExtStrings()],
)


@dataclass(frozen=True, slots=True)
class ExprCondition:
    text: str
    program: Any  # cel.Expression: compiled once, evaluated per request
    #: The `request` fields the expression reads.
    reads: frozenset[str]
    kind: str = "expr"

    @property
    def needs_body(self) -> bool:
        return "body" in self.reads

    def evaluate(self, ctx: RequestContext, params: Mapping[str, str]) -> ConditionResult:
        if self.needs_body:
            document = ctx.json_body()
            if not document.available:
                return ConditionResult.unknown(Reason.BODY_UNAVAILABLE, document.problem or "")
        if "query" in self.reads and ctx.query_params() is None:
            return ConditionResult.unknown(
                Reason.CONDITION_FAILED, "query is ambiguous or not decodable"
            )
        data = {
            "request": _request(ctx, self.reads),
            "source": _source(ctx),
            "params": dict(params),
            "now": ctx.now,
        }
        try:
            result = self.program.eval(data=data)
            kind = result.type()
            value = result.value()
        except Exception as error:  # the binding raises on conversion errors: deny
            return ConditionResult.unknown(Reason.CONDITION_FAILED, _first_line(error))
        if kind == _T.BOOL:
            if value is True:
                return HOLDS
            return ConditionResult.fails(Reason.CONDITION_FAILED, "expression is false")
        shown = str(value) if kind == _T.ERROR else f"returned {kind.name()}, not bool"
        return ConditionResult.unknown(Reason.CONDITION_FAILED, f"evaluation error: {shown[:120]}")


def compile_expression(text: str) -> ExprCondition:
    """Compile and check `text`; ValueError with CEL's message when it is not usable."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    if not text.strip():
        raise ValueError("empty expression")
    try:
        program = _ENV.compile(text)
    except Exception as error:  # the binding raises RuntimeError with CEL's text
        raise ValueError(f"CEL compile error: {_cel_message(error)}") from None
    returns = program.return_type()
    if returns != _T.BOOL and returns != _T.DYN:
        raise ValueError(f"expression must return a bool, not {returns.name().lower()}")
    checked = checked_pb2.CheckedExpr()
    any_pb2.Any.FromString(program.serialize()).Unpack(checked)
    analysis = _Analysis()
    analysis.walk(checked.expr, in_loop=False)
    return ExprCondition(text, program, frozenset(analysis.reads))


def compile_expr(fields: Fields, value: Value, path: str) -> ExprCondition | None:
    text = fields.string(value, path)
    if text is None:
        return None
    try:
        return compile_expression(text)
    except ValueError as error:
        fields.issue(value.line, path, str(error))
        return None


class _Analysis:
    """What a checked expression reads from `request`, and whether its loops nest."""

    def __init__(self) -> None:
        self.reads: set[str] = set()

    def walk(self, expr: syntax_pb2.Expr, *, in_loop: bool) -> None:
        kind = expr.WhichOneof("expr_kind")
        if kind == "ident_expr":
            if expr.ident_expr.name == "request":  # used whole: it needs every field
                self.reads.update(REQUEST_FIELDS)
        elif kind == "select_expr":
            select = expr.select_expr
            if not self._field(select.operand, select.field):
                self.walk(select.operand, in_loop=in_loop)
        elif kind == "call_expr":
            call = expr.call_expr
            index = call.args[1] if call.function == "_[_]" and len(call.args) == 2 else None
            if (
                index is not None
                and index.WhichOneof("expr_kind") == "const_expr"
                and index.const_expr.WhichOneof("constant_kind") == "string_value"
                and self._field(call.args[0], index.const_expr.string_value)
            ):
                return
            if call.HasField("target"):
                self.walk(call.target, in_loop=in_loop)
            for arg in call.args:
                self.walk(arg, in_loop=in_loop)
        elif kind == "list_expr":
            for element in expr.list_expr.elements:
                self.walk(element, in_loop=in_loop)
        elif kind == "struct_expr":
            for entry in expr.struct_expr.entries:
                if entry.HasField("map_key"):
                    self.walk(entry.map_key, in_loop=in_loop)
                self.walk(entry.value, in_loop=in_loop)
        elif kind == "comprehension_expr":
            if in_loop:
                raise ValueError(
                    "a comprehension (all, exists, exists_one, map, filter) may not be "
                    "nested in another one: its cost would grow with the square of the input"
                )
            loop = expr.comprehension_expr
            self.walk(loop.iter_range, in_loop=False)
            self.walk(loop.accu_init, in_loop=False)
            self.walk(loop.loop_condition, in_loop=True)
            self.walk(loop.loop_step, in_loop=True)
            self.walk(loop.result, in_loop=False)

    def _field(self, operand: syntax_pb2.Expr, name: str) -> bool:
        """Record `request.<name>` / `source.<name>`; True when `operand` was such a variable."""
        if operand.WhichOneof("expr_kind") != "ident_expr":
            return False
        variable = operand.ident_expr.name
        known = {"request": REQUEST_FIELDS, "source": SOURCE_FIELDS}.get(variable)
        if known is None:
            return False
        if name not in known:
            fields = ", ".join(sorted(known))
            raise ValueError(f"{variable} has no field {quote(name)} (fields: {fields})")
        if variable == "request":
            self.reads.add(name)
        return True


def _request(ctx: RequestContext, reads: frozenset[str]) -> dict[str, Any]:
    cache = ctx.memo()
    request: dict[str, Any] = {}
    for name in reads:
        key = "cel:" + name
        if key not in cache:
            cache[key] = _request_field(ctx, name)
        request[name] = cache[key]
    return request


def _request_field(ctx: RequestContext, name: str) -> Any:
    if name == "body":
        return _cel_json(ctx.json_body().value)
    if name == "query":
        return dict(ctx.query_params() or {})
    if name == "headers":
        return dict(ctx.headers)
    value: str = getattr(ctx, name)
    return value


def _source(ctx: RequestContext) -> dict[str, str]:
    cache = ctx.memo()
    if "cel:$source" not in cache:
        spiffe_id = ctx.spiffe_id
        cache["cel:$source"] = {
            "principal": str(spiffe_id) if spiffe_id else "",
            "trust_domain": spiffe_id.trust_domain if spiffe_id else "",
            "path": spiffe_id.path if spiffe_id else "",
        }
    source: dict[str, str] = cache["cel:$source"]
    return source


def _cel_json(value: JsonValue) -> Any:
    """The parsed body as CEL values: Decimal → double, the rest as is."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _cel_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cel_json(v) for v in value]
    return value


def _cel_message(error: Exception) -> str:
    """CEL's error text without the status prefix, kept to its first lines."""
    text = str(error).removeprefix("INVALID_ARGUMENT: ").removeprefix("ERROR: ")
    lines = text.splitlines()
    return " ".join(line.strip() for line in lines[:3]).removesuffix(" [INVALID_ARGUMENT]")[:300]


def _first_line(error: Exception) -> str:
    text = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    return f"evaluation error: {text}"
