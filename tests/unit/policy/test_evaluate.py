"""Rule evaluation (SPEC §5.4): deny before allow, captures, anonymity, order independence."""

# One case per line keeps the parametrized tables readable and diffable.
# ruff: noqa: E501

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.decision import Reason
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
"""
)


def test_dry_run_deny_rule_is_recorded_not_enforced() -> None:
    """A dry-run deny over an allowed request reports the would-be deny, flagged dry_run."""
    policy = load_policy_text(DRY_RUN)
    verdict = decide(policy, "GET", "x", "/data/secret", OPS)
    assert not verdict.allowed and verdict.dry_run
    assert verdict.rule is not None and verdict.rule.id == "new-deny"


def test_dry_run_deny_never_opens_a_default_deny() -> None:
    """When nothing allows the request, a dry-run deny rule leaves the enforced default deny."""
    policy = load_policy_text(DRY_RUN)
    verdict = decide(policy, "GET", "x", "/elsewhere", OPS)
    assert not verdict.allowed and not verdict.dry_run
    assert verdict.reason is Reason.NO_MATCHING_RULE


def test_trace_lists_considered_rules() -> None:
    """The explain trace names each candidate and whether its principal matched."""
    policy = load_policy_text(POLICY)
    trace = Trace()
    decide(policy, "GET", "x", "/admin/users", AGENT, trace)
    outcomes = {step["rule"]: step["outcome"] for step in trace.steps}
    assert outcomes == {"admin-for-ops": "matched", "no-admin-from-agents": "matched"}


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
