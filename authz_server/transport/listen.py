"""Bind a grpc.aio server to `HOST:PORT`, or say in one line why it cannot.

grpc reports a failed bind as a bare `RuntimeError` (and logs its own line from C++), so
the address is first tried with a plain socket set up the way grpc sets up its listener
(SO_REUSEADDR, SO_REUSEPORT for the workers of `serve --workers N`). If the operating
system refuses every address the host resolves to, grpc would too: the `ConfigError`
names the flag, the address, the system's reason and what to do, and grpc is never asked.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

from authz_server.core.errors import ConfigError

if TYPE_CHECKING:  # the `serve --workers` supervisor checks ports without loading grpc
    import grpc

__all__ = ["add_grpc_port", "check_listen"]

_HINTS = {
    errno.EADDRINUSE: "another process is listening there: stop it or choose another port",
    errno.EADDRNOTAVAIL: "no interface of this host has that address: use one it has, or 0.0.0.0",
    errno.EACCES: "ports below 1024 need privileges: choose a port above 1023",
}


def add_grpc_port(
    server: grpc.aio.Server,
    flag: str,
    listen: str,
    credentials: grpc.ServerCredentials | None = None,
    *,
    reuse_port: bool = False,
) -> int:
    """Add `listen` to `server` (TLS with `credentials`); returns the bound port."""
    check_listen(flag, listen, reuse_port=reuse_port)
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError:  # lost a race for the port since the probe: same answer
        port = 0
    if port == 0:
        raise ConfigError(
            f"{flag} {listen}: cannot listen (port in use or address not on this host): "
            "choose another address"
        )
    return port


def check_listen(flag: str, listen: str, *, reuse_port: bool = False) -> None:
    """ConfigError when no address `listen` resolves to can be bound now."""
    problem = _bind_problem(listen, reuse_port=reuse_port)
    if problem is not None:
        raise ConfigError(f"{flag} {listen}: cannot listen: {problem}")


def _bind_problem(listen: str, *, reuse_port: bool) -> str | None:
    """Why no address of `listen` can be bound, or None when one can."""
    host, _, port_text = listen.rpartition(":")
    name = host.strip("[]") or None
    if not port_text.isdigit() or int(port_text) > 65535:
        return None  # a malformed address is `Settings.validate`'s (and grpc's) to refuse
    try:
        addresses = socket.getaddrinfo(
            name, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        return f"cannot resolve {name!r}: {error.strerror}"
    problem = None
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(address)
        except OSError as error:
            hint = _HINTS.get(error.errno or 0)
            problem = f"{error.strerror or error}" + (f" ({hint})" if hint else "")
            continue
        return None  # grpc needs only one of the addresses
    return problem
