"""Who is at the console: the client certificate of the TLS connection, verified like an
admin API caller.

The handshake (`console/tls.py`) demands a certificate chaining to *some* trusted CA — the
pooled roots of every trust domain. That alone would let a partner's CA mint our IDs, so the
presented certificate is verified again with the admin API's own `admin.auth.authenticate`
(X509-SVID leaf rules, a chain to the bundle of the trust domain in its URI SAN, the
bundles in force now), then put through the admin gate (`AdminOperations.admit`:
`admin.principals`, `identity.deny`, store revocations). Approve and reject additionally
check the rule's approvers inside the operation itself.

A TLS server learns the leaf and whatever intermediates the client sent; those
intermediates are only candidates for path building, never trusted by themselves.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from authz_server.admin.auth import Caller, Refused, authenticate
from authz_server.admin.operations import AdminOperations
from authz_server.check.snapshot import Snapshot
from authz_server.core.clock import Clock, SystemClock

__all__ = [
    "CALLER_NAME",
    "ConsoleAuthenticator",
    "ConsoleUser",
    "PeerCertificate",
    "peer_certificate",
]

#: Where a request keeps the authenticated caller's name (for refusal pages and logs).
CALLER_NAME = web.RequestKey("authz_console_caller", str)


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The certificates a client presented: its leaf, then what it sent after it (DER)."""

    leaf: bytes
    sent_after: tuple[bytes, ...] = ()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the leaf, hex: what a CSRF token is bound to."""
        return hashlib.sha256(self.leaf).hexdigest()

    def auth_context(self) -> dict[str, list[bytes]]:
        """The shape of a grpc auth context, for `admin.auth.authenticate`."""
        leaf = ssl.DER_cert_to_PEM_cert(self.leaf).encode("ascii")
        chain = [leaf, *(ssl.DER_cert_to_PEM_cert(d).encode("ascii") for d in self.sent_after)]
        return {"x509_pem_cert": [leaf], "x509_pem_cert_chain": [b"".join(chain)]}


def peer_certificate(request: web.BaseRequest) -> PeerCertificate | None:
    """The client certificate of the request's TLS connection; None without TLS or one."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return None
    return PeerCertificate(leaf, tuple(d for d in _sent_chain(ssl_object) if d != leaf))


def _sent_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The certificates the client sent (DER), when Python can tell.

    Python 3.13 offers `SSLObject.get_unverified_chain()`; 3.11 has the same call on the
    underlying `_sslobj` only. Without either, the leaf alone is verified, so an approver
    whose SVID is issued by an intermediate CA is then refused (closed, not open).
    """
    source: Any = ssl_object
    if not hasattr(source, "get_unverified_chain"):
        source = getattr(ssl_object, "_sslobj", None)
    method = getattr(source, "get_unverified_chain", None)
    if method is None:
        return []
    certificates = method() or []
    return [ssl.PEM_cert_to_DER_cert(c.public_bytes()) for c in certificates]


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """An admitted console user: who, the certificate fingerprint, the snapshot used."""

    caller: Caller
    fingerprint: str
    snapshot: Snapshot


class ConsoleAuthenticator:
    """Authenticates and admits the user behind a console request, or raises `Refused`."""

    def __init__(
        self,
        snapshot_source: Callable[[], Snapshot | None],
        operations: AdminOperations,
        clock: Clock | None = None,
    ) -> None:
        self._snapshot = snapshot_source
        self._operations = operations
        self._clock = clock or SystemClock()

    async def user(self, request: web.BaseRequest) -> ConsoleUser:
        snapshot = self._snapshot()
        if snapshot is None:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "no policy loaded")
        presented = peer_certificate(request)
        if presented is None:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, "a client certificate (X509-SVID) is required"
            )
        caller = authenticate(
            presented.auth_context(),
            snapshot.bundles,
            snapshot.policy.identity.trust_domains,
            self._clock.now(),
        )
        request[CALLER_NAME] = caller.name
        await self._operations.admit(caller, snapshot.policy)
        return ConsoleUser(caller, presented.fingerprint, snapshot)
