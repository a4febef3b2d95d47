"""The body preview of an approval notification: allow-listed, secret-free, size-capped.

A rule lists the fields a human needs to judge the action
(`when.approval.preview_fields: [amount, destination.country]`, dotted paths into the
JSON body). Everything else is left out. On top of the allow-list, secrets are removed
wherever they turn up, because a listed object may hold one (`destination.auth`):

- a key that looks like a secret (`secret_key_problem`: authorization, password, token,
  api key, cookie, …) is never shown, and the loader refuses such a path outright;
- a string that looks like a credential (`Bearer …`, `Basic …`, a JWT, a PEM block) is
  replaced by `[redacted]`.

The preview is capped: strings at `MAX_STRING_CHARS`, the whole preview (compact UTF-8
JSON of its fields) at `MAX_PREVIEW_BYTES`; a field that does not fit is left out. Either
sets `truncated`. Numbers keep their value: a `Decimal` that a float cannot hold exactly is
shown as its decimal text, so a human never approves a rounded amount.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from decimal import Decimal
from types import MappingProxyType

from authz_server.policy.conditions.jsonbody import BodyDocument
from authz_server.state.events import BodyPreview

__all__ = ["MAX_PREVIEW_BYTES", "REDACTED", "body_preview", "secret_key_problem"]

MAX_PREVIEW_BYTES = 1024
MAX_STRING_CHARS = 200
#: Nested objects and lists deeper than this are shown as `[nested]`.
MAX_DEPTH = 4
REDACTED = "[redacted]"

#: Key fragments (lower-case, letters and digits only) that mark a secret.
_SECRET_FRAGMENTS = (
    "authorization", "password", "passwd", "passphrase", "secret", "token", "apikey",
    "accesskey", "privatekey", "cookie", "credential", "session", "signature", "cvv", "cvc",
)  # fmt: skip
#: Whole keys that mark a secret (too short to be fragments without false alarms).
_SECRET_KEYS = frozenset({"auth", "pin", "otp", "pwd", "ssn", "key"})
_CREDENTIAL = re.compile(
    r"\s*(?:(?:bearer|basic|digest|negotiate)\s+\S|eyJ[\w-]+\.[\w-]+|-----BEGIN )", re.I
)


def secret_key_problem(key: str) -> str | None:
    """Why `key` looks like it names a secret, or None."""
    folded = "".join(c for c in key.lower() if c.isalnum())
    if folded in _SECRET_KEYS:
        return f"{key!r} looks like a secret"
    for fragment in _SECRET_FRAGMENTS:
        if fragment in folded:
            return f"{key!r} looks like a secret ({fragment})"
    return None


def body_preview(document: BodyDocument, paths: Sequence[tuple[str, ...]]) -> BodyPreview:
    """The preview of `document`'s listed `paths`; never raises.

    A path that the body lacks (or that crosses a non-object) is simply absent; a body
    that is not JSON gives an empty preview.
    """
    fields: dict[str, object] = {}
    truncated = False
    size = 2  # "{}"
    value = document.value if document.available else None
    for path in paths:
        found, raw = _lookup(value, path)
        if not found or any(secret_key_problem(part) for part in path):
            continue
        shown, clipped = _shown(raw, 0)
        truncated |= clipped
        name = ".".join(path)
        item = len(_compact({name: shown})) - 2 + (1 if fields else 0)
        if size + item > MAX_PREVIEW_BYTES:
            truncated = True
            continue
        fields[name] = shown
        size += item
    return BodyPreview(MappingProxyType(fields), truncated)


def _lookup(value: object, path: tuple[str, ...]) -> tuple[bool, object]:
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _shown(value: object, depth: int) -> tuple[object, bool]:
    """`value` made safe to show, and whether anything was shortened."""
    if isinstance(value, str):
        if _CREDENTIAL.match(value):
            return REDACTED, False
        if len(value) > MAX_STRING_CHARS:
            return value[:MAX_STRING_CHARS] + "…", True
        return value, False
    if isinstance(value, Decimal):
        return _number(value), False
    if value is None or isinstance(value, bool | int):
        return value, False
    if depth >= MAX_DEPTH and isinstance(value, dict | list):
        return "[nested]", True
    clipped = False
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            if secret_key_problem(str(key)) is not None:
                continue
            out[str(key)], more = _shown(item, depth + 1)
            clipped |= more
        return out, clipped
    if isinstance(value, list):
        items: list[object] = []
        for item in value:
            shown, more = _shown(item, depth + 1)
            items.append(shown)
            clipped |= more
        return items, clipped
    return str(value)[:MAX_STRING_CHARS], False


def _number(value: Decimal) -> float | str:
    if value.is_finite():
        as_float = float(value)
        if Decimal(repr(as_float)) == value:
            return as_float
    return str(value)


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
