"""The action fingerprint: what one human approval is for (docs/policy/approvals.md#fingerprint).

An approval covers exactly one action: the same principal, method, host, path, query and
body. The fingerprint is sha256 over a length-prefixed encoding of those fields, so no two
different field tuples can encode to the same bytes (`a` + `bc` ≠ `ab` + `c`); its hex form
is the approval id.

The query is canonical only in parameter order: parameters are sorted by name (bytewise,
stable, so repeated names keep their relative order — `a=1&a=2` and `a=2&a=1` stay different
actions, since backends disagree about which one wins) and their bytes are kept exactly as
sent, undecoded. The body enters through its digest; a missing body and an empty body are
different actions.
"""

from __future__ import annotations

import hashlib

__all__ = ["action_fingerprint", "body_digest", "canonical_query"]

_DOMAIN = b"authz-server/action/v1\x00"


def body_digest(body: bytes | None) -> str | None:
    """`sha256:<hex>` of the body bytes (the audit log's format), None when there is no body."""
    return None if body is None else "sha256:" + hashlib.sha256(body).hexdigest()


def canonical_query(query: str) -> str:
    """Parameters stably sorted by name, bytes unchanged (no decoding, empties kept)."""
    if not query:
        return ""
    params = query.split("&")
    params.sort(key=lambda p: p.partition("=")[0].encode("utf-8", "surrogatepass"))
    return "&".join(params)


def action_fingerprint(
    principal: str, method: str, host: str, path: str, query: str, body: bytes | None
) -> str:
    """The approval id of one action: 64 hex characters.

    `method`, `host` and `path` are taken as the request view has them (upper-case method,
    lower-case host without port, canonical path without query).
    """
    digest = hashlib.sha256(_DOMAIN)
    for text in (principal, method, host, path, canonical_query(query)):
        _field(digest, text.encode("utf-8", "surrogatepass"))
    body_hash = body_digest(body)
    if body_hash is None:
        digest.update(b"\x00")
    else:
        digest.update(b"\x01")
        _field(digest, body_hash.encode("ascii"))
    return digest.hexdigest()


def _field(digest: hashlib._Hash, data: bytes) -> None:
    digest.update(len(data).to_bytes(8, "big"))
    digest.update(data)
