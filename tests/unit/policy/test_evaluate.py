"""Rule evaluation (docs/policy/reference.md#evaluation): deny before allow, captures, anonymity,
order independence."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.core.decision import Reason
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.policy.conditions.base import RequestContext
from authz_server.policy.evaluate import Trace, Verdict, evaluate_rules
from authz_server.policy.load import load_policy_text
from authz_server.policy.model import Policy


def decide(
    policy: Policy,
    method: str,
    host: str,
    path: str,
    principal: str | None,
    trace: Trace | None = None,
) -> Verdict:
    """evaluate_rules for a request without headers or body."""
    spiffe_id = parse_spiffe_id(principal) if principal else None
    ctx = RequestContext(method, host, path, spiffe_id=spiffe_id)
    return asyncio.run(evaluate_rules(policy, ctx, trace))


HEADER = """\
version: 1
identity:
  trust_domains: [example.org]
"""

POLICY = (
    HEADER
    + """\
rules:
  - id: orders-read
    hosts: ["orders.internal"]
    methods: [GET, HEAD]
    paths: ["/v1/orders", "/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: tenant-scope
    paths: ["/v1/tenants/{tenant}/**"]
    principals: ["spiffe://example.org/agents/{tenant}/*"]
    effect: allow
  - id: no-admin-from-agents
    paths: ["/admin/**"]
    principals: ["spiffe://example.org/agents/**"]
    effect: deny
  - id: admin-for-ops
    paths: ["/admin/**"]
    principals: ["spiffe://example.org/**"]
    not_principals: ["spiffe://example.org/ns/shop/**"]
    effect: allow
  - id: wildcard-host
    hosts: ["*.api.internal"]
    paths: ["/status"]
    effect: allow
  - id: health
    paths: ["/healthz"]
    methods: [GET]
    unauthenticated: true
    effect: allow
  - id: block-debug
    paths: ["/debug/**"]
    effect: deny
"""
)

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
AGENT = "spiffe://example.org/agents/acme/bot"
OPS = "spiffe://example.org/ops/alice"


@pytest.mark.parametrize(
    ("principal", "method", "host", "path", "allowed", "reason", "rule"),
    [
        pytest.param(FRONTEND, "GET", "orders.internal", "/v1/orders/42", True, "allowed_by_rule", "orders-read", id="orders-read"),
        pytest.param(FRONTEND, "HEAD", "orders.internal", "/v1/orders", True, "allowed_by_rule", "orders-read", id="orders-list-head"),
        pytest.param(FRONTEND, "POST", "orders.internal", "/v1/orders/42", False, "no_matching_rule", None, id="wrong-method"),
        pytest.param(FRONTEND, "GET", "other.internal", "/v1/orders/42", False, "no_matching_rule", None, id="wrong-host"),
        pytest.param(FRONTEND, "GET", "orders.internal", "/v1/orders/42/items", False, "no_matching_rule", None, id="template-one-segment"),
        pytest.param(AGENT, "GET", "x", "/v1/tenants/acme/reports/1", True, "allowed_by_rule", "tenant-scope", id="own-tenant"),
        pytest.param(AGENT, "GET", "x", "/v1/tenants/acme", True, "allowed_by_rule", "tenant-scope", id="own-tenant-root"),
        pytest.param(AGENT, "GET", "x", "/v1/tenants/globex/reports/1", False, "no_matching_rule", None, id="other-tenant"),
        pytest.param(AGENT, "GET", "x", "/admin/users", False, "denied_by_rule", "no-admin-from-agents", id="deny-beats-allow"),
        pytest.param(OPS, "GET", "x", "/admin/users", True, "allowed_by_rule", "admin-for-ops", id="ops-admin"),
        pytest.param(FRONTEND, "GET", "x", "/admin/users", False, "no_matching_rule", None, id="not-principals"),
        pytest.param(OPS, "GET", "eu.api.internal", "/status", True, "allowed_by_rule", "wildcard-host", id="wildcard-host"),
        pytest.param(OPS, "GET", "api.internal", "/status", False, "no_matching_rule", None, id="wildcard-not-apex"),
        pytest.param(None, "GET", "x", "/healthz", True, "allowed_by_rule", "health", id="anonymous-health"),
        pytest.param(None, "GET", "x", "/v1/orders/1", False, "no_identity", None, id="anonymous-elsewhere"),
        pytest.param(None, "GET", "x", "/debug/vars", False, "denied_by_rule", "block-debug", id="deny-applies-to-anonymous"),
        pytest.param(OPS, "GET", "x", "/debug/vars", False, "denied_by_rule", "block-debug", id="deny-any-principal"),
    ],
)  # fmt: skip
def test_decisions(
    principal: str | None,
    method: str,
    host: str,
    path: str,
    allowed: bool,
    reason: str,
    rule: str | None,
) -> None:
    """The decision table of the example policy."""
    policy = load_policy_text(POLICY)
    verdict = decide(policy, method, host, path, principal)
    assert (verdict.allowed, verdict.reason.value) == (allowed, reason)
    assert (verdict.rule.id if verdict.rule else None) == rule


def test_default_allow() -> None:
    """`defaults.decision: allow` applies when nothing matches."""
    policy = load_policy_text(HEADER + "defaults: {decision: allow}\nrules: []\n")
    verdict = decide(policy, "GET", "x", "/a", OPS)
    assert verdict.allowed and verdict.reason is Reason.ALLOWED_BY_DEFAULT


DRY_RUN = (
    HEADER
    + """\
rules:
  - id: reads
    paths: ["/data/**"]
    effect: allow
  - id: new-deny
    paths: ["/data/secret"]
    effect: deny
    mode: dry_run
  - id: other-dry-deny
    paths: ["/elsewhere"]
    effect: deny
    mode: dry_run
  - id: broad-dry-allow
    paths: ["/**"]
    effect: allow
    mode: dry_run
"""
)


def _summary(verdict: Verdict) -> tuple[bool, str, str | None, bool, str | None]:
    return (
        verdict.allowed,
        verdict.reason.value,
        verdict.rule.id if verdict.rule else None,
        verdict.dry_run,
        verdict.enforced_rule.id if verdict.enforced_rule else None,
    )


@pytest.mark.parametrize(
    ("principal", "path", "expected"),
    [
        pytest.param(OPS, "/data/x", (True, "allowed_by_rule", "reads", False, None), id="enforced-grant"),
        pytest.param(OPS, "/data/secret", (False, "denied_by_rule", "new-deny", True, "reads"), id="dry-deny-recorded-enforced-as-allow"),
        pytest.param(OPS, "/elsewhere", (False, "no_matching_rule", None, False, None), id="dry-deny-never-opens-a-default-deny"),
        pytest.param(OPS, "/anything", (False, "no_matching_rule", None, False, None), id="broad-dry-allow-grants-nothing"),
        pytest.param(None, "/data/x", (False, "no_identity", None, False, None), id="anonymous"),
    ],
)  # fmt: skip
def test_dry_run_rules(
    principal: str | None, path: str, expected: tuple[bool, str, str | None, bool, str | None]
) -> None:
    """Dry-run rules never grant and never loosen a deny; a dry-run deny over an enforced
    allow is recorded, flagged dry_run, naming the rule that grants."""
    policy = load_policy_text(DRY_RUN)
    assert _summary(decide(policy, "GET", "x", path, principal)) == expected


OBSERVE_ONLY = (
    HEADER
    + """\
defaults: {mode: dry_run}
rules:
  - id: reads
    paths: ["/data/**"]
    effect: allow
  - id: secret
    paths: ["/data/secret"]
    effect: deny
  - id: debug-blocked
    paths: ["/debug/**"]
    effect: deny
    mode: enforce
  - id: health
    paths: ["/healthz"]
    unauthenticated: true
    effect: allow
"""
)


@pytest.mark.parametrize(
    ("principal", "path", "expected"),
    [
        pytest.param(OPS, "/data/x", (True, "allowed_by_default", None, False, None), id="would-allow"),
        pytest.param(OPS, "/data/secret", (False, "denied_by_rule", "secret", True, None), id="would-deny-by-rule"),
        pytest.param(OPS, "/elsewhere", (False, "no_matching_rule", None, True, None), id="would-deny-by-default"),
        pytest.param(OPS, "/debug/x", (False, "denied_by_rule", "debug-blocked", False, None), id="enforced-rule-enforced"),
        pytest.param(None, "/elsewhere", (False, "no_identity", None, False, None), id="anonymous-never-admitted"),
        pytest.param(None, "/healthz", (False, "no_identity", None, False, None), id="anonymous-dry-run-grant-grants-nothing"),
    ],
)  # fmt: skip
def test_observe_only_policy(
    principal: str | None, path: str, expected: tuple[bool, str, str | None, bool, str | None]
) -> None:
    """`defaults.mode: dry_run` enforces allow where no enforced rule decides and records
    the would-be deny; `mode: enforce` rules and `no_identity` stay enforced."""
    policy = load_policy_text(OBSERVE_ONLY)
    assert _summary(decide(policy, "GET", "x", path, principal)) == expected


def test_trace_lists_considered_rules() -> None:
    """The explain trace names each candidate, its mode and whether its principal matched,
    then the enforced and the would-be outcome."""
    policy = load_policy_text(POLICY)
    trace = Trace()
    decide(policy, "GET", "x", "/admin/users", AGENT, trace)
    *rules, decided = trace.steps
    outcomes = {step["rule"]: (step["outcome"], step["mode"]) for step in rules}
    assert outcomes == {
        "admin-for-ops": ("matched", "enforce"),
        "no-admin-from-agents": ("matched", "enforce"),
    }
    deny = {"decision": "deny", "reason": "denied_by_rule", "rule": "no-admin-from-agents"}
    assert decided == {"rule": None, "outcome": "decided", "enforced": deny, "would_be": deny}


def test_trace_shows_both_outcomes_in_dry_run() -> None:
    """Under a dry-run deny the trace shows the enforced allow and the would-be deny."""
    trace = Trace()
    decide(load_policy_text(DRY_RUN), "GET", "x", "/data/secret", OPS, trace)
    *rules, decided = trace.steps
    assert {step["rule"]: step["mode"] for step in rules} == {
        "reads": "enforce",
        "new-deny": "dry_run",
        "broad-dry-allow": "dry_run",
    }
    assert (decided["enforced"], decided["would_be"]) == (
        {"decision": "allow", "reason": "allowed_by_rule", "rule": "reads"},
        {"decision": "deny", "reason": "denied_by_rule", "rule": "new-deny"},
    )


def test_capture_agreement() -> None:
    """A capture named in both path and principal must bind the same value."""
    policy = load_policy_text(POLICY)
    assert decide(policy, "PUT", "h", "/v1/tenants/acme/x", AGENT).allowed
    assert not decide(policy, "PUT", "h", "/v1/tenants/acmeX/x", AGENT).allowed


def _rules_yaml(rules: list[str]) -> str:
    return HEADER + "rules:\n" + "".join(rules)


RULE_BLOCKS = POLICY.split("rules:\n", 1)[1].split("  - id: ")[1:]
REQUESTS = [
    (FRONTEND, "GET", "orders.internal", "/v1/orders/42"),
    (AGENT, "GET", "x", "/admin/users"),
    (OPS, "GET", "x", "/admin/users"),
    (AGENT, "GET", "x", "/v1/tenants/acme/reports"),
    (None, "GET", "x", "/debug/x"),
    (OPS, "DELETE", "eu.api.internal", "/status"),
]


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False))
def test_rule_order_never_changes_a_decision(rng: random.Random) -> None:
    """Shuffling the rules of a policy changes no decision."""
    blocks = ["  - id: " + b for b in RULE_BLOCKS]
    reference = load_policy_text(_rules_yaml(blocks))
    shuffled_blocks = blocks[:]
    rng.shuffle(shuffled_blocks)
    shuffled = load_policy_text(_rules_yaml(shuffled_blocks))
    for principal, method, host, path in REQUESTS:
        a = decide(reference, method, host, path, principal)
        b = decide(shuffled, method, host, path, principal)
        assert (a.allowed, a.reason, a.rule and a.rule.id) == (
            b.allowed,
            b.reason,
            b.rule and b.rule.id,
        )
