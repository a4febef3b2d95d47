"""Canonical request paths (docs/policy/reference.md#canonical-paths) and the path templates rules
match them with.

A path is *canonical* when every proxy and backend on the way reads it the same way:
no dot segments, no empty segments, no encoded `/` or `\\`, no encoded unreserved
characters, no raw `\\`, `;`, `#`, whitespace, control or non-ASCII characters, and only
well-formed percent-escapes. Non-canonical paths are denied before matching, so a proxy
misconfiguration can never turn a spelling trick into a bypass. Percent-encoded reserved
characters other than `/` and `\\` (`%20`, `%3F`, `%25`, ...) are data and allowed.

Templates (`/v1/orders/{id}`, `/v1/*/items`, `/v1/tenants/{tenant}/**`):

- a literal segment matches itself; `*` matches one non-empty segment; `{name}` does too
  and captures it; `**` (last position only) matches zero or more segments.
- Trailing slashes are significant: `/v1/orders` matches neither `/v1/orders/` nor the
  reverse, and `/v1/orders/{id}` does not match `/v1/orders/` (a capture is never empty).
  Only `**` absorbs a trailing slash: `/a/**` matches `/a`, `/a/` and `/a/b/c`.
- Literal segments are compared by *key* (`segment_key`): percent-escapes decoded where
  the character may appear raw in a segment, otherwise re-encoded with upper-case hex.
  So `/v1/things:get` also matches `/v1/things%3Aget`, and `%c3%a9` equals `%C3%A9`:
  two spellings a backend decodes alike can never split one rule in two. Captures keep
  the request's own spelling.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from authz_server.core.errors import quote

__all__ = [
    "PathTemplate",
    "canonical_path_problem",
    "compile_path_template",
    "path_segments",
    "segment_key",
    "segments_and_keys",
]

# The common case in one C-level fullmatch: segments of RFC 3986 pchars without `%` or `;`
# that do not start with a dot, optionally a trailing slash. Anything else (escapes,
# `.well-known`, ...) takes the precise search below. Linear: segments exclude `/`.
_PLAIN = re.compile(r"(?:/[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*)*/?")

# Leftmost problem wins; the named group that matched picks the message. One pass over
# the path, in C: this runs on every request.
_PROBLEM = re.compile(
    r"(?P<dot>(?<=/)\.\.?(?=/|\Z))"
    r"|(?P<empty>//)"
    r"|(?P<slash>%(?:2[fF]|5[cC]))"
    # ALPHA (41-5A, 61-7A), DIGIT (30-39), '-' 2D, '.' 2E, '_' 5F, '~' 7E
    r"|(?P<unreserved>%(?:[46][1-9a-fA-F]|[57][0-9aA]|3[0-9]|2[dDeE]|5[fF]|7[eE]))"
    r"|(?P<escape>%(?![0-9a-fA-F]{2}))"
    r"|(?P<char>[^!-~]|[\\;#])"
)

_CAPTURE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

# Characters that may stand raw in a canonical segment without changing its meaning
# (RFC 3986 pchar minus ';', which docs/policy/reference.md#canonical-paths forbids raw). Everything
# else is keyed as %XX.
_RAW_OK = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@"
)
# A segment without these is its own key (the common case: no work at all).
_NEEDS_KEY = re.compile(r"[%\"<>\[\]^`{|}]")


def canonical_path_problem(path: str) -> str | None:
    """Why `path` (without query) is not canonical, or None when it is.

    The reason is short and quotes the offending part: it goes into the audit log.
    """
    if not path:
        return "empty path"
    if path[0] != "/":
        return f"path {quote(path, 40)} does not start with '/'"
    if _PLAIN.fullmatch(path) is not None:
        return None
    m = _PROBLEM.search(path)
    if m is None:
        return None
    bad = m.group()
    kind = m.lastgroup
    if kind == "dot":
        return f"dot segment {quote(bad)}"
    if kind == "empty":
        return f"empty segment ('//') at offset {m.start()}"
    if kind == "slash":
        return f"percent-encoded '/' or '\\' {quote(bad)}"
    if kind == "unreserved":
        return f"percent-encoded unreserved character {quote(bad)} ({quote(chr(int(bad[1:], 16)))})"
    if kind == "escape":
        return f"malformed percent-escape {quote(path[m.start() : m.start() + 3])}"
    return f"forbidden character {quote(bad)} at offset {m.start()}"


def path_segments(path: str) -> list[str]:
    """The segments of a canonical path: `/` is `[""]`, `/a/` is `["a", ""]`."""
    return path[1:].split("/")


def segments_and_keys(path: str) -> tuple[list[str], list[str]]:
    """A canonical path's segments and their keys (the same list when no segment needs one)."""
    segments = path_segments(path)
    if _NEEDS_KEY.search(path) is None:
        return segments, segments
    return segments, [segment_key(s) for s in segments]


