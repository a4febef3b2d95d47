"""The identity phase: the sources of `identity.sources`, in the policy's order.

    for each listed source:
        absent                  → try the next one
        present and verified    → that identity, then `identity.deny`: the first one wins
        present but failing     → deny with its reason; never fall through
    none present                → no identity (only `unauthenticated: true` rules admit it)

A failing source never falls through to the next one: a forged or broken credential must
not quietly turn into a weaker one (an expired JWT-SVID into the workload's own mTLS
identity, say), and a caller must not be able to pick its identity by breaking one.

What "present" means is each source's own business (`peer.py`, `xfcc.py`, `jwt_svid.py`;
`registry.py` lists them), and so are its settings.

A view from the AuthZEN listener (`vouched_by` set) bypasses the sources: its subject is
vouched for by the authenticated caller, and `vouched.py` checks both.

When the peer is the first source, its verified identity is reused for the same
(principal, certificate field) under the same identity settings and trust bundles, while
the certificate chain is within its validity window: a workload's Checks then skip the
sources, the SPIFFE ID parse and the certificate cache. Only successes are kept, never
with the certificate cache turned off, and revocations are looked up on every Check
all the same (`check.pipeline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError
from authz_server.core.request import RequestView
from authz_server.core.values import frozen
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.model import Identity, IdentityConfig, check_not_denied
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.identity.peer import SOURCE_PEER
from authz_server.identity.registry import SOURCES
from authz_server.identity.source import Attempt, IdentitySource
from authz_server.identity.vouched import SOURCE_AUTHZEN, vouched_identity
from authz_server.identity.x509 import CertificateVerifier

__all__ = [
    "PEER_MEMO_CERT_MAX",
    "PEER_MEMO_SIZE",
    "IdentityFailure",
    "IdentityResolver",
    "Resolution",
]

#: Peer identities kept per resolver (all are forgotten at once when it is full), and the
#: longest certificate field kept.
PEER_MEMO_SIZE = 1024
PEER_MEMO_CERT_MAX = 8192
_PEER_FIRST = (SOURCE_PEER,)


@frozen
class Resolution:
    """The verified identity (None: no source was present) and any note for the audit."""

    identity: Identity | None
    note: str | None = None
    #: The trusted proxy that vouched for an `xfcc` identity, or the AuthZEN caller that
    #: vouched for another subject (for revocation checks).
    proxy: Identity | None = None


@frozen
class _KeptPeer:
    resolution: Resolution
    not_before: datetime
    not_after: datetime
    config: IdentityConfig
    bundles: TrustBundles


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


class IdentityResolver:
    """Runs `identity.sources` for one Check; see the module docstring for the order rules."""

    def __init__(self, verifier: CertificateVerifier) -> None:
        self._verifier = verifier
        #: name → (this resolver's own source object, whether it needs settings); any
        #: cache a source keeps is per resolver.
        self._sources: dict[str, tuple[IdentitySource, bool]] = {
            name: (kind.make(), kind.section is not None) for name, kind in SOURCES.items()
        }
        #: (principal, certificate) → the peer's resolution, its chain's window, and the
        #: settings and bundles it was verified under (a hit must have the same ones).
        self._peers: dict[tuple[str, str], _KeptPeer] = {}

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
        key = None
        if (
            view.certificate
            and len(view.certificate) <= PEER_MEMO_CERT_MAX
            and not view.vouched_by
            and config.sources[:1] == _PEER_FIRST
            and self._verifier.caches
        ):
            key = (view.principal, view.certificate)
            kept = self._peers.get(key)
            if (
                kept is not None
                and kept.config is config
                and kept.bundles is bundles
                and kept.not_before <= now < kept.not_after
            ):
                return kept.resolution
        attempt = Attempt(view, config, bundles, now, self._verifier)
        try:
            if view.vouched_by:
                attempt.trying(SOURCE_AUTHZEN, view.principal or None)
                subject, caller = vouched_identity(view, config, trusted_peps)
                return Resolution(subject, proxy=caller)
            identity = self._first(attempt)
        except IdentityError as error:
            raise IdentityFailure(error, attempt.source, attempt.principal, attempt.note) from None
        resolution = Resolution(identity, attempt.note, attempt.proxy)
        if key is not None and attempt.window is not None and attempt.peer is identity:
            if len(self._peers) >= PEER_MEMO_SIZE:
                self._peers.clear()
            self._peers[key] = _KeptPeer(resolution, *attempt.window, config, bundles)
        return resolution

    def _first(self, attempt: Attempt) -> Identity | None:
        config = attempt.config
        for name in config.sources:
            attempt.source, attempt.principal = name, None  # until the source says more
            entry = self._sources.get(name)
            settings = config.settings.get(name) if entry is not None and entry[1] else None
            if entry is None or (settings is None and entry[1]):
                # The loader admits only registered sources, each with its settings.
                raise IdentityError(
                    Reason.NO_IDENTITY, f"identity source {name!r} is unknown or has no settings"
                )
            identity = entry[0].resolve(attempt, settings)
            if identity is not None:
                if config.deny:
                    check_not_denied(identity.spiffe_id, config)
                return identity
        return None
