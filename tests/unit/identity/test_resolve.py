"""identity.sources in order: absent moves on, present-but-failing denies
(docs/concepts/identity.md#sources)."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from authz_server.audit.log import audit_record
from authz_server.check.offline import offline_policy
from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.clock import FixedClock
from authz_server.core.decision import Decision, Reason
from authz_server.core.request import RequestView
from authz_server.identity.resolve import IdentityFailure, IdentityResolver
from authz_server.identity.x509 import CertificateVerifier
from authz_server.identity.xfcc import XFCC_SPOOFING
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.telemetry.metrics import Metrics
from tests.unit.identity.sources_support import (
    ADMIN,
    FRONTEND,
    GATEWAY,
    NOW,
    TRUST_DOMAIN_ID,
    World,
    claims,
    identity_config,
    jwt,
    svid,
    url_pem,
    xfcc,
)

XFCC_PEER = ("xfcc", "peer")


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@dataclass(frozen=True)
class Call:
    """Who connects (peer principal and certificate) and which headers it sends."""

    peer: str = ""
    peer_cert: bool = True
    headers: tuple[tuple[str, str], ...] = ()

    def view(self, world: World) -> RequestView:
        certificate = url_pem(svid(world.ours, self.peer)) if self.peer and self.peer_cert else ""
        return RequestView(
            method="GET",
            host="orders.internal",
            path="/v1/orders",
            headers=dict(self.headers),
            principal=self.peer,
            certificate=certificate,
        )


def _xfcc(header: str) -> tuple[tuple[str, str], ...]:
    return (("x-forwarded-client-cert", header),)


def _bearer(make: Callable[[World], str]) -> Callable[[World], tuple[tuple[str, str], ...]]:
    return lambda w: (("authorization", f"Bearer {make(w)}"),)


RESOLVED: list[Any] = [
    pytest.param(("peer",), lambda w: Call(FRONTEND), ("peer", FRONTEND), None, id="default-peer"),
    pytest.param(("peer",), lambda w: Call(), None, None, id="default-anonymous"),
    pytest.param(("peer",), lambda w: Call(FRONTEND, headers=_xfcc(xfcc(ADMIN))), ("peer", FRONTEND), None, id="xfcc-not-listed-not-read"),
    pytest.param(XFCC_PEER, lambda w: Call(GATEWAY, headers=_xfcc(xfcc(FRONTEND))), ("xfcc", FRONTEND), None, id="trusted-proxy"),
    pytest.param(XFCC_PEER, lambda w: Call(GATEWAY, headers=_xfcc(xfcc(FRONTEND, cert=svid(w.ours, FRONTEND)))), ("xfcc", FRONTEND), None, id="trusted-proxy-with-cert"),
    pytest.param(("xfcc",), lambda w: Call(GATEWAY, headers=_xfcc(xfcc(FRONTEND))), ("xfcc", FRONTEND), None, id="xfcc-only-peer-checked-anyway"),
    pytest.param(XFCC_PEER, lambda w: Call(GATEWAY), ("peer", GATEWAY), None, id="trusted-proxy-without-header"),
    pytest.param(XFCC_PEER, lambda w: Call(FRONTEND, headers=_xfcc(xfcc(ADMIN))), ("peer", FRONTEND), XFCC_SPOOFING, id="untrusted-peer-forges"),
    pytest.param(("xfcc",), lambda w: Call(FRONTEND, headers=_xfcc(xfcc(ADMIN))), None, XFCC_SPOOFING, id="untrusted-peer-forges-xfcc-only"),
    pytest.param(XFCC_PEER, lambda w: Call(headers=_xfcc(xfcc(ADMIN))), None, XFCC_SPOOFING, id="no-peer-forges"),
    pytest.param(XFCC_PEER, lambda w: Call(FRONTEND, headers=_xfcc("garbage")), ("peer", FRONTEND), XFCC_SPOOFING, id="untrusted-garbage-counts"),
    pytest.param(XFCC_PEER, lambda w: Call(FRONTEND, headers=_xfcc(f"By={GATEWAY};Hash=00;URI={FRONTEND}")), ("peer", FRONTEND), None, id="local-sanitize-set-echo"),
    pytest.param(XFCC_PEER, lambda w: Call(FRONTEND, headers=_xfcc(f"URI={ADMIN},URI={FRONTEND}")), ("peer", FRONTEND), XFCC_SPOOFING, id="echo-after-forgery-counts"),
    pytest.param(("jwt_svid", "peer"), lambda w: Call(GATEWAY, headers=_bearer(lambda w: jwt(w.keys.ours["ours-es256"]))(w)), ("jwt_svid", FRONTEND), None, id="jwt-first"),
    pytest.param(("jwt_svid", "peer"), lambda w: Call(GATEWAY, headers=(("authorization", "Basic dTpw"),)), ("peer", GATEWAY), None, id="other-scheme-is-absent"),
    pytest.param(("peer", "jwt_svid"), lambda w: Call(GATEWAY, headers=(("authorization", "Bearer broken"),)), ("peer", GATEWAY), None, id="peer-first-jwt-never-read"),
    pytest.param(("peer", "jwt_svid"), lambda w: Call(headers=_bearer(lambda w: jwt(w.keys.ours["ours-es256"]))(w)), ("jwt_svid", FRONTEND), None, id="anonymous-peer-then-jwt"),
    pytest.param(("xfcc", "jwt_svid"), lambda w: Call(FRONTEND, headers=_xfcc(xfcc(ADMIN)) + _bearer(lambda w: jwt(w.keys.ours["ours-es256"]))(w)), ("jwt_svid", FRONTEND), XFCC_SPOOFING, id="ignored-xfcc-then-jwt"),
]  # fmt: skip


@pytest.mark.parametrize(("sources", "make", "expected", "note"), RESOLVED)
def test_resolved(
    world: World,
    sources: tuple[str, ...],
    make: Callable[[World], Call],
    expected: tuple[str, str] | None,
    note: str | None,
) -> None:
    """The first present source decides; an ignored forged XFCC header leaves a note."""
    resolver = IdentityResolver(CertificateVerifier())
    resolution = resolver.resolve(
        make(world).view(world), identity_config(sources=sources), world.bundles, NOW
    )
    got = resolution.identity
    assert (None if got is None else (got.source, str(got.spiffe_id))) == expected
    assert resolution.note == note


FAILED: list[Any] = [
    pytest.param(XFCC_PEER, {}, lambda w: Call(GATEWAY, peer_cert=False, headers=_xfcc(xfcc(FRONTEND))), Reason.CERTIFICATE_REQUIRED, "peer", None, id="proxy-without-its-certificate"),
    pytest.param(("xfcc",), {}, lambda w: Call("spiffe://evil.org/gw", headers=_xfcc(xfcc(FRONTEND))), Reason.UNTRUSTED_TRUST_DOMAIN, "peer", None, id="peer-fails-xfcc-only"),
    pytest.param(XFCC_PEER, {"deny": (GATEWAY,)}, lambda w: Call(GATEWAY, headers=_xfcc(xfcc(FRONTEND))), Reason.REVOKED, "peer", None, id="revoked-proxy"),
    pytest.param(XFCC_PEER, {}, lambda w: Call(GATEWAY, headers=_xfcc("URI=a;;")), Reason.INVALID_SPIFFE_ID, "xfcc", None, id="malformed-no-fall-through"),
    pytest.param(XFCC_PEER, {}, lambda w: Call(GATEWAY, headers=_xfcc(xfcc(FRONTEND) + f";URI={ADMIN}")), Reason.INVALID_SPIFFE_ID, "xfcc", None, id="two-uris"),
    pytest.param(XFCC_PEER, {}, lambda w: Call(GATEWAY, headers=_xfcc(xfcc(FRONTEND, cert=svid(w.ours, FRONTEND), hash_of=svid(w.ours, FRONTEND)))), Reason.CERTIFICATE_MISMATCH, "xfcc", None, id="hash-mismatch"),
    pytest.param(XFCC_PEER, {"deny": (FRONTEND,)}, lambda w: Call(GATEWAY, headers=_xfcc(xfcc(FRONTEND))), Reason.REVOKED, "xfcc", None, id="forwarded-identity-denied"),
    pytest.param(("jwt_svid", "peer"), {}, lambda w: Call(GATEWAY, headers=_bearer(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(aud=["x"])))(w)), Reason.CERTIFICATE_INVALID, "jwt_svid", None, id="bad-jwt-no-fall-through"),
    pytest.param(("jwt_svid",), {}, lambda w: Call(headers=(("authorization", "Bearer a b"),)), Reason.CERTIFICATE_INVALID, "jwt_svid", None, id="malformed-bearer"),
    pytest.param(("jwt_svid",), {"deny": (FRONTEND,)}, lambda w: Call(headers=_bearer(lambda w: jwt(w.keys.ours["ours-es256"]))(w)), Reason.REVOKED, "jwt_svid", None, id="jwt-identity-denied"),
    pytest.param(("xfcc", "jwt_svid"), {}, lambda w: Call(FRONTEND, headers=(*_xfcc(xfcc(ADMIN)), ("authorization", "Bearer x.y.z"))), Reason.CERTIFICATE_INVALID, "jwt_svid", XFCC_SPOOFING, id="failure-keeps-the-note"),
    pytest.param(("peer",), {"require_certificate": True}, lambda w: Call(FRONTEND, peer_cert=False), Reason.CERTIFICATE_REQUIRED, "peer", None, id="peer-unchanged"),
    pytest.param(("peer",), {}, lambda w: Call(TRUST_DOMAIN_ID), Reason.INVALID_SPIFFE_ID, "peer", None, id="peer-bare-trust-domain-with-cert"),
    pytest.param(("peer",), {}, lambda w: Call(TRUST_DOMAIN_ID, peer_cert=False), Reason.INVALID_SPIFFE_ID, "peer", None, id="peer-bare-trust-domain-no-cert"),
    pytest.param(("peer",), {"require_certificate": True}, lambda w: Call(TRUST_DOMAIN_ID, peer_cert=False), Reason.INVALID_SPIFFE_ID, "peer", None, id="peer-bare-trust-domain-cert-required"),
    pytest.param(XFCC_PEER, {"proxies": (TRUST_DOMAIN_ID,)}, lambda w: Call(TRUST_DOMAIN_ID, headers=_xfcc(xfcc(FRONTEND))), Reason.INVALID_SPIFFE_ID, "peer", None, id="bare-trust-domain-proxy"),
    pytest.param(XFCC_PEER, {}, lambda w: Call(GATEWAY, headers=_xfcc(xfcc(TRUST_DOMAIN_ID))), Reason.INVALID_SPIFFE_ID, "xfcc", None, id="xfcc-bare-trust-domain"),
    pytest.param(("jwt_svid", "peer"), {}, lambda w: Call(GATEWAY, headers=_bearer(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(sub=TRUST_DOMAIN_ID)))(w)), Reason.INVALID_SPIFFE_ID, "jwt_svid", None, id="jwt-bare-trust-domain"),
]  # fmt: skip


@pytest.mark.parametrize(("sources", "config", "make", "reason", "source", "note"), FAILED)
def test_failed(
    world: World,
    sources: tuple[str, ...],
    config: dict[str, Any],
    make: Callable[[World], Call],
    reason: Reason,
    source: str,
    note: str | None,
) -> None:
    """A present source that fails denies with its reason; the next source is never tried."""
    resolver = IdentityResolver(CertificateVerifier())
    view = make(world).view(world)
    with pytest.raises(IdentityFailure) as raised:
        resolver.resolve(view, identity_config(sources=sources, **config), world.bundles, NOW)
    failure = raised.value
    assert (failure.reason, failure.source, failure.note) == (reason, source, note)
    assert failure.principal == (view.principal or None if source == "peer" else None)


POLICY = """\
version: 1
identity:
  trust_domains: [example.org, partner.org]
  sources: [xfcc, peer]
  xfcc: {trusted_proxies: ["spiffe://example.org/gateway/*"]}
