"""Identity source `peer`: the mTLS peer, as Envoy reports it. It takes no settings.

Envoy fills `source.principal` from the first URI SAN (or a DNS SAN, or the subject) and
accepts certificates with two URI SANs, so the principal is input to verify, never a fact.
The checks, in order: principal syntax, trust domain, then the certificate (chained to
its own trust domain's bundle, its URI SAN equal to the principal) or, without one,
`identity.require_certificate`. `identity.deny` is the resolver's, as for every source.

A principal that is a bare trust domain (`spiffe://example.org`) names no workload: it is
denied with `invalid_spiffe_id` before anything else, with or without a certificate (a
certificate carrying it would fail the leaf rules with `certificate_invalid` anyway).

The `xfcc` source verifies the peer too, to decide whether to believe its header:
`verified_peer` does that at most once per Check, whichever source asks first.
"""

from __future__ import annotations

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError, quote
from authz_server.identity.model import Identity
from authz_server.identity.source import Attempt, SourceKind
from authz_server.identity.spiffe_id import parse_workload_id

__all__ = ["KIND", "SOURCE_PEER", "PeerSource", "verified_peer"]

SOURCE_PEER = "peer"


class PeerSource:
    """Implements `IdentitySource` for the direct peer."""

    __slots__ = ()

    def resolve(self, attempt: Attempt, settings: None) -> Identity | None:
        return verified_peer(attempt)


def verified_peer(attempt: Attempt) -> Identity | None:
    """The peer's identity, None when it presented none; `IdentityError` otherwise.

    Verified on the first call of a Check; later calls return the same answer.
    """
    view = attempt.view
    attempt.source, attempt.principal = SOURCE_PEER, view.principal or None
    if attempt.peer_checked:
        return attempt.peer
    identity: Identity | None = None
    if view.principal:
        identity = _verify(attempt, view.principal, view.certificate)
    elif view.certificate:
        # A certificate Envoy could not turn into a principal is not an identity.
        raise IdentityError(
            Reason.CERTIFICATE_MISMATCH, "peer certificate present but no principal"
        )
    attempt.peer, attempt.peer_checked = identity, True
    return identity


def _verify(attempt: Attempt, principal: str, certificate: str) -> Identity:
    config = attempt.config
    spiffe_id = parse_workload_id(principal)
    if spiffe_id.trust_domain not in config.trust_domains:
        raise IdentityError(
            Reason.UNTRUSTED_TRUST_DOMAIN,
            f"trust domain {quote(spiffe_id.trust_domain)} is not trusted by the policy",
        )
    if certificate:
        attempt.window = attempt.verifier.verify(
            certificate, spiffe_id, attempt.bundles, attempt.now
        )
        return Identity(spiffe_id, SOURCE_PEER, certificate_verified=True)
    if config.require_certificate:
        raise IdentityError(
            Reason.CERTIFICATE_REQUIRED,
            "policy requires the peer certificate (Envoy: include_peer_certificate: true)",
        )
    return Identity(spiffe_id, SOURCE_PEER, certificate_verified=False)


KIND = SourceKind(SOURCE_PEER, PeerSource)
