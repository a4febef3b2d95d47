"""Compiled matchers for the route fields of a rule: hosts and methods.

Each `compile_*` validates once at load time and raises ValueError quoting the bad input;
what it returns does only comparisons on the hot path. (Principal patterns are identity's:
`identity/patterns.py`.)

- hosts: `orders.internal` exactly, or `*.internal` for one or more labels below the
  suffix, never the apex itself. Lower-cased; a port is an error (ports are ignored).
- methods: HTTP tokens, upper-cased (`get` is `GET`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz_server.core.errors import quote

__all__ = ["HostPattern", "compile_host_pattern", "compile_method"]

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


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
