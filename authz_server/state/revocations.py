"""Revocations compiled for the hot path, and the checks every store applies on write.

A `RevocationSet` is built once per change: exact IDs go into a dict (one lookup), the
patterns with wildcards into a list. Expiry is evaluated at lookup time, so a set that was
built earlier never honours a revocation past its ttl.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from authz_server.core.errors import quote
from authz_server.identity.patterns import PrincipalPattern, compile_principal_pattern
from authz_server.identity.spiffe_id import SpiffeId, parse_spiffe_id
from authz_server.state.store import Revocation

__all__ = ["MAX_REASON_CHARS", "RevocationSet", "check_revocation"]

MAX_REASON_CHARS = 1024
#: Ten years: long enough for "until further notice", short enough to stay finite.
MAX_TTL_S = 10 * 365 * 24 * 3600.0


def check_revocation(pattern: str, ttl_s: float, reason: str, by: str) -> PrincipalPattern:
    """Validate a revocation request; ValueError quoting the bad input."""
    compiled = compile_principal_pattern(pattern)
    if not (math.isfinite(ttl_s) and 0 < ttl_s <= MAX_TTL_S):
        raise ValueError(
            f"revocation ttl must be between 0 and {MAX_TTL_S:.0f} seconds, got {ttl_s}"
        )
    if not reason.strip():
        raise ValueError("a revocation needs a reason")
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"revocation reason is longer than {MAX_REASON_CHARS} characters")
    if not by:
        raise ValueError("a revocation needs the identity of who revoked")
    return compiled


def _exact(pattern: PrincipalPattern) -> SpiffeId | None:
    if pattern.names or "*" in pattern.text:
        return None
    return parse_spiffe_id(pattern.text)


class RevocationSet:
    """Revocations by pattern, matched against one SPIFFE ID at a time."""

    __slots__ = ("_exact", "_patterns", "revocations")

    def __init__(self, revocations: Iterable[Revocation]) -> None:
        self.revocations: dict[str, Revocation] = {}
        self._exact: dict[SpiffeId, Revocation] = {}
        self._patterns: list[tuple[PrincipalPattern, Revocation]] = []
        for revocation in revocations:
            try:
                compiled = compile_principal_pattern(revocation.pattern)
            except ValueError as error:
                # Only this package writes revocations, and it validates first: a pattern
                # that no longer compiles means the data is corrupt. Refuse to guess.
                raise ValueError(
                    f"stored revocation {quote(revocation.pattern)} is invalid: {error}"
                ) from None
            self.revocations[revocation.pattern] = revocation
            exact = _exact(compiled)
            if exact is not None:
                self._exact[exact] = revocation
            else:
                self._patterns.append((compiled, revocation))

    def match(self, spiffe_id: SpiffeId, now_us: int) -> Revocation | None:
        """The revocation in force at `now_us` that covers `spiffe_id`, if any."""
        found = self._exact.get(spiffe_id)
        if found is not None and found.expires_us > now_us:
            return found
        for pattern, revocation in self._patterns:
            if revocation.expires_us > now_us and pattern.match(spiffe_id) is not None:
                return revocation
        return None

    def live(self, now_us: int) -> list[Revocation]:
        """The revocations in force at `now_us`, sorted by pattern."""
        return sorted(
            (r for r in self.revocations.values() if r.expires_us > now_us),
            key=lambda r: r.pattern,
        )
