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
from authz_server.identity.registry import SOURCES
from authz_server.identity.source import Attempt, IdentitySource
from authz_server.identity.vouched import SOURCE_AUTHZEN, vouched_identity
from authz_server.identity.x509 import CertificateVerifier

__all__ = ["IdentityFailure", "IdentityResolver", "Resolution"]


@frozen
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


class IdentityResolver:
    """Runs `identity.sources` for one Check; see the module docstring for the order rules."""

    def __init__(self, verifier: CertificateVerifier) -> None:
        self._verifier = verifier
        #: name → (this resolver's own source object, whether it needs settings); any
        #: cache a source keeps is per resolver.
        self._sources: dict[str, tuple[IdentitySource, bool]] = {
            name: (kind.make(), kind.section is not None) for name, kind in SOURCES.items()
        }

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
        attempt = Attempt(view, config, bundles, now, self._verifier)
        try:
            if view.vouched_by:
                attempt.trying(SOURCE_AUTHZEN, view.principal or None)
                subject, caller = vouched_identity(view, config, trusted_peps)
                return Resolution(subject, proxy=caller)
            identity = self._first(attempt)
        except IdentityError as error:
            raise IdentityFailure(error, attempt.source, attempt.principal, attempt.note) from None
        return Resolution(identity, attempt.note, attempt.proxy)

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
