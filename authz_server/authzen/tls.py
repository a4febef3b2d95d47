"""Server-side TLS for the AuthZEN listener, following a `tls.TlsCredentials` as it changes.

The listener takes its certificate and client CAs from a `TlsCredentials`: the Check
listener's own (same SVID, same pooled roots of the trust bundles, rotated together) or
one of its own (`--authzen-tls-cert/--authzen-tls-key`, roots following bundle reloads).
Python's `ssl` cannot swap a listening context, so every handshake passes through
`sni_callback` (called for every ClientHello, with or without SNI), which hands the
connection the context built from the credentials in force, rebuilt only when they
changed. Connections already open keep their certificate, as TLS does.

The handshake requires a client certificate chaining to one of the pooled roots; which
trust domain's root it must chain to is checked after the handshake (`caller.py`).
`ssl` loads a key only from a file: it is written to a private temporary directory (in
memory, /dev/shm, where there is one), loaded and removed at once.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from pathlib import Path

from authz_server.transport.tls import ServerCertificate, TlsCredentials, placeholder_certificate

__all__ = ["ServerTls"]

log = logging.getLogger(__name__)

#: tmpfs, so the key never reaches a disk; a private directory inside it (mode 0700).
_MEMORY_DIR = "/dev/shm"  # noqa: S108


class ServerTls:
    """The SSL context of the credentials in force; `context()` is what a listener binds."""

    def __init__(self, credentials: TlsCredentials) -> None:
        self._credentials = credentials
        self._placeholder = placeholder_certificate()
        self._built: tuple[ServerCertificate, bytes, ssl.SSLContext] | None = None

    def context(self) -> ssl.SSLContext:
        certificate, roots = self._credentials.certificate, self._credentials.roots_pem
        built = self._built
        if built is not None and built[0] is certificate and built[1] is roots:
            return built[2]
        try:
            context = self._build(certificate, roots)
        except (ssl.SSLError, OSError, ValueError) as error:
            if built is None:
                raise
            log.error("AuthZEN TLS: new credentials unusable, keeping the previous: %s", error)
            return built[2]
        self._built = (certificate, roots, context)
        return context

    def _on_hello(
        self,
        connection: ssl.SSLObject | ssl.SSLSocket,
        server_name: str | None,
        used: ssl.SSLContext,
    ) -> None:
        current = self.context()
        if current is not used:
            connection.context = current

    def _build(self, certificate: ServerCertificate, roots: bytes) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        # No client CA at all: trust only the placeholder, which signs nothing.
        context.load_verify_locations(cadata=(roots or self._placeholder.chain_pem).decode())
        where = _MEMORY_DIR if os.path.isdir(_MEMORY_DIR) else None
        with tempfile.TemporaryDirectory(dir=where, prefix="authzen-tls-") as directory:
            chain, key = Path(directory, "chain.pem"), Path(directory, "key.pem")
            for path, data in ((chain, certificate.chain_pem), (key, certificate.key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            context.load_cert_chain(chain, key)
        context.set_alpn_protocols(["http/1.1"])
        context.sni_callback = self._on_hello
        return context
