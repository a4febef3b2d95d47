"""The strict SPIFFE ID gate.

py-spiffe's `SpiffeId` is lenient (it lower-cases `SPIFFE://Example.ORG` and accepts a
trailing newline), so it is never the gate: `parse_spiffe_id` checks the standard's
grammar exactly and only then builds the value object. Non-canonical IDs are rejected,
never normalised.

A bare trust domain (`spiffe://example.org`) is a valid SPIFFE ID: it names the trust
domain itself (bundles, a CA's URI SAN, principal patterns). It never names a workload: the
X509-SVID and JWT-SVID standards require a non-root path in an SVID's ID, and go-spiffe and
py-spiffe refuse one without. So every place that reads a caller's ID (a leaf's URI SAN,
`source.principal`, XFCC `URI=`, a JWT `sub`, the TLS peer's SPIFFE ID) goes through
`parse_workload_id`, not `parse_spiffe_id`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError, quote

SCHEME = "spiffe://"
MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[a-zA-Z0-9._-]+")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A verified-syntax SPIFFE ID: trust domain plus path segments.

    Its text is built once: every Check reads it for the decision and the revocation
    lookup, from the same few cached instances (`parse_spiffe_id`).
    """

    trust_domain: str
    segments: tuple[str, ...]
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = f"{SCHEME}{self.trust_domain}{''.join('/' + s for s in self.segments)}"
        object.__setattr__(self, "_text", text)

    @property
    def path(self) -> str:
        return self._text[len(SCHEME) + len(self.trust_domain) :]

    def __str__(self) -> str:
        return self._text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpiffeId) and self._text == other._text

    def __hash__(self) -> int:
        return hash(self._text)  # a str caches its hash: lookups keyed by an ID stay cheap


def spiffe_id_problem(text: str) -> str | None:
    """Why `text` is not a canonical SPIFFE ID, or None when it is one."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"longer than {MAX_ID_BYTES} bytes"
    if not text.startswith(SCHEME):
        return "must start with lowercase 'spiffe://'"
    rest = text[len(SCHEME) :]
    trust_domain, slash, path = rest.partition("/")
    if not trust_domain:
        return "trust domain is empty"
    if len(trust_domain) > MAX_TRUST_DOMAIN_BYTES:
        return f"trust domain longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        return "trust domain may contain only [a-z0-9._-] (no port, userinfo, upper case)"
    if not slash:
        return None
    if not path:
        return "trailing '/' is not allowed"
    for segment in path.split("/"):
        if segment == "":
            return "empty path segment"
        if segment in (".", ".."):
            return "'.' and '..' segments are not allowed"
        if not _SEGMENT.fullmatch(segment):
            return f"path segment {quote(segment, 40)} may contain only [a-zA-Z0-9._-]"
    return None


@lru_cache(maxsize=4096)
def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse a SPIFFE ID strictly; raise `IdentityError(invalid_spiffe_id)` otherwise.

    Cached: the same few principals arrive on every request, and the result is immutable.
    """
    problem = spiffe_id_problem(text)
    if problem is not None:
        raise IdentityError(Reason.INVALID_SPIFFE_ID, f"invalid SPIFFE ID {quote(text)}: {problem}")
    trust_domain, _, path = text[len(SCHEME) :].partition("/")
    return SpiffeId(trust_domain, tuple(path.split("/")) if path else ())


def parse_workload_id(text: str) -> SpiffeId:
    """Parse the SPIFFE ID of a caller: `parse_spiffe_id` plus a non-root path.

    Raises `IdentityError(invalid_spiffe_id)` for a bare trust domain too; callers that
    read the ID from a certificate turn that into `certificate_invalid`.
    """
    spiffe_id = parse_spiffe_id(text)
    if not spiffe_id.segments:
        raise IdentityError(
            Reason.INVALID_SPIFFE_ID,
            f"SPIFFE ID {quote(text)} names a trust domain, not a workload: "
            "an SVID's ID must have a path",
        )
    return spiffe_id
