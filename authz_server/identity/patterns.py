"""Principal patterns: the SPIFFE ID patterns of `principals`, `identity.deny`, trusted
proxies, approvers and revocations.

    spiffe://td/exact/id     that ID only
    *                        one segment
    {name}                   one segment, captured as `name`
    /**                      zero or more trailing segments

The trust domain is always literal. `compile_principal_pattern` validates once at load
time and raises ValueError quoting the bad input; what it returns does only comparisons
on the hot path. `compile_principals` compiles a policy list of them, each problem a
located issue.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from authz_server.core.errors import quote
from authz_server.core.yaml_source import Fields, Value
from authz_server.identity.spiffe_id import SCHEME, SpiffeId, spiffe_id_problem

__all__ = [
    "PrincipalMatcher",
    "PrincipalPattern",
    "compile_principal_pattern",
    "compile_principals",
]

_NO_CAPTURES: Mapping[str, str] = MappingProxyType({})
_CAPTURE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

_Matcher = Callable[[SpiffeId], "Mapping[str, str] | None"]


class PrincipalMatcher(Protocol):
    """A compiled SPIFFE ID pattern."""

    text: str

    def match(self, spiffe_id: SpiffeId) -> Mapping[str, str] | None:
        """The captures when `spiffe_id` matches (empty mapping without captures), else None."""


# Not frozen: `PrincipalMatcher` declares `text` as a plain (settable) attribute,
# which a frozen dataclass does not satisfy under mypy. Treat it as immutable all the same.
@dataclass(slots=True)
class PrincipalPattern:
    """A compiled SPIFFE ID pattern; implements `PrincipalMatcher`."""

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


def compile_principals(
    fields: Fields,
    value: Value,
    path: str,
    trust_domains: frozenset[str] | None,
    *,
    may_be_empty: bool = False,
) -> tuple[PrincipalMatcher, ...]:
    """A policy list of principal patterns; a trust domain outside `trust_domains` (the
    policy's `identity.trust_domains`) is an issue, as is any pattern that does not compile.

    `trust_domains` is None when identity is itself invalid: the syntax is still checked.
    """
    if may_be_empty:
        listed = fields.compiled_list(value, path, compile_principal_pattern, empty=None)
    else:
        listed = fields.compiled_list(value, path, compile_principal_pattern)
    for item, pattern in listed or ():
        if trust_domains is not None and pattern.trust_domain not in trust_domains:
            fields.issue(
                item.line,
                path,
                f"principal pattern {quote(pattern.text)}: trust domain "
                f"{quote(pattern.trust_domain)} is not in identity.trust_domains",
            )
    return tuple(pattern for _, pattern in listed or ())
