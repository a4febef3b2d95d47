"""`when.headers` and `when.query`: operators, repeated values, RE2 and located load errors."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import asyncio

import pytest

from authz_server.core.decision import Reason
from authz_server.core.errors import PolicyError
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.policy.conditions.base import Outcome, RequestContext
from authz_server.policy.conditions.matchers import compile_regex
from authz_server.policy.conditions.query import parse_query
from authz_server.policy.evaluate import evaluate_rules
from authz_server.policy.load import load_policy_text
from authz_server.policy.model import Rule

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org]\nrules:\n"


def _rule(when: str) -> Rule:
    text = HEADER + "  - id: r\n    effect: allow\n    when:\n" + when
    return load_policy_text(text).rules[0]


def _outcome(rule: Rule, headers: dict[str, str] | None = None, query: str = "") -> Outcome:
    ctx = RequestContext("GET", "h", "/", query=query, headers=headers or {})
    return rule.when.check(ctx, {}).outcome


H, F, U = Outcome.HOLDS, Outcome.FAILS, Outcome.UNKNOWN

HEADERS = """\
      headers:
        X-Agent-Task: {present: true}
        x-env: {in: [staging, dev]}
        x-ticket: {regex: "CHG-[0-9]{4,8}"}
        x-team: {prefix: "team-"}
        x-debug: {present: false}
"""
GOOD = {"x-agent-task": "t1", "x-env": "dev", "x-ticket": "CHG-1234", "x-team": "team-a"}


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        pytest.param({}, H, id="all-hold"),
        pytest.param({"x-agent-task": None}, F, id="required-absent"),
        pytest.param({"x-agent-task": ""}, H, id="present-but-empty"),
        pytest.param({"x-env": "prod"}, F, id="not-in"),
        pytest.param({"x-env": "dev,prod"}, U, id="repeated-header-never-in"),
        pytest.param({"x-env": "prod,qa"}, F, id="repeated-header-no-copy-in"),
        pytest.param({"x-ticket": "CHG-12"}, F, id="regex-too-short"),
        pytest.param({"x-ticket": "xCHG-1234"}, F, id="regex-anchored-start"),
        pytest.param({"x-ticket": "CHG-1234\n"}, F, id="regex-anchored-end"),
        pytest.param({"x-ticket": "CHG-1234,CHG-5678"}, U, id="regex-repeated-header"),
        pytest.param({"x-team": "team-"}, H, id="prefix-alone"),
        pytest.param({"x-team": "team-a,admins"}, U, id="prefix-repeated-header"),
        pytest.param({"x-team": "Team-a"}, F, id="prefix-case-sensitive"),
        pytest.param({"x-debug": "1"}, F, id="must-be-absent"),
    ],
)
def test_headers(change: dict[str, str | None], outcome: Outcome) -> None:
    """Each operator on its header; Envoy's comma-joined repeats never satisfy one value."""
    headers = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert _outcome(_rule(HEADERS), headers) is outcome


DENY_ADMIN = (
    HEADER
    + """\
  - id: users
    paths: ["/users/**"]
    effect: allow
  - id: no-admin-role
    paths: ["/users/**"]
    effect: deny
    when: {headers: {x-role: {equals: admin}}}
"""
)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        pytest.param(["user"], "allowed_by_rule", id="one-value"),
        pytest.param(["admin"], "denied_by_rule", id="admin"),
        pytest.param(["user", "admin"], "denied_by_rule", id="repeated"),
        pytest.param(["user, admin"], "denied_by_rule", id="comma-in-one-header"),
        pytest.param(["user", "guest"], "allowed_by_rule", id="repeated-neither-admin"),
    ],
)
def test_a_repeated_header_never_dodges_a_deny_rule(values: list[str], reason: str) -> None:
    """`x-role: user` + `x-role: admin` (joined by Envoy) makes the deny rule apply."""
    policy = load_policy_text(DENY_ADMIN)
    spiffe_id = parse_spiffe_id("spiffe://example.org/a")
    ctx = RequestContext(
        "GET", "h", "/users/1", headers={"x-role": ",".join(values)}, spiffe_id=spiffe_id
    )
    assert asyncio.run(evaluate_rules(policy, ctx)).reason.value == reason


def test_header_failure_names_the_header_not_its_value() -> None:
    """The trace detail says which header failed which operator, never the sent value."""
    ctx = RequestContext("GET", "h", "/", headers={**GOOD, "x-env": "secret-value"})
    result = _rule(HEADERS).when.check(ctx, {})
    assert (result.reason, result.detail) == (Reason.CONDITION_FAILED, "header 'x-env' fails in")


QUERY = """\
      query:
        dry: {equals: "true"}
        Limit: {regex: "[0-9]{1,3}"}
"""


