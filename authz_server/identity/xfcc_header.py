"""The `x-forwarded-client-cert` header's grammar: a strict parser (`xfcc.py` decides
which element to believe, and verifies it).

Grammar (Envoy's; keys case-insensitive, values case-sensitive):

    header   = element *("," element)
    element  = pair *(";" pair)
    pair     = key "=" value
    key      = By / Hash / Cert / Chain / Subject / URI / DNS
    value    = DQUOTE *(char / "\\" char) DQUOTE      ; `\\"` is a quote, `\\\\` a backslash
             / *(char except , ; = " \\ space)        ; bare, possibly empty (`URI=`)

Anything else (unknown key, empty element, stray quote, whitespace, a control character,
Hash/Cert/Chain/Subject twice in one element) rejects the whole header with `XfccError`;
the parser raises nothing else, on any input. A `;URI=` inside a quoted value is part of
that value, never a second pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError, quote

__all__ = [
    "KEYS",
    "MAX_ELEMENTS",
    "MAX_HEADER_CHARS",
    "MAX_PAIRS",
    "XfccElement",
    "XfccError",
    "parse_xfcc",
]

KEYS = frozenset({"by", "hash", "cert", "chain", "subject", "uri", "dns"})
#: Keys Envoy writes at most once per element; `By`, `URI` and `DNS` repeat per SAN.
_SINGLE = frozenset({"hash", "cert", "chain", "subject"})

#: Envoy's default limit on all request headers together is 60 KiB.
MAX_HEADER_CHARS = 64 * 1024
MAX_ELEMENTS = 32
MAX_PAIRS = 64

_PAIR = re.compile(
    r"([A-Za-z]+)="
    r'(?:"((?>[^"\\\x00-\x1f\x7f]++|\\[^\x00-\x1f\x7f])*+)"'  # quoted, no backtracking
    r'|([^,;="\\\s\x00-\x1f\x7f]*))'  # bare
)
_UNESCAPE = re.compile(r'\\(["\\])')


class XfccError(IdentityError):
    """The header does not follow the grammar above (`invalid_spiffe_id`)."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.INVALID_SPIFFE_ID, f"x-forwarded-client-cert: {message}")


@dataclass(frozen=True, slots=True)
class XfccElement:
    """One element: its (lower-case key, decoded value) pairs in header order."""

    pairs: tuple[tuple[str, str], ...]

    def values(self, key: str) -> tuple[str, ...]:
        return tuple(value for k, value in self.pairs if k == key)

    def value(self, key: str) -> str | None:
        """The value of a key that appears at most once (the parser checked), or None."""
        for k, value in self.pairs:
            if k == key:
                return value
        return None


def parse_xfcc(header: str) -> tuple[XfccElement, ...]:
    """Every element of `header`, in order; `XfccError` on anything outside the grammar."""
    if len(header) > MAX_HEADER_CHARS:
        raise XfccError(f"longer than {MAX_HEADER_CHARS} characters")
    elements: list[XfccElement] = []
    pairs: list[tuple[str, str]] = []
    position, end = 0, len(header)
    while True:
        match = _PAIR.match(header, position)
        if match is None:
            raise XfccError(
                f"expected KEY=VALUE at character {position}: {_near(header, position)}"
            )
        key = match.group(1).lower()
        if key not in KEYS:
            raise XfccError(f"unknown key {quote(match.group(1), 20)} at character {position}")
        quoted = match.group(2)
        value = _UNESCAPE.sub(r"\1", quoted) if quoted is not None else match.group(3)
        if key in _SINGLE and any(k == key for k, _ in pairs):
            raise XfccError(f"{key!r} appears twice in element {len(elements) + 1}")
        pairs.append((key, value))
        if len(pairs) > MAX_PAIRS:
            raise XfccError(f"more than {MAX_PAIRS} pairs in element {len(elements) + 1}")
        position = match.end()
        if position == end:
            elements.append(XfccElement(tuple(pairs)))
            return tuple(elements)
        separator = header[position]
        if separator == ",":
            elements.append(XfccElement(tuple(pairs)))
            pairs = []
            if len(elements) >= MAX_ELEMENTS:
                raise XfccError(f"more than {MAX_ELEMENTS} elements")
        elif separator != ";":
            raise XfccError(
                f"expected ';' or ',' at character {position}: {_near(header, position)}"
            )
        position += 1


def _near(text: str, position: int) -> str:
    return quote(text[position : position + 20], 20) if position < len(text) else "end of header"
