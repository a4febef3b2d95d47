"""mTLS on the Check listener from files: who may call, and certificate rotation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from authz_server.runtime.server import RunningServer, start_server
from authz_server.runtime.settings import Settings
from authz_server.tools import devcerts
from tests.integration.support import (
    SERVING,
    Client,
    check,
    eventually,
    health,
    outcome,
    peer_certificate,
    request_for,
)

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
POLICY = """\
version: 1
identity: {trust_domains: [example.org]}
rules:
  - id: orders-read
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
"""


@dataclass
class Pki:
    ours: devcerts.Authority
    partner: devcerts.Authority
    dir: Path

    @property
    def roots(self) -> bytes:
        return devcerts.pem(self.ours.certificate)

    def server_files(self) -> devcerts.x509.Certificate:
        certificate, key = devcerts.mint_svid(
            self.ours, "spiffe://example.org/authz", dns_names=["authz.test"]
        )
        (self.dir / "server.pem").write_bytes(devcerts.pem(certificate))
        (self.dir / "server.key").write_bytes(devcerts.key_pem(key))
        return certificate


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, Pki]]:
    pki = Pki(devcerts.mint_ca("example.org"), devcerts.mint_ca("partner.org"), tmp_path)
    pki.server_files()
    (tmp_path / "ours.pem").write_bytes(pki.roots)
    (tmp_path / "partner.pem").write_bytes(devcerts.pem(pki.partner.certificate))
    # The handshake accepts both CAs (one pooled list, as gRPC requires); CallerGuard then
    # verifies each caller against its own trust domain's bundle only.
    (tmp_path / "client-ca.pem").write_bytes(pki.roots + devcerts.pem(pki.partner.certificate))
    (tmp_path / "policy.yaml").write_text(POLICY)
    settings = Settings(
        policy=str(tmp_path / "policy.yaml"),
        listen="127.0.0.1:0",
        trust_bundles={
            "example.org": str(tmp_path / "ours.pem"),
            "partner.org": str(tmp_path / "partner.pem"),
        },
        tls_cert=str(tmp_path / "server.pem"),
        tls_key=str(tmp_path / "server.key"),
        tls_client_ca=str(tmp_path / "client-ca.pem"),
        allowed_callers=("spiffe://example.org/envoy/*",),
        reload_interval=0.05,
    )
    running = await start_server(settings)
    yield running, pki
    await running.stop(1.0)


def _client(authority: devcerts.Authority, spiffe_id: str, **options: Any) -> Client:
    """A client whose SVID is minted with `mint_svid` options (the bad variants)."""
    client = Client(authority, spiffe_id)
    client.certificate, client.key = devcerts.mint_svid(authority, spiffe_id, **options)
    client.cert_pem, client.key_pem = devcerts.pem(client.certificate), devcerts.key_pem(client.key)
    return client


CALLERS: list[object] = [
    pytest.param(lambda p: Client(p.ours, "spiffe://example.org/envoy/front"), None, id="allowed"),
    pytest.param(
        lambda p: Client(p.ours, "spiffe://example.org/ns/shop/sa/frontend"),
        "not_allowed",
        id="other-spiffe-id",
    ),
    pytest.param(
        lambda p: Client(p.partner, "spiffe://example.org/envoy/front"),
        "certificate_invalid",
        id="partner-ca-minting-our-id",
    ),
    pytest.param(
        lambda p: Client(p.partner, "spiffe://partner.org/envoy/front"),
        "not_allowed",
        id="partner-identity",
    ),
    # gRPC reports no peer SPIFFE ID for a URI SAN without a path; the guard refuses it.
    pytest.param(
        lambda p: Client(p.ours, "spiffe://example.org"),
        "certificate_invalid",
        id="bare-trust-domain",
    ),
    pytest.param(
        lambda p: _client(p.ours, "spiffe://example.org/envoy/front", eku="client_auth"),
        "certificate_invalid",
        id="eku-client-auth-only",
    ),
    pytest.param(
        lambda p: _client(p.ours, "spiffe://example.org/envoy/front", key_usage_critical=False),
        "certificate_invalid",
        id="key-usage-not-critical",
    ),
]


@pytest.mark.parametrize(("make", "refused"), CALLERS)
async def test_only_allowed_callers_get_decisions(
    tls_server: tuple[RunningServer, Pki],
    make: Callable[[Pki], Client],
    refused: str | None,
) -> None:
    """An allowed, verified caller gets a decision; any other gets PERMISSION_DENIED and
    no decision; a partner CA minting our ID fails the per-trust-domain verification."""
    running, pki = tls_server
    ours = Client(pki.ours, FRONTEND)
    async with make(pki).channel(running.port, pki.roots) as channel:
        if refused is None:
            assert outcome(await check(channel, request_for(FRONTEND, ours.certificate))) == "allow"
            assert running.service.decisions == 1
            return
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await check(channel, request_for(FRONTEND, ours.certificate))
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert running.service.decisions == 0
        rejections = running.metrics.registry.get_sample_value(
            "authz_caller_rejections_total", {"reason": refused}
        )
        assert rejections == 1
        assert await health(channel) == SERVING  # health stays open to TLS callers


async def test_no_client_certificate_is_refused(tls_server: tuple[RunningServer, Pki]) -> None:
    """Without a client certificate the handshake fails: the call never reaches Check."""
    running, pki = tls_server
    credentials = grpc.ssl_channel_credentials(pki.roots)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{running.port}",
        credentials,
        options=[("grpc.ssl_target_name_override", "authz.test")],
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await check(channel, request_for(FRONTEND))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert running.service.decisions == 0


async def test_plaintext_is_refused(tls_server: tuple[RunningServer, Pki]) -> None:
    """A plaintext client cannot talk to the TLS listener."""
    running, _ = tls_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await check(channel, request_for(FRONTEND))


async def test_certificate_files_rotate_without_restart(
    tls_server: tuple[RunningServer, Pki],
) -> None:
    """New --tls-cert/--tls-key files are served from the next handshake on."""
    running, pki = tls_server
    envoy = Client(pki.ours, "spiffe://example.org/envoy/front")
    first = await asyncio.to_thread(peer_certificate, running.port, pki.roots, envoy)
    rotated = pki.server_files()
    assert rotated.serial_number != first.serial_number

    async def serves_rotated() -> bool:
        seen = await asyncio.to_thread(peer_certificate, running.port, pki.roots, envoy)
        return seen.serial_number == rotated.serial_number

    await eventually(serves_rotated, "the rotated certificate served")
