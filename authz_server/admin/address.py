"""Admin listen addresses: `HOST:PORT` / `[V6]:PORT`, and what counts as loopback."""

from __future__ import annotations

import ipaddress

from authz_server.core.errors import ConfigError, quote

__all__ = ["DEFAULT_ADMIN_LISTEN", "is_loopback", "listen_host"]

DEFAULT_ADMIN_LISTEN = "127.0.0.1:9192"


def listen_host(listen: str) -> str:
    """The host part of `HOST:PORT` or `[V6]:PORT`; ConfigError for anything else."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"admin address {quote(listen)} must be HOST:PORT")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    """True only for a literal loopback IP (names could resolve anywhere)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
