"""The identity layer's values: the policy's `identity` section compiled, and a caller
whose identity was verified.

`IdentityConfig` is built once per policy load (`section.py`) and read on every Check;
`Identity` is what the identity phase hands on to matching, audit and metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError, quote
from authz_server.core.values import frozen
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.identity.spiffe_id import SpiffeId

__all__ = ["Identity", "IdentityConfig", "check_not_denied"]

_NO_SETTINGS: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    trust_domains: frozenset[str]
    #: Names of `registry.SOURCES`, tried in this order (see resolve.py).
    sources: tuple[str, ...] = ("peer",)
    require_certificate: bool = False
    #: Principals that are always denied (`revoked`).
    deny: tuple[PrincipalMatcher, ...] = ()
    #: Each listed source's settings (its `identity.<name>` section as it parsed it), by
    #: source name; a source without settings has no entry.
    settings: Mapping[str, object] = field(default_factory=lambda: _NO_SETTINGS)

    def offline(self) -> IdentityConfig:
        """For `check`, `test`, Explain and replay, where the principal stands for an
        identity verified when the request was made: peer only, no certificate required."""
        return replace(self, sources=("peer",), require_certificate=False, settings=_NO_SETTINGS)


@frozen
class Identity:
    """A caller whose SPIFFE ID passed every check of the identity phase."""

    spiffe_id: SpiffeId
    #: Which source established it: "peer", "xfcc", "jwt_svid" or "authzen" (the audit's
    #: identity_source).
    source: str
    #: True when a certificate was presented and chained to its trust domain's bundle.
    certificate_verified: bool


def check_not_denied(spiffe_id: SpiffeId, config: IdentityConfig) -> None:
    """Raise `IdentityError(revoked)` when `identity.deny` lists `spiffe_id`, from any source."""
    for pattern in config.deny:
        if pattern.match(spiffe_id) is not None:
            raise IdentityError(
                Reason.REVOKED, f"{spiffe_id} is denied by identity.deny {quote(pattern.text)}"
            )
