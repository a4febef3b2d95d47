"""How a notification is signed, and how a receiver checks it.

    X-Authz-Timestamp: <unix seconds, decimal>
    X-Authz-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body bytes)>

The secret is the content of the endpoint's `secret_file` with surrounding whitespace
removed (a trailing newline from `echo` does not change it). The timestamp is inside the
MAC, so a receiver that refuses timestamps far from its own clock also refuses replays of
an old delivery; within the tolerance, the body's `event_id` identifies duplicates.
`verify` is the receiver's side, the same logic as the snippet in
docs/policy/notifications.md#verify.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "MIN_SECRET_BYTES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "read_secret",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Authz-Signature"
TIMESTAMP_HEADER = "X-Authz-Timestamp"
VERSION = "v1"
#: Shorter secrets are refused: 16 bytes of randomness is the least an HMAC key should have.
MIN_SECRET_BYTES = 16
#: A receiver's default: how far the timestamp may be from its clock.
TOLERANCE_S = 300


def read_secret(path: str) -> bytes:
    """The signing secret in `path`; ValueError saying why it cannot be used."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as error:
        raise ValueError(f"secret_file {path}: {error.strerror or error}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"secret_file {path}: shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def _mac(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, now_s: float) -> dict[str, str]:
    """The two headers that sign `body` at `now_s` (unix seconds)."""
    timestamp = str(int(now_s))
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: f"{VERSION}={_mac(secret, timestamp, body)}",
    }


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    now_s: float,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """True when `body` was signed with `secret` within `tolerance_s` of `now_s`.

    `headers` must look names up case-insensitively (as aiohttp's and most frameworks' do).
    """
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now_s - int(timestamp)) > tolerance_s:
        return False
    expected = f"{VERSION}={_mac(secret, timestamp, body)}"
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
