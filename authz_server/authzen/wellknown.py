"""`GET /.well-known/authzen-configuration`: where the endpoints are (PDP metadata).

`policy_decision_point` is `--authzen-public-url` when given (an `https://host[:port]`
URL, checked at start), else the scheme and `Host` of the request itself: a caller learns
only the address it already used. Only the two evaluation endpoints are listed: the
search APIs are not implemented, and an absent endpoint tells a PEP exactly that.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from authz_server.core.errors import ConfigError, quote

__all__ = [
    "CONFIGURATION_PATH",
    "EVALUATIONS_PATH",
    "EVALUATION_PATH",
    "check_public_url",
    "configuration",
    "request_base_url",
]

EVALUATION_PATH = "/access/v1/evaluation"
EVALUATIONS_PATH = "/access/v1/evaluations"
CONFIGURATION_PATH = "/.well-known/authzen-configuration"

#: A `Host` header we are willing to repeat: a name or an IP literal, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


def configuration(base_url: str) -> dict[str, str]:
    return {
        "policy_decision_point": base_url,
        "access_evaluation_endpoint": base_url + EVALUATION_PATH,
        "access_evaluations_endpoint": base_url + EVALUATIONS_PATH,
    }


def request_base_url(secure: bool, host: str | None) -> str | None:
    """`https://HOST` (or `http://` for a plaintext loopback listener); None for a bad Host."""
    if host is None or _HOST.fullmatch(host) is None:
        return None
    return f"{'https' if secure else 'http'}://{host.lower()}"


def check_public_url(url: str) -> str:
    """The PDP identifier as configured, without a trailing slash; ConfigError otherwise."""
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or not parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or _HOST.fullmatch(parts.netloc) is None
    ):
        raise ConfigError(
            f"AuthZEN public URL {quote(url)} must be https://HOST[:PORT], without path, "
            "query or fragment"
        )
    return f"https://{parts.netloc.lower()}"
