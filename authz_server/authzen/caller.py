"""Who is calling the AuthZEN API: the verified SPIFFE ID behind the TLS client certificate.

The TLS handshake demands a client certificate chaining to *some* trusted CA (the pooled
roots of every trust domain, as on the Check and admin listeners). That is not enough: a
partner's CA must not be able to mint our IDs. So the leaf is verified again here as the
admin API and the Check path's peer do: the X509-SVID leaf rules, a trust domain the
policy trusts, and a chain to the bundle **of the trust domain in its own URI SAN**, at
the moment of the request, against the bundles in force (`identity.x509`, cached per
certificate and bundle generation; failures never are). Anything else is 401.

Whether the caller may ask about others (`authzen.trusted_peps`), and whether it is
revoked or denied, is the identity phase's business (`identity/vouched.py`): those are
decisions, audited like any other.

Python 3.11's `ssl` module shows only the peer's leaf, not the intermediates it sent, so
on 3.11 an SVID issued through an intermediate CA does not verify here (fail closed);
from Python 3.13 the chain is read with `get_unverified_chain`.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from authz_server.check.snapshot import Snapshot
from authz_server.core.errors import IdentityError, quote
from authz_server.core.request import LOCAL_PEP
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.identity.x509 import CertificateVerifier, check_svid_leaf

__all__ = ["LOCAL_CALLER", "Caller", "CallerAuthenticator", "PeerCertificate", "Unauthenticated"]

_MAX_IDS = 1024


class Unauthenticated(Exception):
    """The caller did not prove an identity the policy trusts (HTTP 401); safe to send."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: what the view's `vouched_by` says about it."""

    vouched_by: str

    @property
    def local(self) -> bool:
        return self.vouched_by == LOCAL_PEP


#: Every caller of a plaintext loopback listener (`--authzen-insecure-local`, demos).
LOCAL_CALLER = Caller(LOCAL_PEP)


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The TLS peer's leaf and the intermediates it sent, DER."""

    leaf: bytes
    intermediates: tuple[bytes, ...] = ()

    @classmethod
    def from_ssl(cls, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerCertificate | None:
        if ssl_object is None:
            return None
        leaf = ssl_object.getpeercert(binary_form=True)
        if not leaf:
            return None
        chain: Any = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
        intermediates = tuple(bytes(c) for c in (chain() or ())[1:]) if chain else ()
        return cls(leaf, intermediates)


class CallerAuthenticator:
    """Verifies AuthZEN callers; one per listener (its caches are not shared state)."""

    def __init__(self, verifier: CertificateVerifier | None = None) -> None:
        self._verifier = verifier or CertificateVerifier()
        #: leaf DER → (PEM, SPIFFE ID) of leaves that passed the leaf rules once.
        self._leaves: OrderedDict[bytes, tuple[str, SpiffeId]] = OrderedDict()

    def authenticate(
        self, peer: PeerCertificate | None, snapshot: Snapshot, now: datetime
    ) -> Caller:
        """The verified caller; `Unauthenticated` with a message otherwise."""
        if peer is None:
            raise Unauthenticated("a client certificate (X509-SVID) is required")
        try:
            pem, spiffe_id = self._leaf(peer.leaf, now)
            if spiffe_id.trust_domain not in snapshot.policy.identity.trust_domains:
                raise Unauthenticated(
                    f"trust domain {quote(spiffe_id.trust_domain)} is not trusted by the policy"
                )
            intermediates = [x509.load_der_x509_certificate(d) for d in peer.intermediates]
            self._verifier.verify(pem, spiffe_id, snapshot.bundles, now, intermediates)
        except IdentityError as error:
            raise Unauthenticated(f"client certificate rejected: {error}") from None
        except ValueError as error:
            raise Unauthenticated(f"client certificate does not parse: {error}") from None
        return Caller(str(spiffe_id))

    def _leaf(self, der: bytes, now: datetime) -> tuple[str, SpiffeId]:
        """The leaf as PEM and its SPIFFE ID, the leaf rules checked on first sight.

        Later requests rely on the verifier, whose cache holds a chain only within its
        validity window, and which runs every rule again on a miss.
        """
        known = self._leaves.get(der)
        if known is not None:
            self._leaves.move_to_end(der)
            return known
        leaf = x509.load_der_x509_certificate(der)
        spiffe_id = check_svid_leaf(leaf, now)
        pem = ssl.DER_cert_to_PEM_cert(der)
        self._leaves[der] = (pem, spiffe_id)
        if len(self._leaves) > _MAX_IDS:
            self._leaves.popitem(last=False)
        return pem, spiffe_id
