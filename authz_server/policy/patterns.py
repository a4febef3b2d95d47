"""Compiled matchers for the route and principal fields of a rule (SPEC §5.2).

Each `compile_*` validates once at load time and raises ValueError quoting the bad input;
what it returns does only comparisons on the hot path.

- principals: `spiffe://td/exact/id`, `*` one segment, `{name}` one segment captured,
  `/**` zero or more trailing segments. The trust domain is always literal.
- hosts: `orders.internal` exactly, or `*.internal` for one or more labels below the
  suffix, never the apex itself. Lower-cased; a port is an error (ports are ignored).
- methods: HTTP tokens, upper-cased (`get` is `GET`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from authz_server.core.errors import quote
from authz_server.identity.spiffe_id import SCHEME, SpiffeId, spiffe_id_problem

__all__ = [
    "HostPattern",
    "PrincipalPattern",
    "compile_host_pattern",
    "compile_method",
    "compile_principal_pattern",
]

_NO_CAPTURES: Mapping[str, str] = MappingProxyType({})
_CAPTURE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_Matcher = Callable[[SpiffeId], "Mapping[str, str] | None"]


# Not frozen: `model.PrincipalMatcher` declares `text` as a plain (settable) attribute,
# which a frozen dataclass does not satisfy under mypy. Treat it as immutable all the same.
@dataclass(slots=True)
class PrincipalPattern:
    """A compiled SPIFFE ID pattern; implements `model.PrincipalMatcher`."""

    text: str
    trust_domain: str
    #: Capture names in pattern order.
    names: tuple[str, ...]
    _match: _Matcher = field(repr=False, compare=False)

    def match(self, spiffe_id: SpiffeId) -> Mapping[str, str] | None:
        """The captures when `spiffe_id` matches (empty mapping without captures), else None."""
        return self._match(spiffe_id)


def compile_principal_pattern(text: str) -> PrincipalPattern:
    """Compile a SPIFFE ID pattern; ValueError quoting `text` when it is invalid."""
    if not isinstance(text, str):
        raise ValueError(f"principal pattern must be a string, not {type(text).__name__}")
    if not text.startswith(SCHEME):
        raise ValueError(f"principal pattern {quote(text)} must start with lowercase 'spiffe://'")
    trust_domain, slash, path = text[len(SCHEME) :].partition("/")
    raw = path.split("/") if slash else []
    rest = bool(raw) and raw[-1] == "**"
    if rest:
        raw.pop()
    parts: list[str | None] = []
    names: list[str] = []
    captures: list[tuple[int, str]] = []
    for i, segment in enumerate(raw):
        if segment == "*":
            parts.append(None)
        elif segment == "**":
            raise ValueError(f"principal pattern {quote(text)}: '/**' is allowed only at the end")
        elif (m := _CAPTURE.fullmatch(segment)) is not None:
            if m.group(1) in names:
                raise ValueError(
                    f"principal pattern {quote(text)}: capture {segment} is used twice"
                )
            names.append(m.group(1))
            captures.append((i, m.group(1)))
            parts.append(None)
        elif any(c in segment for c in "*{}"):
            raise ValueError(
                f"principal pattern {quote(text)}: '*', '**' and '{{name}}' must be whole segments"
            )
        else:
            parts.append(segment)
    # The skeleton (wildcards replaced by a valid segment) must be a canonical SPIFFE ID:
    # this checks the trust domain, the literal segments and the slashes in one place.
    skeleton = SCHEME + trust_domain + "".join("/" + (p if p is not None else "x") for p in parts)
    problem = spiffe_id_problem(skeleton)
    if problem is not None:
        if "*" in trust_domain or "{" in trust_domain:
            problem = "the trust domain must be literal"
        raise ValueError(f"principal pattern {quote(text)}: {problem}")
    return PrincipalPattern(
        text, trust_domain, tuple(names), _principal_matcher(trust_domain, parts, captures, rest)
    )


def _principal_matcher(
    trust_domain: str,
    parts: list[str | None],
    captures: list[tuple[int, str]],
    rest: bool,
) -> _Matcher:
    """The predicate for one pattern, specialised so literal IDs cost one comparison."""
    fixed = tuple(parts)
    if not rest and None not in fixed:
        exact = SpiffeId(trust_domain, tuple(p for p in fixed if p is not None))

        def match_exact(spiffe_id: SpiffeId) -> Mapping[str, str] | None:
            return _NO_CAPTURES if spiffe_id == exact else None

        return match_exact

    n = len(fixed)
    positions = tuple(captures)

    def match(spiffe_id: SpiffeId) -> Mapping[str, str] | None:
        segments = spiffe_id.segments
        if spiffe_id.trust_domain != trust_domain:
            return None
        if len(segments) < n or (len(segments) > n and not rest):
            return None
        for part, segment in zip(fixed, segments, strict=False):
            if part is not None and part != segment:
                return None
        if not positions:
            return _NO_CAPTURES
        return {name: segments[i] for i, name in positions}

    return match


@dataclass(frozen=True, slots=True)
class HostPattern:
    """An exact host or a `*.suffix` wildcard, lower-case."""

    text: str
    #: The exact host, or the suffix after `*.` for a wildcard.
    value: str
    wildcard: bool

    def match(self, host: str) -> bool:
        """True when `host` (lower-case, without port) matches."""
        if self.wildcard:
            return host.endswith("." + self.value) and len(host) > len(self.value) + 1
        return host == self.value


def compile_host_pattern(text: str) -> HostPattern:
    """Compile a host pattern; ValueError quoting `text` when it is invalid."""
    if not isinstance(text, str):
        raise ValueError(f"host pattern must be a string, not {type(text).__name__}")
    host = text.lower()
    wildcard = host.startswith("*.")
    value = host[2:] if wildcard else host
    if ":" in value:
        raise ValueError(f"host pattern {quote(text)} must not carry a port (ports are ignored)")
    if value == "*" or host == "*":
        raise ValueError(f"host pattern {quote(text)}: omit 'hosts' to match any host")
    if "*" in value:
        raise ValueError(f"host pattern {quote(text)}: '*' is allowed only as the first label '*.'")
    if not value or not all(_LABEL.fullmatch(label) for label in value.split(".")):
        raise ValueError(
            f"host pattern {quote(text)} is not a valid host name "
            "(dot-separated labels of [a-z0-9_-], no trailing dot)"
        )
    return HostPattern(text, value, wildcard)


def compile_method(text: str) -> str:
    """Validate an HTTP method (RFC 9110 token) and return it upper-cased."""
    if not isinstance(text, str) or _TOKEN.fullmatch(text) is None:
        raise ValueError(f"method {quote(str(text))} is not an HTTP token")
    if text == "*":
        raise ValueError("method '*': omit 'methods' to match any method")
    return text.upper()
