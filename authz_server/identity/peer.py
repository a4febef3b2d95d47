"""Identity from the mTLS peer (source `peer`, docs/concepts/identity.md#peer; its checks:
docs/concepts/identity.md#verification).

Envoy fills `source.principal` from the first URI SAN (or a DNS SAN, or the subject) and
accepts certificates with two URI SANs, so the principal is input to verify, never a fact.

A principal that is a bare trust domain (`spiffe://example.org`) names no workload: it is
denied with `invalid_spiffe_id` before anything else, with or without a certificate (a
certificate carrying it would fail the leaf rules with `certificate_invalid` anyway).
"""

from __future__ import annotations

from datetime import datetime

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError, quote
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.model import Identity, IdentityConfig, check_not_denied
from authz_server.identity.spiffe_id import parse_workload_id
from authz_server.identity.x509 import CertificateVerifier

__all__ = ["SOURCE_PEER", "PeerIdentity"]

SOURCE_PEER = "peer"


class PeerIdentity:
    """Resolves the `peer` source: principal syntax, trust domain, certificate, revocation."""

    def __init__(self, verifier: CertificateVerifier) -> None:
        self._verifier = verifier

    def resolve(
        self, view: RequestView, config: IdentityConfig, bundles: TrustBundles, now: datetime
    ) -> Identity | None:
        """The verified identity, None when the peer presented none; IdentityError otherwise."""
        if not view.principal:
            if view.certificate:
                # A certificate Envoy could not turn into a principal is not an identity.
                raise IdentityError(
                    Reason.CERTIFICATE_MISMATCH, "peer certificate present but no principal"
                )
            return None
        spiffe_id = parse_workload_id(view.principal)
        if spiffe_id.trust_domain not in config.trust_domains:
            raise IdentityError(
                Reason.UNTRUSTED_TRUST_DOMAIN,
                f"trust domain {quote(spiffe_id.trust_domain)} is not trusted by the policy",
            )
        verified = False
        if view.certificate:
            self._verifier.verify(view.certificate, spiffe_id, bundles, now)
            verified = True
        elif config.require_certificate:
            raise IdentityError(
                Reason.CERTIFICATE_REQUIRED,
                "policy requires the peer certificate (Envoy: include_peer_certificate: true)",
            )
        check_not_denied(spiffe_id, config)
        return Identity(spiffe_id, SOURCE_PEER, verified)