rules:
  - id: orders
    paths: ["/v1/orders"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
"""


def _decide(world: World, call: Call) -> Decision:
    snapshot = Snapshot(load_policy_text(POLICY), world.bundles)
    return asyncio.run(
        Pipeline(MemoryStore(), clock=FixedClock(NOW)).evaluate(call.view(world), snapshot)
    )


def test_pipeline_records_the_forwarded_identity(world: World) -> None:
    """Through a trusted proxy the decision names the forwarded caller and source xfcc."""
    decision = _decide(world, Call(GATEWAY, headers=_xfcc(xfcc(FRONTEND))))
    assert (decision.allowed, decision.principal, decision.identity_source) == (
        True,
        FRONTEND,
        "xfcc",
    )
    assert decision.identity_note is None


def test_forged_xfcc_is_noted_in_audit_and_metrics(world: World) -> None:
    """A forged header grants nothing, and shows in the audit record and the metrics."""
    decision = _decide(
        world, Call("spiffe://example.org/agents/bot", headers=_xfcc(xfcc(FRONTEND)))
    )
    assert (decision.allowed, decision.reason, decision.principal, decision.identity_source) == (
        False,
        Reason.NO_MATCHING_RULE,
        "spiffe://example.org/agents/bot",
        "peer",
    )
    record = audit_record(decision, None, policy_version="v", latency_us=1)
    assert record["identity_note"] == XFCC_SPOOFING
    metrics = Metrics()
    metrics.observe(decision, 0.001)
    value = metrics.registry.get_sample_value(
        "authz_identity_failures_total", {"reason": XFCC_SPOOFING}
    )
    assert value == 1.0


def test_note_reaches_anonymous_and_failed_decisions(world: World) -> None:
    """No identity after an ignored header, or a failure after it, still carries the note."""
    anonymous = _decide(world, Call(headers=_xfcc(xfcc(FRONTEND))))
    assert (anonymous.reason, anonymous.identity_note) == (Reason.NO_IDENTITY, XFCC_SPOOFING)
    failed = _decide(world, Call(GATEWAY, headers=_xfcc("URI=a;;")))
    assert (failed.reason, failed.identity_source, failed.principal) == (
        Reason.INVALID_SPIFFE_ID,
        "xfcc",
        None,
    )


def test_ordinary_records_have_no_note(world: World) -> None:
    """Without anything to note the audit record keeps its usual fields."""
    decision = _decide(world, Call(FRONTEND))
    assert "identity_note" not in audit_record(decision, None, policy_version="v", latency_us=1)


def test_offline_tools_take_the_principal_as_verified(world: World) -> None:
    """`check`/`test` describe the caller by principal, whatever sources the policy lists."""
    policy = load_policy_text(POLICY.replace("sources: [xfcc, peer]", "sources: [xfcc]"))
    view = RequestView(method="GET", host="h", path="/v1/orders", principal=FRONTEND)
    pipeline = Pipeline(MemoryStore(), clock=FixedClock(NOW))
    online = asyncio.run(pipeline.evaluate(view, Snapshot(policy, world.bundles)))
    assert online.reason is Reason.NO_IDENTITY
    offline = asyncio.run(pipeline.evaluate(view, Snapshot(offline_policy(policy), world.bundles)))
    assert (offline.allowed, offline.principal) == (True, FRONTEND)


def test_resolution_names_the_vouching_proxy(world: World) -> None:
    """An xfcc identity comes with the proxy that vouched for it, for revocation checks."""
    view = Call(GATEWAY, headers=_xfcc(xfcc(FRONTEND))).view(world)
    resolver = IdentityResolver(CertificateVerifier())
    resolution = resolver.resolve(view, identity_config(sources=XFCC_PEER), world.bundles, NOW)
    assert resolution.proxy is not None and str(resolution.proxy.spiffe_id) == GATEWAY
    plain = resolver.resolve(Call(FRONTEND).view(world), identity_config(), world.bundles, NOW)
    assert plain.proxy is None
