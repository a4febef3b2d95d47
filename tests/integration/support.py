"""Helpers for the operations tests: Checks, probes over HTTP, TLS handshakes, waiting."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz_server.tools import devcerts
from tests.conftest import make_check_request

CHECK = "/envoy.service.auth.v3.Authorization/Check"


def serve_process(policy: Path, port: int, *extra: str, **popen: Any) -> subprocess.Popen[Any]:
    """`python -m authz_server serve` on loopback `port`, metrics on an ephemeral port."""
    argv = [sys.executable, "-m", "authz_server", "serve", "--policy", str(policy)]
    argv += ["--listen", f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0", *extra]
    return subprocess.Popen(argv, **popen)


def envoy_field(certificate: x509.Certificate) -> str:
    """The certificate as Envoy forwards it in `source.certificate` (URL-encoded PEM)."""
    return urllib.parse.quote(devcerts.pem(certificate).decode(), safe="")


def request_for(principal: str = "", certificate: x509.Certificate | None = None, **kw: Any) -> Any:
    """A CheckRequest for GET orders.internal/v1/orders/1 from `principal`."""
    kw.setdefault("path", "/v1/orders/1")
    return make_check_request(
        principal=principal,
        certificate=envoy_field(certificate) if certificate is not None else "",
        **kw,
    )


async def check(channel: grpc.aio.Channel, request: Any) -> Any:
    raw = await channel.unary_unary(CHECK)(request.SerializeToString(), timeout=5)
    return external_auth_pb2.CheckResponse.FromString(raw)


def outcome(response: Any) -> str:
    """ "allow", or the deny reason from the JSON body."""
    if response.status.code == 0:
        return "allow"
    return str(json.loads(response.denied_response.body)["reason"])


async def health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return int(reply.status)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 20.0
) -> None:
    """Poll `condition` until it holds; fail after `timeout` (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """(status, body) of one HTTP/1.1 request to 127.0.0.1:`port`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, body = await http_get(port, "/readyz")
    return status, json.loads(body)


class Client:
    """A client identity: its certificate and key as files, for gRPC or raw TLS."""

    def __init__(self, authority: devcerts.Authority, spiffe_id: str) -> None:
        self.certificate, self.key = devcerts.mint_svid(authority, spiffe_id)
        self.cert_pem = devcerts.pem(self.certificate)
        self.key_pem = devcerts.key_pem(self.key)

    def channel(self, port: int, roots: bytes) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(roots, self.key_pem, self.cert_pem)
        return grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            credentials,
            options=[("grpc.ssl_target_name_override", "authz.test")],
        )


def peer_certificate(port: int, roots: bytes, client: Client | None) -> x509.Certificate:
    """The certificate a new TLS handshake with the server presents (raises ssl.SSLError)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=roots.decode())
    context.set_alpn_protocols(["h2"])
    if client is not None:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "c.pem").write_bytes(client.cert_pem)
            (Path(tmp) / "k.pem").write_bytes(client.key_pem)
            context.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)
