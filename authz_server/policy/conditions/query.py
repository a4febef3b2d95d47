"""The query string as name → value, decoded the way backends decode it, or not at all.

`a=1&b=x+y&c=%C3%A9` → `{a: "1", b: "x y", c: "é"}`: split at `&`, `+` is a space,
percent-escapes are decoded as UTF-8. A name given twice (`a=1&a=2`) becomes one value
joined with `,` (`"1,2"`), the same way Envoy joins a repeated header, so an `equals`
never matches a repeated parameter (backends disagree on whether the first or the last
counts). A query that backends could read differently is not decoded at all (None), and
every query condition then fails closed: a malformed escape (`%zz`), bytes that are not
UTF-8 after decoding, or a `;` (an old separator some frameworks still split on).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping

__all__ = ["parse_query"]

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def parse_query(query: str) -> Mapping[str, str] | None:
    """Decoded parameters, or None when the query is ambiguous or undecodable."""
    if not query:
        return {}
    if ";" in query or _BAD_ESCAPE.search(query) is not None:
        return None
    params: dict[str, str] = {}
    for piece in query.split("&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition("=")
        name, value = _decode(raw_name), _decode(raw_value)
        if name is None or value is None:
            return None
        params[name] = f"{params[name]},{value}" if name in params else value
    return params


def _decode(text: str) -> str | None:
    try:
        return urllib.parse.unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        return None
