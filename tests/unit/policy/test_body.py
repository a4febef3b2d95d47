"""`when.body`: dotted paths, JSON-typed comparisons, body_unavailable, located load errors."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import json

import pytest

from authz_server.core.decision import Reason
from authz_server.core.errors import PolicyError
from authz_server.policy.conditions.base import Outcome, RequestContext
from authz_server.policy.conditions.body import parse_body_path
from authz_server.policy.load import load_policy_text
from authz_server.policy.model import Rule

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org]\nrules:\n"
JSON = {"content-type": "application/json"}


def _rule(body: str) -> Rule:
    text = HEADER + "  - id: r\n    effect: allow\n    when:\n      body:\n" + body
    return load_policy_text(text).rules[0]


def _result(
    rule: Rule, body: bytes | None, headers: dict[str, str] | None = None
) -> tuple[Outcome, Reason | None]:
    ctx = RequestContext("POST", "h", "/", headers=JSON if headers is None else headers, body=body)
    result = rule.when.check(ctx, {})
    return result.outcome, result.reason


H = (Outcome.HOLDS, None)
F = (Outcome.FAILS, Reason.CONDITION_FAILED)
U = (Outcome.UNKNOWN, Reason.CONDITION_FAILED)
UNAVAILABLE = (Outcome.UNKNOWN, Reason.BODY_UNAVAILABLE)

TRANSFER = """\
        amount: {gt: 0, lte: 1000}
        destination.country: {in: [DE, FR, NL]}
        currency: {equals: EUR}
        items[0].sku: {regex: "SKU-[0-9]+"}
        memo: {present: false}
