"""The console listener: HTTPS with mutual TLS on its own address (`--console-listen`).

The handshake requires a client certificate chaining to one of the trusted CAs, pooled over
every trust domain (`TrustBundles.roots_pem`); a client without one never reaches a page.
Each request then re-verifies that certificate per trust domain (`console.auth`), so the
pool only keeps strangers out early. The certificate and the client CAs can change while
serving (`ConsoleServer.update`): every handshake picks the current `SSLContext` through
the SNI callback, which OpenSSL runs for each ClientHello, with or without a server name.

There is no plaintext mode: an approval console without client certificates would let
anyone who can reach the port approve actions.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from authz_server.admin.address import listen_host
from authz_server.admin.operations import AdminOperations
from authz_server.check.snapshot import Snapshot
from authz_server.console.app import build_console
from authz_server.console.auth import ConsoleAuthenticator
from authz_server.core.clock import Clock
from authz_server.core.errors import ConfigError, quote
from authz_server.identity.bundles import TrustBundles
from authz_server.transport.tls import ServerCertificate, load_certificate_files

__all__ = ["ConsoleServer", "ConsoleTls", "console_certificate", "start_console"]

log = logging.getLogger(__name__)


def console_certificate(tls_cert: str, tls_key: str) -> ServerCertificate:
    """`--console-tls-cert` (chain, leaf first) and `--console-tls-key`; ConfigError if bad."""
    try:
        return load_certificate_files(tls_cert, tls_key)
    except ConfigError as error:
        raise ConfigError(str(error).replace("--tls-", "--console-tls-")) from None


def _context(certificate: ServerCertificate, roots_pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    # ssl loads keys from files only: a private directory that lives for the call.
    with tempfile.TemporaryDirectory(prefix="authz-console-") as directory:
        cert_path, key_path = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert_path.write_bytes(certificate.chain_pem)
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as key_file:
            key_file.write(certificate.key_pem)
        context.load_cert_chain(cert_path, key_path)
    if roots_pem:  # none: no client can complete a handshake (closed)
        context.load_verify_locations(cadata=roots_pem.decode("ascii"))
    return context


@dataclass
class ConsoleTls:
    """The listening `SSLContext`, delegating each handshake to the current one."""

    certificate: ServerCertificate
    roots_pem: bytes
    listening: ssl.SSLContext = field(init=False)
    _current: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self._current = _context(self.certificate, self.roots_pem)
        self.listening = _context(self.certificate, self.roots_pem)
        self.listening.sni_callback = self._select

    def _select(
        self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        connection.context = self._current

    def update(
        self, certificate: ServerCertificate | None = None, roots_pem: bytes | None = None
    ) -> None:
        """Serve `certificate` and/or accept clients of `roots_pem` from the next handshake."""
        certificate = certificate or self.certificate
        roots_pem = self.roots_pem if roots_pem is None else roots_pem
        self._current = _context(certificate, roots_pem)
        self.certificate, self.roots_pem = certificate, roots_pem


@dataclass
class ConsoleServer:
    runner: web.AppRunner
    port: int
    tls: ConsoleTls

    def update_client_cas(self, bundles: TrustBundles) -> None:
        """Accept clients of the trust bundles now in force from the next handshake."""
        self.tls.update(roots_pem=bundles.roots_pem())

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_console(
    listen: str,
    *,
    operations: AdminOperations,
    snapshot_source: Callable[[], Snapshot | None],
    client_ca_bundles: TrustBundles,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    certificate: ServerCertificate | None = None,
    csrf_secret: bytes | None = None,
    clock: Clock | None = None,
) -> ConsoleServer:
    """Bind and start the console on `listen` (`HOST:PORT`); ConfigError when it cannot.

    The serving certificate is `tls_cert`/`tls_key`, else `certificate`. `csrf_secret`
    defaults to a random one for this process: the console's forms are valid against the
    process that rendered them (so run the console in one process).
    """
    try:
        host = listen_host(listen)
    except ConfigError:
        raise ConfigError(f"--console-listen {quote(listen)} must be HOST:PORT") from None
    port = int(listen.rpartition(":")[2])
    if port > 65535:
        raise ConfigError(f"--console-listen {quote(listen)}: the port must be at most 65535")
    if tls_cert and tls_key:
        certificate = console_certificate(tls_cert, tls_key)
    elif tls_cert or tls_key:
        raise ConfigError("--console-tls-cert and --console-tls-key go together")
    if certificate is None:
        raise ConfigError("the console needs --console-tls-cert and --console-tls-key")
    tls = ConsoleTls(certificate, client_ca_bundles.roots_pem())
    authenticator = ConsoleAuthenticator(snapshot_source, operations, clock)
    app = build_console(operations, authenticator, csrf_secret or secrets.token_bytes(32), clock)
    # Pages answer in milliseconds: a drain need not wait long for one in flight.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls.listening)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise ConfigError(
            f"--console-listen {listen}: cannot listen: {error.strerror or error}"
        ) from None
    port = int(runner.addresses[0][1])  # the one bound, when `listen` asked for port 0
    log.info("approval console listening on https://%s:%d (mutual TLS)", host, port)
    return ConsoleServer(runner, port, tls)
