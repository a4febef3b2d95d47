"""`start_authzen`: the AuthZEN listener on the event loop the gRPC Check server runs on.

It shares the Check path's `AuthzenService` parts (pipeline, snapshot holder, audit log,
metrics), so there is one engine and one policy in force. Transport, each checked before
binding (`ConfigError`):

    credentials given          mutual TLS; every caller authenticated (caller.py)
    insecure_local             plaintext, only on a literal loopback IP; every caller is
                               the local PEP, trusted to ask about anyone (demos only:
                               anyone who can open a socket on the host can ask)
    neither, or plaintext on any other address                  → refused
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from aiohttp import web

from authz_server.authzen.app import Limits, create_app
from authz_server.authzen.caller import CallerAuthenticator
from authz_server.authzen.decide import AuthzenService
from authz_server.authzen.handlers import AuthzenHandler
from authz_server.authzen.tls import ServerTls
from authz_server.authzen.wellknown import check_public_url
from authz_server.core.clock import Clock
from authz_server.core.errors import ConfigError, quote
from authz_server.transport.tls import TlsCredentials

__all__ = ["AuthzenServer", "parse_listen", "start_authzen"]

log = logging.getLogger(__name__)


@dataclass
class AuthzenServer:
    runner: web.AppRunner
    port: int
    handler: AuthzenHandler
    tls: ServerTls | None

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to the shutdown timeout)."""
        await self.runner.cleanup()


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` → (host, port); ConfigError otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"AuthZEN listen address {quote(listen)} must be HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name could resolve anywhere


async def start_authzen(
    listen: str,
    service: AuthzenService,
    *,
    credentials: TlsCredentials | None = None,
    insecure_local: bool = False,
    public_url: str | None = None,
    limits: Limits | None = None,
    reuse_port: bool = False,
    shutdown_timeout: float = 5.0,
    clock: Clock | None = None,
) -> AuthzenServer:
    """Bind and serve; raises ConfigError (nothing bound) for a refused configuration."""
    host, port = parse_listen(listen)
    if credentials is None and not insecure_local:
        raise ConfigError(
            "the AuthZEN listener needs TLS credentials (its own certificate or the Check "
            "listener's); plaintext only with --authzen-insecure-local on a loopback address"
        )
    if credentials is not None and insecure_local:
        raise ConfigError("--authzen-insecure-local is plaintext: it does not combine with TLS")
    if insecure_local and not _loopback(host):
        raise ConfigError(
            f"refusing plaintext AuthZEN on {quote(listen)}: --authzen-insecure-local binds "
            "only a loopback IP (127.0.0.1, ::1)"
        )
    base_url = check_public_url(public_url) if public_url else None
    tls = ServerTls(credentials) if credentials is not None else None
    authenticator = CallerAuthenticator() if tls is not None else None
    handler = AuthzenHandler(service, authenticator, clock)
    app = create_app(handler, secure=tls is not None, public_url=base_url, limits=limits)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        host,
        port,
        ssl_context=tls.context() if tls is not None else None,
        reuse_port=reuse_port or None,
    )
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise ConfigError(f"AuthZEN: cannot listen on {quote(listen)}: {error}") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info(
        "AuthZEN listening on port %d (%s)",
        bound,
        "mTLS" if tls is not None else "plaintext, loopback, every caller trusted",
    )
    return AuthzenServer(runner, bound, handler, tls)
