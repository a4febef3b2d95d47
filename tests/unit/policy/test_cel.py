"""`when.expr`: CEL compiled at load, its variables, and evaluation errors that deny."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

from datetime import datetime

import pytest

from authz_server.core.decision import Reason
from authz_server.core.errors import PolicyError
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.policy.conditions.base import Outcome, RequestContext
from authz_server.policy.conditions.cel import compile_expression
from authz_server.policy.load import load_policy_text

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org]\nrules:\n"
AGENT = "spiffe://example.org/agents/acme/bot"
AT = datetime.fromisoformat("2026-11-26T10:30:00+01:00")


def _ctx(
    body: bytes | None = None, query: str = "", principal: str | None = AGENT
) -> RequestContext:
    return RequestContext(
        "POST",
        "api.internal",
        "/v1/tenants/acme/transfers",
        query=query,
        headers={"content-type": "application/json", "x-agent-task": "T-1"},
        body=body,
        spiffe_id=parse_spiffe_id(principal) if principal else None,
        now=AT,
    )


H = (Outcome.HOLDS, None)
F = (Outcome.FAILS, Reason.CONDITION_FAILED)
U = (Outcome.UNKNOWN, Reason.CONDITION_FAILED)
UNAVAILABLE = (Outcome.UNKNOWN, Reason.BODY_UNAVAILABLE)


@pytest.mark.parametrize(
    ("expr", "body", "expected"),
    [
        pytest.param('request.method == "POST" && request.host == "api.internal"', None, H, id="method-host"),
        pytest.param('request.path.startsWith("/v1/tenants/" + params.tenant + "/")', None, H, id="params"),
        pytest.param(f'source.principal == "{AGENT}" && source.trust_domain == "example.org"', None, H, id="source"),
        pytest.param('source.path.split("/")[2] == params.tenant', None, H, id="strings-extension"),
        pytest.param('request.headers["x-agent-task"].matches("^T-[0-9]+$")', None, H, id="headers-regex"),
        pytest.param('request.query.limit == "10"', None, H, id="query"),
        pytest.param('now.getHours("Europe/Berlin") == 10 && now.getDayOfWeek() == 4', None, H, id="now"),
        pytest.param('request.body.currency == "EUR" && request.body.amount <= 1000.0', b'{"currency": "EUR", "amount": 12.5}', H, id="body"),
        pytest.param('request.body.items.all(i, i.qty > 0)', b'{"items": [{"qty": 1}, {"qty": 2}]}', H, id="comprehension"),
        pytest.param('request.body.currency == "EUR"', b'{"currency": "USD"}', F, id="false"),
        pytest.param('request.body.currency == "EUR"', b'{}', U, id="missing-key"),
        pytest.param('request.body.n > 1', b'{"n": 123456789012345678901234567890}', U, id="int-beyond-int64"),
        pytest.param('1 / (size(request.headers) - 2) == 1', None, U, id="division-by-zero"),
        pytest.param('request.headers["x-missing"] == "a"', None, U, id="missing-header"),
        pytest.param('request.body.currency == "EUR"', None, UNAVAILABLE, id="body-absent"),
        pytest.param('request.body.currency == "EUR"', b'{"currency": "EUR", "currency": "USD"}', UNAVAILABLE, id="body-duplicate-key"),
        pytest.param('request.method == "POST"', b"not json", H, id="body-not-read-when-unused"),
        pytest.param('request["body"].currency == "EUR"', None, UNAVAILABLE, id="index-syntax-reads-body"),
        pytest.param('size(request) > 0', None, UNAVAILABLE, id="whole-request-reads-body"),
    ],
)  # fmt: skip
def test_evaluation(expr: str, body: bytes | None, expected: tuple[Outcome, Reason | None]) -> None:
    """Variables are what docs/policy/conditions.md#expr lists; errors and unreadable bodies never
    pass."""
    text = HEADER + (
        "  - id: r\n    paths: ['/v1/tenants/{tenant}/**']\n    effect: allow\n"
        f"    when:\n      expr: '{expr.replace(chr(39), chr(39) * 2)}'\n"
    )
    rule = load_policy_text(text).rules[0]
    result = rule.when.check(_ctx(body, query="limit=10"), {"tenant": "acme"})
    assert (result.outcome, result.reason) == expected


def test_anonymous_source_is_empty() -> None:
    """A caller without identity has empty source fields, not a missing map."""
    condition = compile_expression('source.principal == ""')
    assert condition.evaluate(_ctx(principal=None), {}).holds


def test_undecodable_query_is_unknown() -> None:
    """An expression reading the query cannot judge one that backends would read differently."""
    condition = compile_expression('!("admin" in request.query)')
    result = condition.evaluate(_ctx(query="admin=1;x=2"), {})
    assert (result.outcome, result.reason) == U


@pytest.mark.parametrize(
    ("expr", "reads"),
    [
        pytest.param('request.method == "GET"', {"method"}, id="one-field"),
        pytest.param(
            'has(request.body.a) || request["query"].x == "1"',
            {"body", "query"},
            id="has-and-index",
        ),
        pytest.param(
            "request == {}", {"method", "host", "path", "query", "headers", "body"}, id="whole"
        ),
        pytest.param("params.x == source.path", set(), id="none"),
    ],
)
def test_reads(expr: str, reads: set[str]) -> None:
    """The compiled tree tells which request fields an expression reads (body only if used)."""
    assert compile_expression(expr).reads == reads


def _issues(expr: str) -> list[tuple[int | None, str | None, str | None, str]]:
    text = HEADER + f"  - id: agent-transfers\n    effect: allow\n    when:\n      expr: {expr}\n"
    with pytest.raises(PolicyError) as raised:
        load_policy_text(text, "p.yaml")
    return [(i.line, i.rule_id, i.field, i.message) for i in raised.value.issues]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        pytest.param("'request.body.amount <'", "CEL compile error: <input>:1:22: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER} | request.body.amount < | .....................^", id="syntax"),
        pytest.param("'principal == \"x\"'", "CEL compile error: <input>:1:1: undeclared reference to 'principal' (in container '') | principal == \"x\" | ^", id="undeclared"),
        pytest.param("'params.tenant == 1'", "CEL compile error: <input>:1:15: found no matching overload for '_==_' applied to '(string, int)' | params.tenant == 1 | ..............^", id="type-error"),
        pytest.param("'size(request.headers)'", "expression must return a bool, not int", id="not-bool"),
        pytest.param("'request.bodyy.a == 1'", "request has no field 'bodyy' (fields: body, headers, host, method, path, query)", id="unknown-request-field"),
        pytest.param("'source.spiffe_id == \"\"'", "source has no field 'spiffe_id' (fields: path, principal, trust_domain)", id="unknown-source-field"),
        pytest.param("'request.body.a.all(x, request.body.a.exists(y, x == y))'", "a comprehension (all, exists, exists_one, map, filter) may not be nested in another one: its cost would grow with the square of the input", id="nested-comprehension"),
        pytest.param("''", "empty expression", id="empty"),
        pytest.param("5", "expected a string, got int '5'", id="not-a-string"),
    ],
)  # fmt: skip
def test_compile_errors_name_the_rule(expr: str, message: str) -> None:
    """A CEL compile error is a load error with the rule id, field and line."""
    assert _issues(expr) == [(8, "agent-transfers", "when.expr", message)]