@pytest.mark.parametrize(
    ("query", "outcome"),
    [
        pytest.param("dry=true&Limit=10", H, id="hold"),
        pytest.param("Limit=10&dry=true&x=%20", H, id="order-and-extra"),
        pytest.param("dry=%74rue&Limit=10", H, id="percent-decoded"),
        pytest.param("dry=true&limit=10", F, id="names-case-sensitive"),
        pytest.param("dry=true&dry=false&Limit=10", U, id="repeated-parameter"),
        pytest.param("dry=true&Limit=1000", F, id="regex-fails"),
        pytest.param("dry=true&Limit=10&Limit=20", U, id="repeated-regex"),
        pytest.param("dry=false&dry=no&Limit=10", F, id="repeated-no-copy-passes"),
        pytest.param("dry=true&Limit=1%zz", U, id="bad-escape"),
        pytest.param("dry=true;Limit=10", U, id="semicolon"),
        pytest.param("dry=true&Limit=%ff", U, id="not-utf8"),
        pytest.param("", F, id="no-query"),
    ],
)
def test_query(query: str, outcome: Outcome) -> None:
    """Query parameters are decoded like backends do; ambiguous queries cannot be judged."""
    assert _outcome(_rule(QUERY), query=query) is outcome


@pytest.mark.parametrize(
    ("query", "params"),
    [
        pytest.param("a=1&b=x+y&c=%C3%A9", {"a": "1", "b": "x y", "c": "é"}, id="decoding"),
        pytest.param("a&b=", {"a": "", "b": ""}, id="no-values"),
        pytest.param("a=1&&a=2", {"a": "1,2"}, id="repeat-joined"),
        pytest.param("%61=1", {"a": "1"}, id="encoded-name"),
        pytest.param("a=%2", None, id="short-escape"),
    ],
)
def test_parse_query(query: str, params: dict[str, str] | None) -> None:
    """The query parser's decoding rules."""
    assert parse_query(query) == params


def test_regex_is_linear_time() -> None:
    """A pattern that makes a backtracking engine take exponential time is instant in RE2."""
    regex = compile_regex("(a+)+b")
    assert not regex.fullmatch("a" * 100_000 + "c")
    assert regex.fullmatch("aaab")


def _issues(when: str) -> list[tuple[int | None, str | None, str | None, str]]:
    with pytest.raises(PolicyError) as raised:
        load_policy_text(HEADER + "  - id: r\n    effect: allow\n    when:\n" + when, "p.yaml")
    return [(i.line, i.rule_id, i.field, i.message) for i in raised.value.issues]


@pytest.mark.parametrize(
    ("when", "field", "message"),
    [
        pytest.param("      headers: {x: {regex: '(a'}}\n", "when.headers.x.regex", "invalid regex '(a': missing ): (a", id="regex-syntax"),
        pytest.param("      headers: {x: {regex: '(a)\\1'}}\n", "when.headers.x.regex", "invalid regex '(a)\\\\1': invalid escape sequence: \\1", id="backreference"),
        pytest.param("      headers: {x: {regex: '(?=a)'}}\n", "when.headers.x.regex", "invalid regex '(?=a)': invalid perl operator: (?=", id="lookahead"),
        pytest.param("      headers: {x: {contains: a}}\n", "when.headers.x.contains", "unknown key 'contains' (expected one of: equals, in, prefix, present, regex)", id="unknown-operator"),
        pytest.param("      headers: {x: {equals: 5}}\n", "when.headers.x.equals", "expected a string (quote numbers and booleans), got int '5'", id="number-operand"),
        pytest.param("      headers: {x: {in: []}}\n", "when.headers.x.in", "must not be empty", id="empty-in"),
        pytest.param("      headers: {x: {}}\n", "when.headers.x", "needs an operator: equals, in, prefix, present, regex", id="no-operator"),
        pytest.param("      headers: {x: {present: false, equals: a}}\n", "when.headers.x", "'present: false' cannot be combined with other operators", id="absent-and-equals"),
        pytest.param("      headers: {'bad name': {present: true}}\n", "when.headers.bad name", "invalid header name 'bad name'", id="bad-header-name"),
        pytest.param("      headers: {X-A: {present: true}, x-a: {present: true}}\n", "when.headers.x-a", "'x-a' is already listed as 'X-A'", id="same-header-twice"),
        pytest.param("      headers: {}\n", "when.headers", "must not be empty (omit it for no headers condition)", id="empty-headers"),
        pytest.param("      query: [a]\n", "when.query", "expected a mapping of names to operators, got a list", id="query-list"),
        pytest.param("      query: {q: {present: 'yes'}}\n", "when.query.q.present", "expected true or false, got str 'yes'", id="present-not-bool"),
    ],
)  # fmt: skip
def test_load_errors(when: str, field: str, message: str) -> None:
    """Each bad header or query condition is one located issue naming the rule and field."""
    assert _issues(when) == [(8, "r", field, message)]
