"""The identity hook: a subject vouched for by an authenticated AuthZEN caller, through the
real Pipeline (trust domains, identity.deny, revocations, authzen.trusted_peps)."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import pytest

from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.decision import Decision, Reason
from authz_server.core.request import LOCAL_PEP, RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore

POLICY = """\
version: 1
identity:
  trust_domains: [example.org, partner.org]
  sources: [jwt_svid]
  jwt_svid: {audiences: [orders]}
  deny: ["spiffe://example.org/compromised/**"]
authzen:
  trusted_peps: ["spiffe://example.org/gateways/*"]
rules:
  - id: orders-read
    methods: [GET]
    paths: ["/v1/orders/**"]
    principals: ["spiffe://example.org/ns/shop/**", "spiffe://partner.org/**", "spiffe://example.org/gateways/*"]
    effect: allow
"""

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
GATEWAY = "spiffe://example.org/gateways/edge"
PARTNER = "spiffe://partner.org/analytics"


def _view(subject: str, vouched_by: str) -> RequestView:
    return RequestView("GET", "h", "/v1/orders/1", principal=subject, vouched_by=vouched_by)


async def _decide(
    view: RequestView, store: MemoryStore | None = None, policy: str = POLICY
) -> Decision:
    snapshot = Snapshot(load_policy_text(policy), TrustBundles.empty())
    return await Pipeline(store=store or MemoryStore()).evaluate(view, snapshot)


@pytest.mark.parametrize(
    ("subject", "vouched_by", "reason"),
    [
        pytest.param(FRONTEND, FRONTEND, Reason.ALLOWED_BY_RULE, id="caller-asks-about-itself"),
        pytest.param(FRONTEND, GATEWAY, Reason.ALLOWED_BY_RULE, id="trusted-pep-asks-about-another"),
        pytest.param(PARTNER, GATEWAY, Reason.ALLOWED_BY_RULE, id="trusted-pep-other-trust-domain"),
        pytest.param(GATEWAY, PARTNER, Reason.SUBJECT_NOT_CALLER, id="untrusted-caller-asks-about-another"),
        pytest.param(PARTNER, FRONTEND, Reason.SUBJECT_NOT_CALLER, id="workload-asks-about-another"),
        pytest.param(FRONTEND, "spiffe://example.org/gateways/edge/x", Reason.SUBJECT_NOT_CALLER, id="pattern-is-one-segment"),
        pytest.param(FRONTEND, LOCAL_PEP, Reason.ALLOWED_BY_RULE, id="insecure-local-caller"),
        pytest.param("spiffe://example.org/compromised/job", GATEWAY, Reason.REVOKED, id="subject-identity-deny"),
        pytest.param(FRONTEND, "spiffe://example.org/compromised/job", Reason.REVOKED, id="caller-identity-deny"),
        pytest.param("spiffe://evil.org/x", GATEWAY, Reason.UNTRUSTED_TRUST_DOMAIN, id="subject-untrusted-trust-domain"),
        pytest.param("spiffe://evil.org/x", "spiffe://evil.org/x", Reason.UNTRUSTED_TRUST_DOMAIN, id="caller-untrusted-trust-domain"),
        pytest.param("spiffe://example.org", GATEWAY, Reason.INVALID_SPIFFE_ID, id="subject-bare-trust-domain"),
        pytest.param("spiffe://Example.org/x", GATEWAY, Reason.INVALID_SPIFFE_ID, id="subject-not-canonical"),
        pytest.param("alice@example.com", GATEWAY, Reason.INVALID_SPIFFE_ID, id="subject-not-spiffe"),
        pytest.param("", GATEWAY, Reason.INVALID_SPIFFE_ID, id="subject-empty"),
        pytest.param("spiffe://example.org/ns/other/sa/x", GATEWAY, Reason.NO_MATCHING_RULE, id="rules-still-decide"),
    ],
)  # fmt: skip
async def test_vouched_subjects(subject: str, vouched_by: str, reason: Reason) -> None:
    decision = await _decide(_view(subject, vouched_by))
    assert decision.reason is reason
    assert decision.allowed is (reason is Reason.ALLOWED_BY_RULE)
    if decision.allowed:
        assert decision.principal == subject and decision.identity_source == "authzen"


async def test_sources_do_not_apply_to_authzen_views() -> None:
    """The policy lists only jwt_svid; a vouched subject needs no bearer token."""
    decision = await _decide(_view(FRONTEND, GATEWAY))
    assert decision.allowed and decision.principal == FRONTEND


async def test_without_the_section_nobody_vouches_for_others() -> None:
    policy = POLICY.replace('authzen:\n  trusted_peps: ["spiffe://example.org/gateways/*"]\n', "")
    assert (
        await _decide(_view(FRONTEND, GATEWAY), policy=policy)
    ).reason is Reason.SUBJECT_NOT_CALLER
    assert (await _decide(_view(GATEWAY, GATEWAY), policy=policy)).allowed


async def test_a_revoked_subject_is_denied() -> None:
    store = MemoryStore()
    await store.revoke(FRONTEND, 600, "key leaked", "test")
    decision = await _decide(_view(FRONTEND, GATEWAY), store)
    assert (decision.allowed, decision.reason, decision.principal) == (
        False,
        Reason.REVOKED,
        FRONTEND,
    )


async def test_a_revoked_caller_vouches_for_nobody() -> None:
    store = MemoryStore()
    await store.revoke("spiffe://example.org/gateways/*", 600, "compromised", "test")
    decision = await _decide(_view(FRONTEND, GATEWAY), store)
    assert (decision.allowed, decision.reason, decision.principal) == (
        False,
        Reason.REVOKED,
        GATEWAY,
    )
    # ...and is denied when it asks about itself, too.
    assert (await _decide(_view(GATEWAY, GATEWAY), store)).reason is Reason.REVOKED


async def test_check_views_never_take_this_path() -> None:
    """Without `vouched_by`, a bare principal is judged by the policy's sources (jwt_svid
    here: no bearer token, so no identity), never believed."""
    decision = await _decide(RequestView("GET", "h", "/v1/orders/1", principal=FRONTEND))
    assert (decision.allowed, decision.reason) == (False, Reason.NO_IDENTITY)
