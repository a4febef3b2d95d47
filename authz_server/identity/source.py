"""What an identity source is, and what one Check's sources share.

A source reads the caller's identity out of a request one way: the mTLS peer, the header
a trusted proxy forwarded, a bearer token. `identity.sources` names the ones to try, in
order (`resolve.py`); `identity.<name>` holds a source's settings, which the source parses
itself (`section.py` hands it its section). Every source is one module that exports a
`SourceKind`, and one line in `registry.py`.

A source's `resolve` answers in one of three ways, and the resolver relies on each:

    None            the request does not carry this source's credential: try the next one
    an Identity     verified (the resolver then applies `identity.deny`)
    IdentityError   the credential is there but fails: deny, never try the next source
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from authz_server.core.request import RequestView
from authz_server.core.yaml_source import Fields, Value
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.model import Identity, IdentityConfig
from authz_server.identity.x509 import CertificateVerifier

__all__ = ["Attempt", "IdentitySource", "Section", "SectionParser", "SourceKind"]

#: (fields, the section's value, its path `identity.<name>`, the policy's trust domains or
#: None when they are invalid) → the source's settings, or None after recording issues.
SectionParser = Callable[[Fields, Value, str, frozenset[str] | None], object | None]


class IdentitySource(Protocol):
    """One way of reading the caller's identity; see the module docstring for the answers."""

    def resolve(self, attempt: Attempt, settings: Any) -> Identity | None:
        """The identity in `attempt.view`, if this source's credential is there.

        `settings` is what the source's `Section.parse` returned for this policy (None for
        a source without a section).
        """


@dataclass(frozen=True, slots=True)
class Section:
    """A source's `identity.<name>` section: required when the source is listed."""

    #: The setting a listed source cannot do without, named when the section is missing.
    requires: str
    parse: SectionParser


@dataclass(frozen=True, slots=True)
class SourceKind:
    """One row of the registry."""

    #: The name in `identity.sources`, the key of its section, and the audit's
    #: `identity_source` of the identities it establishes.
    name: str
    #: A fresh source for each resolver, so that any cache it keeps is that resolver's.
    make: Callable[[], IdentitySource]
    #: None when the source takes no settings.
    section: Section | None = None


class Attempt:
    """One Check's way through the sources: what they read, and which one is being tried.

    `source` and `principal` say who to blame when a source fails (`IdentityFailure`);
    `note` is what a source noticed on the way (e.g. an ignored XFCC header); `proxy` is
    the trusted proxy that vouched for the identity, for revocation checks.
    """

    __slots__ = (
        "bundles",
        "config",
        "note",
        "now",
        "peer",
        "peer_checked",
        "principal",
        "proxy",
        "source",
        "verifier",
        "view",
        "window",
    )

    def __init__(
        self,
        view: RequestView,
        config: IdentityConfig,
        bundles: TrustBundles,
        now: datetime,
        verifier: CertificateVerifier,
    ) -> None:
        self.view = view
        self.config = config
        self.bundles = bundles
        self.now = now
        self.verifier = verifier
        self.source = ""
        self.principal: str | None = None
        self.note: str | None = None
        self.proxy: Identity | None = None
        #: The direct peer's identity once verified (`peer.verified_peer`): several sources
        #: may need it, and it is verified at most once per Check.
        self.peer: Identity | None = None
        self.peer_checked = False
        #: The validity window (not before, not after) of the peer's verified certificate
        #: chain, once verified: how long the peer's identity may be reused
        #: (`resolve.IdentityResolver`).
        self.window: tuple[datetime, datetime] | None = None

    def trying(self, source: str, principal: str | None = None) -> None:
        """From here on a failure is `source`'s, about the unverified `principal`."""
        self.source = source
        self.principal = principal
