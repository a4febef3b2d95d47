"""The identity phase (docs/concepts/identity.md#sources): the sources of `identity.sources`, in the
policy's order.

    for each listed source:
        absent                  → try the next one
        present and verified    → that identity, then `identity.deny`: the first one wins
        present but failing     → deny with its identity reason
        (docs/concepts/identity.md#verification); never fall through
    none present                → no identity (only `unauthenticated: true` rules admit it)

A failing source never falls through to the next one: a forged or broken credential must
not quietly turn into a weaker one (an expired JWT-SVID into the workload's own mTLS
identity, say), and a caller must not be able to pick its identity by breaking one.

What "present" means:

    peer      `source.principal` (or a certificate) was sent; checks as before (peer.py).
    xfcc      the x-forwarded-client-cert header was sent *and* the direct peer is a
              trusted proxy (`identity.xfcc.trusted_proxies`). That is decided on the peer's
              own identity, verified as for `peer` (principal, trust domain, certificate,
              identity.deny) whether or not `peer` is listed, and it must have come with
              its certificate. A peer that fails verification denies with the peer's
              reason. A verified peer that is no trusted proxy, or no peer at all, gets its
              header *ignored* (the source counts as absent) and the decision carries
              `identity_note: xfcc_spoofing`, counted in metrics and written to the audit
              record; except when the header merely repeats the peer's own identity (one
              element whose URI is the peer's, as a local Envoy with SANITIZE_SET writes),
              which claims nothing.
    jwt_svid  an `authorization: Bearer …` header; another scheme counts as absent.

A view from the AuthZEN listener (`vouched_by` set) bypasses the sources: its subject is
vouched for by the authenticated caller, and `identity/vouched.py` checks both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.jwt_svid import HEADER as AUTHORIZATION
from authz_server.identity.jwt_svid import SOURCE_JWT_SVID, JwtSvidVerifier, bearer_token
from authz_server.identity.model import Identity, IdentityConfig, check_not_denied
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.identity.peer import SOURCE_PEER, PeerIdentity
from authz_server.identity.vouched import SOURCE_AUTHZEN, vouched_identity
from authz_server.identity.x509 import CertificateVerifier
from authz_server.identity.xfcc import HEADER as XFCC
from authz_server.identity.xfcc import SOURCE_XFCC, XfccError, forwarded_identity, parse_xfcc

__all__ = [
    "SOURCES",
    "XFCC_SPOOFING",
    "IdentityFailure",
    "IdentityResolver",
    "Resolution",
]

SOURCES = (SOURCE_PEER, SOURCE_XFCC, SOURCE_JWT_SVID)
#: `identity_note` (audit) and `authz_identity_failures_total{reason}` (metrics) of an
#: XFCC header that was ignored because the peer that sent it is no trusted proxy.
XFCC_SPOOFING = "xfcc_spoofing"
_PEER_ONLY = (SOURCE_PEER,)


@dataclass(frozen=True, slots=True)
class Resolution:
    """The verified identity (None: no source was present) and any note for the audit."""

    identity: Identity | None
    note: str | None = None
    #: The trusted proxy that vouched for an `xfcc` identity, or the AuthZEN caller that
    #: vouched for another subject (for revocation checks).
    proxy: Identity | None = None


class IdentityFailure(IdentityError):
    """A present source failed verification: deny with `reason`.

    `source` is the source that failed ("peer" also when the peer was checked to decide
    whether to believe an XFCC header); `principal` is the peer's unverified principal
    for a peer failure, else None; `note` is what the sources tried before noted.
    """

    def __init__(
        self, error: IdentityError, source: str, principal: str | None, note: str | None
    ) -> None:
        super().__init__(error.reason, str(error))
        self.source = source
        self.principal = principal
        self.note = note


class _Attempt:
    """Which source is being tried, and what was noted so far (for `IdentityFailure`)."""

    __slots__ = ("note", "principal", "proxy", "source")

    def __init__(self) -> None:
        self.source = SOURCE_PEER
        self.principal: str | None = None
        self.note: str | None = None
        self.proxy: Identity | None = None


class IdentityResolver:
    """Runs `identity.sources` for one Check; see the module docstring for the order rules."""

    def __init__(self, verifier: CertificateVerifier, jwt: JwtSvidVerifier | None = None) -> None:
        self._verifier = verifier
        self._peer = PeerIdentity(verifier)
        self._jwt = jwt or JwtSvidVerifier()

    def resolve(
        self,
        view: RequestView,
        config: IdentityConfig,
        bundles: TrustBundles,
        now: datetime,
        trusted_peps: Sequence[PrincipalMatcher] = (),
    ) -> Resolution:
        """The caller's identity; `IdentityFailure` when a present source fails.

        `trusted_peps` (`authzen.trusted_peps`) only matters for an AuthZEN view."""
        attempt = _Attempt()
        try:
            if view.vouched_by:
                attempt.source, attempt.principal = SOURCE_AUTHZEN, view.principal or None
                subject, caller = vouched_identity(view, config, trusted_peps)
                return Resolution(subject, proxy=caller)
            if config.sources == _PEER_ONLY:  # the default: one call, nothing else to try
                attempt.principal = view.principal or None
                return Resolution(self._peer.resolve(view, config, bundles, now))
            identity = self._first(view, config, bundles, now, attempt)
        except IdentityError as error:
            raise IdentityFailure(error, attempt.source, attempt.principal, attempt.note) from None
        return Resolution(identity, attempt.note, attempt.proxy)

    def _first(
        self,
        view: RequestView,
        config: IdentityConfig,
        bundles: TrustBundles,
        now: datetime,
        attempt: _Attempt,
    ) -> Identity | None:
        resolved: list[Identity | None] = []

        def peer() -> Identity | None:  # verified at most once, and only when needed
            attempt.source, attempt.principal = SOURCE_PEER, view.principal or None
            if not resolved:
                resolved.append(self._peer.resolve(view, config, bundles, now))
            return resolved[0]

        for source in config.sources:
            identity: Identity | None
            if source == SOURCE_PEER:
                identity = peer()
                if identity is not None:
                    return identity  # identity.deny already checked
                continue
            if source == SOURCE_XFCC:
                identity = self._xfcc(view, config, bundles, now, attempt, peer)
            elif source == SOURCE_JWT_SVID:
                attempt.source, attempt.principal = SOURCE_JWT_SVID, None
                token = bearer_token(view.headers.get(AUTHORIZATION))
                identity = self._jwt.verify(token, config, bundles, now) if token else None
            else:  # the loader admits only SOURCES
                raise IdentityError(Reason.NO_IDENTITY, f"unknown identity source {source!r}")
            if identity is not None:
                check_not_denied(identity.spiffe_id, config)
                return identity
        return None

    def _xfcc(
        self,
        view: RequestView,
        config: IdentityConfig,
        bundles: TrustBundles,
        now: datetime,
        attempt: _Attempt,
        peer: Callable[[], Identity | None],
    ) -> Identity | None:
        """The forwarded identity; None when no header came or it was ignored."""
        header = view.headers.get(XFCC)
        if header is None:
            return None
        proxy = peer()
        if proxy is None or not _trusted_proxy(proxy, config):
            if not _echoes(header, proxy):
                attempt.note = XFCC_SPOOFING
            return None
        if not proxy.certificate_verified:
            raise IdentityError(
                Reason.CERTIFICATE_REQUIRED,
                f"{proxy.spiffe_id} is a trusted XFCC proxy, but its certificate was not "
                "sent (Envoy: include_peer_certificate: true)",
            )
        attempt.source, attempt.principal, attempt.proxy = SOURCE_XFCC, None, proxy
        return forwarded_identity(header, config, bundles, self._verifier, now)


def _trusted_proxy(peer: Identity, config: IdentityConfig) -> bool:
    return any(p.match(peer.spiffe_id) is not None for p in config.xfcc_trusted_proxies)


def _echoes(header: str, peer: Identity | None) -> bool:
    """True when `header` only repeats the peer's own identity (a local SANITIZE_SET)."""
    if peer is None:
        return False
    try:
        elements = parse_xfcc(header)
    except XfccError:
        return False
    return len(elements) == 1 and elements[0].values("uri") == (str(peer.spiffe_id),)