def segment_key(segment: str) -> str:
    """The spelling-independent form of a canonical segment, for literal comparison."""
    if _NEEDS_KEY.search(segment) is None:
        return segment
    return "".join(chr(b) if b in _RAW_OK else f"%{b:02X}" for b in unquote_to_bytes(segment))


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled path template; see the module docstring for its semantics."""

    text: str
    #: One entry per fixed segment: its key for a literal, None for `*` / `{name}`.
    parts: tuple[str | None, ...]
    #: (segment position, name) for each `{name}`.
    captures: tuple[tuple[int, str], ...]
    #: The template ends with `**`.
    rest: bool

    def match(self, path: str) -> Mapping[str, str] | None:
        """The captures when canonical `path` matches (empty mapping without), else None."""
        segments = path_segments(path)
        n = len(self.parts)
        if len(segments) < n or (len(segments) > n and not self.rest):
            return None
        for part, segment in zip(self.parts, segments, strict=False):
            if part is None:
                if not segment:
                    return None
            elif part != segment_key(segment):
                return None
        return self.params(segments)

    def params(self, segments: list[str]) -> dict[str, str]:
        """The captures of this template in already-matched `segments`."""
        return {name: segments[i] for i, name in self.captures}


def compile_path_template(text: str) -> PathTemplate:
    """Compile a path template; ValueError with the reason when it is invalid."""
    if not isinstance(text, str):
        raise ValueError(f"path template must be a string, not {type(text).__name__}")
    if not text.startswith("/"):
        raise ValueError(f"path template {quote(text)} must start with '/'")
    if "?" in text:
        raise ValueError(
            f"path template {quote(text)} must not contain '?' (paths match without query)"
        )
    problem = canonical_path_problem(text)
    if problem is not None:
        raise ValueError(f"path template {quote(text)} is not canonical: {problem}")
    raw = path_segments(text)
    parts: list[str | None] = []
    captures: list[tuple[int, str]] = []
    rest = False
    for i, segment in enumerate(raw):
        if segment == "**":
            if i != len(raw) - 1:
                raise ValueError(
                    f"path template {quote(text)}: '**' is allowed only as the last segment"
                )
            rest = True
        elif segment == "*":
            parts.append(None)
        elif segment.startswith("{"):
            m = _CAPTURE.fullmatch(segment)
            if m is None:
                raise ValueError(
                    f"path template {quote(text)}: invalid capture {quote(segment)} "
                    "(expected '{name}' with name matching [a-z_][a-z0-9_]*)"
                )
            name = m.group(1)
            if any(name == seen for _, seen in captures):
                raise ValueError(f"path template {quote(text)}: capture {{{name}}} is used twice")
            captures.append((i, name))
            parts.append(None)
        elif any(c in segment for c in "*{}"):
            raise ValueError(
                f"path template {quote(text)}: '*', '**' and '{{name}}' must be whole segments "
                f"(got {quote(segment)}; write %2A, %7B, %7D for literal characters)"
            )
        else:
            parts.append(segment_key(segment))
    return PathTemplate(text, tuple(parts), tuple(captures), rest)