"""
OK = {
    "amount": 250,
    "destination": {"country": "DE"},
    "currency": "EUR",
    "items": [{"sku": "SKU-1"}],
}


def _with(**change: object) -> bytes:
    return json.dumps({**OK, **change}).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(_with(), H, id="holds"),
        pytest.param(_with(amount=1000), H, id="bound-inclusive"),
        pytest.param(b'{"amount": 1e3, "destination": {"country": "DE"}, "currency": "EUR", "items": [{"sku": "SKU-1"}]}', H, id="exponent-is-1000"),
        pytest.param(_with(amount=1000.5), F, id="over-bound"),
        pytest.param(b'{"amount": 1000.0000000000000001, "destination": {"country": "DE"}, "currency": "EUR", "items": [{"sku": "SKU-1"}]}', F, id="over-bound-beyond-float"),
        pytest.param(_with(amount=10**40), F, id="big-int"),
        pytest.param(_with(amount=0), F, id="gt-zero"),
        pytest.param(_with(amount="500"), U, id="amount-as-string"),
        pytest.param(_with(amount=True), U, id="amount-as-bool"),
        pytest.param(_with(amount=None), U, id="amount-null"),
        pytest.param(_with(destination={"country": "US"}), F, id="country-not-in"),
        pytest.param(_with(destination={"country": ["DE"]}), F, id="country-as-list"),
        pytest.param(_with(destination="DE"), F, id="destination-not-object"),
        pytest.param(_with(currency="eur"), F, id="equals-case-sensitive"),
        pytest.param(_with(items=[]), F, id="index-out-of-range"),
        pytest.param(_with(items=[{"sku": 7}]), F, id="regex-on-number"),
        pytest.param(_with(items=[{"sku": "SKU-1x"}]), F, id="regex-anchored"),
        pytest.param(_with(memo="hi"), F, id="must-be-absent"),
        pytest.param(_with(memo=None), F, id="null-is-present"),
        pytest.param(json.dumps({k: v for k, v in OK.items() if k != "amount"}).encode(), F, id="amount-absent"),
        pytest.param(b'{"amount": 1, "amount": 5000}', UNAVAILABLE, id="duplicate-key"),
        pytest.param(b"[1, 2]", F, id="top-level-array"),
        pytest.param(b"not json", UNAVAILABLE, id="not-json"),
        pytest.param(None, UNAVAILABLE, id="absent"),
    ],
)  # fmt: skip
def test_transfer_fields(body: bytes | None, expected: tuple[Outcome, Reason | None]) -> None:
    """Every operator by JSON type and exact value; what cannot be judged is not a pass."""
    assert _result(_rule(TRANSFER), body) == expected


def test_unknown_does_not_hide_a_definite_fail() -> None:
    """A bound on a non-number is unknown, but another field that fails makes it a fail."""
    rule = _rule("        a: {lte: 1}\n        b: {equals: x}\n")
    assert _result(rule, b'{"a": "1", "b": "y"}') == F
    assert _result(rule, b'{"a": "1", "b": "x"}') == U


@pytest.mark.parametrize(
    ("spec", "body", "expected"),
    [
        pytest.param("{equals: 1}", b'{"v": true}', F, id="true-is-not-1"),
        pytest.param("{equals: true}", b'{"v": 1}', F, id="1-is-not-true"),
        pytest.param("{equals: '5'}", b'{"v": 5}', F, id="string-is-not-number"),
        pytest.param("{equals: 0.1}", b'{"v": 0.1}', H, id="decimal-equals"),
        pytest.param("{equals: 0.1}", b'{"v": 0.10000000000000001}', F, id="decimal-exact"),
        pytest.param("{equals: null}", b'{"v": null}', H, id="null"),
        pytest.param("{not_in: [a, b]}", b'{"v": "c"}', H, id="not-in"),
        pytest.param("{not_in: [a, b]}", b'{"v": "a"}', F, id="not-in-listed"),
        pytest.param("{not_in: [a, b]}", b"{}", F, id="not-in-absent"),
        pytest.param("{in: [1, 2.5]}", b'{"v": 2.50}', H, id="in-numbers"),
        pytest.param("{gte: -1.5, lt: 0}", b'{"v": -1.5}', H, id="negative-decimal"),
        pytest.param("{present: true}", b'{"v": null}', H, id="present-null"),
    ],
)
def test_operators(spec: str, body: bytes, expected: tuple[Outcome, Reason | None]) -> None:
    """Comparisons are by JSON type first, then by exact value."""
    assert _result(_rule(f"        v: {spec}\n"), body) == expected


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        pytest.param("a", ("a",), id="name"),
        pytest.param("a.b_c.$d", ("a", "b_c", "$d"), id="dotted"),
        pytest.param("items[0].sku", ("items", 0, "sku"), id="index"),
        pytest.param("[2][10]", (2, 10), id="top-level-index"),
        pytest.param('meta["content-type"]["a.b"]', ("meta", "content-type", "a.b"), id="quoted"),
        pytest.param("x-y", ("x-y",), id="dash-in-name"),
    ],
)
def test_paths(path: str, steps: tuple[str | int, ...]) -> None:
    """Body paths parse into keys and indexes."""
    assert parse_body_path(path) == steps


def _issues(body: str) -> list[tuple[int | None, str | None, str | None, str]]:
    text = HEADER + "  - id: r\n    effect: allow\n    when:\n      body:\n" + body
    with pytest.raises(PolicyError) as raised:
        load_policy_text(text, "p.yaml")
    return [(i.line, i.rule_id, i.field, i.message) for i in raised.value.issues]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param("        a..b: {present: true}\n", "when.body.a..b", "body path 'a..b': expected a name after '.' at 2", id="double-dot"),
        pytest.param("        a[01]: {present: true}\n", "when.body.a[01]", "body path 'a[01]': unexpected '[01]'", id="leading-zero"),
        pytest.param("        a[-1]: {present: true}\n", "when.body.a[-1]", "body path 'a[-1]': unexpected '[-1]'", id="negative-index"),
        pytest.param("        .a: {present: true}\n", "when.body..a", "body path '.a': unexpected '.a'", id="leading-dot"),
        pytest.param("        'a b': {present: true}\n", "when.body.a b", "body path 'a b': unexpected ' b'", id="space"),
        pytest.param("        a: {lte: '5'}\n", "when.body.a.lte", "expected a number, got str '5'", id="string-bound"),
        pytest.param("        a: {gt: true}\n", "when.body.a.gt", "expected a number, got bool 'True'", id="bool-bound"),
        pytest.param("        a: {lt: .inf}\n", "when.body.a.lt", "inf is not a JSON number", id="infinite-bound"),
        pytest.param("        a: {in: []}\n", "when.body.a.in", "expected a non-empty list of values", id="empty-in"),
        pytest.param("        a: {in: [[1]]}\n", "when.body.a.in[0]", "expected a string, number, boolean or null, got a list", id="nested-in"),
        pytest.param("        a: {regex: '[z-a]'}\n", "when.body.a.regex", "invalid regex '[z-a]': invalid character class range: z-a", id="bad-regex"),
        pytest.param("        a: {like: x}\n", "when.body.a.like", "unknown key 'like' (expected one of: equals, gt, gte, in, lt, lte, not_in, present, regex)", id="unknown-operator"),
    ],
)  # fmt: skip
def test_load_errors(body: str, field: str, message: str) -> None:
    """Each bad body condition is one located issue naming the rule and the field."""
    assert _issues(body) == [(9, "r", field, message)]
