"""One HTTP/1.1 request over mTLS, written byte for byte.

Unlike `authz_server.tools.stack.https_request`, the request-target, every header (repeats and
several `Host` lines included) and the TLS server name are independent, so a trick can
send `Host: ADMIN.INTERNAL` while the handshake still verifies Envoy as `localhost`.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from authz_server.tools.stack import LOOPBACK, Reply

#: How a refused TLS handshake shows up on the client (TLS 1.3 reports it on first read).
REFUSED_ERRORS = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)


def send(
    port: int,
    *,
    ca: Path,
    cert: tuple[Path, Path] | None,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | None = None,
    timeout: float = 5.0,
) -> Reply:
    """Send the request as given (add `Host` yourself); raises REFUSED_ERRORS on a refusal."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    lines = [f"{method} {target} HTTP/1.1", *(f"{n}: {v}" for n, v in headers)]
    lines.append("Connection: close")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    with (
        socket.create_connection((LOOPBACK, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(payload)
        response = http.client.HTTPResponse(tls, method=method)
        response.begin()
        data = response.read()
        merged: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]},{value}" if key in merged else value
        return Reply(response.status, merged, data)
