"""Cross-site request forgery defences for the console's state changes.

The console has no cookies: the approver's "session" is the client certificate the
browser presents on every connection, and a browser presents it to us on any request,
also one a hostile page makes it send. So every POST must carry a token that such a page
cannot know:

    token = ISSUED "." base64url(HMAC-SHA256(secret, "authz-console-csrf" | ISSUED | FP))

where FP is the SHA-256 of the client certificate (DER) and ISSUED the Unix second it was
issued. It is rendered into a hidden field of each form, valid for `TOKEN_LIFETIME_S`, only
for the certificate it was made for, and only with this server's secret. On top of the
token, a request whose `Sec-Fetch-Site` is not `same-origin`, or whose `Origin` is neither
the console's own origin nor `null` beside `Sec-Fetch-Site: same-origin`, is refused
(browsers send both; other clients need the token alone).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from authz_server.core.clock import Clock, SystemClock

__all__ = ["MIN_SECRET_BYTES", "TOKEN_LIFETIME_S", "CsrfTokens", "cross_site_problem"]

#: Long enough to work through a queue of approvals without reloading the page.
TOKEN_LIFETIME_S = 12 * 3600
#: Tolerated clock difference for a token issued "in the future" (several workers).
_SKEW_S = 60
MIN_SECRET_BYTES = 32
_LABEL = b"authz-console-csrf"


@dataclass(frozen=True, slots=True)
class CsrfTokens:
    """Issues and checks tokens bound to a client certificate fingerprint."""

    secret: bytes
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the CSRF secret must have at least {MIN_SECRET_BYTES} bytes")

    def issue(self, fingerprint: str) -> str:
        issued = int(self.clock.now().timestamp())
        return f"{issued}.{self._mac(issued, fingerprint)}"

    def problem(self, fingerprint: str, token: str) -> str | None:
        """Why `token` is not valid for `fingerprint` now; None when it is."""
        if not token:
            return "the form carries no CSRF token"
        issued_text, dot, mac = token.partition(".")
        if not dot or not issued_text.isdigit() or len(issued_text) > 12:
            return "the CSRF token is malformed"
        issued = int(issued_text)
        expected = self._mac(issued, fingerprint).encode()
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected):
            return "the CSRF token is not valid for this client certificate"
        age = self.clock.now().timestamp() - issued
        if age > TOKEN_LIFETIME_S or age < -_SKEW_S:
            return "the CSRF token has expired: reload the page"
        return None

    def _mac(self, issued: int, fingerprint: str) -> str:
        message = b"|".join((_LABEL, str(issued).encode(), fingerprint.encode()))
        digest = hmac.new(self.secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def cross_site_problem(headers: Mapping[str, str], origin: str) -> str | None:
    """Why a state-changing request looks cross-site; None when it does not.

    `origin` is the console's own (`https://host:port` as the browser addressed it).
    """
    sent_origin = headers.get("Origin")
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return f"request from another site refused (Sec-Fetch-Site: {site[:40]!r})"
    # The pages' `Referrer-Policy: no-referrer` makes browsers send our own form posts with
    # `Origin: null`; that is accepted only when the browser also says `same-origin`.
    masked = sent_origin == "null" and site == "same-origin"
    if sent_origin is not None and sent_origin != origin and not masked:
        return f"cross-origin request from {sent_origin[:200]!r} refused"
    return None
