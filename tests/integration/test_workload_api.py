"""Bundles and the serving SVID from a real Workload API server over a unix socket."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authz_server.runtime.server import RunningServer, start_server
from authz_server.runtime.settings import Settings
from authz_server.tools import devcerts
from tests.integration.support import (
    NOT_SERVING,
    SERVING,
    Client,
    check,
    eventually,
    health,
    http_get,
    outcome,
    peer_certificate,
    readyz,
    request_for,
)
from tests.unit.identity import sources_support as sources
from tests.workload_api_server import Svid, WorkloadApiServer

POLICY = """\
version: 1
identity:
  trust_domains: [example.org, partner.org]
  require_certificate: true
rules:
  - id: orders-read
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*", "spiffe://partner.org/shop/*"]
    effect: allow
"""

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
PARTNER = "spiffe://partner.org/shop/web"
ENVOY = "spiffe://example.org/envoy"


class World:
    """Our CA, a partner CA, and one SVID from each for the Checks."""

    def __init__(self) -> None:
        self.ca = devcerts.mint_ca("example.org")
        self.partner_ca = devcerts.mint_ca("partner.org")
        self.frontend, _ = devcerts.mint_svid(self.ca, FRONTEND)
        self.partner, _ = devcerts.mint_svid(self.partner_ca, PARTNER)
        self.roots = devcerts.pem(self.ca.certificate)

    def server_svid(self) -> Svid:
        return Svid.mint(self.ca, "spiffe://example.org/authz", dns_names=["authz.test"])


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture
def wapi() -> Iterator[WorkloadApiServer]:
    server = WorkloadApiServer().start()
    yield server
    server.stop()


@pytest.fixture
async def authz(tmp_path: Path, wapi: WorkloadApiServer) -> AsyncIterator[RunningServer]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = Settings(
        policy=str(policy),
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        workload_api=wapi.socket,
    )
    running = await start_server(settings)
    yield running
    await running.stop(1.0)


@pytest.fixture
async def channel(authz: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{authz.port}") as channel:
        yield channel


async def test_no_bundles_yet_means_not_serving_and_deny(
    authz: RunningServer, channel: grpc.aio.Channel, wapi: WorkloadApiServer, world: World
) -> None:
    """Until the Workload API answers, health is NOT_SERVING, /readyz 503, Checks denied;
    the first update makes the server serve without a restart."""
    request = request_for(FRONTEND, world.frontend)
    assert await health(channel) == NOT_SERVING
    assert outcome(await check(channel, request)) == "internal_error"
    assert authz.metrics_port is not None
    status, body = await readyz(authz.metrics_port)
    assert status == 503
    assert "waiting for the first Workload API update" in body["checks"]["policy_and_bundles"]

    wapi.publish(world.server_svid(), [world.ca.certificate])
    await eventually(lambda: _serving(channel), "health SERVING after the first update")
    assert outcome(await check(channel, request)) == "allow"
    assert (await readyz(authz.metrics_port))[0] == 200


async def _serving(channel: grpc.aio.Channel) -> bool:
    return await health(channel) == SERVING


async def _outcome(channel: grpc.aio.Channel, principal: str, certificate: object) -> str:
    return outcome(await check(channel, request_for(principal, certificate)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "update",
    [
        pytest.param({}, id="domain-removed"),
        pytest.param({"partner.org": []}, id="empty-bundle"),
    ],
)
async def test_bundle_update_distrusts_a_domain(
    authz: RunningServer,
    channel: grpc.aio.Channel,
    wapi: WorkloadApiServer,
    world: World,
    update: dict[str, list[object]],
) -> None:
    """Each update is the full state: a federated domain left out, or sent with no
    certificates, is no longer trusted; our own domain keeps working."""
    wapi.publish(
        world.server_svid(), [world.ca.certificate], {"partner.org": [world.partner_ca.certificate]}
    )
    await eventually(lambda: _is(channel, PARTNER, world.partner, "allow"), "partner trusted")
    wapi.publish(world.server_svid(), [world.ca.certificate], update)  # type: ignore[arg-type]
    await eventually(
        lambda: _is(channel, PARTNER, world.partner, "certificate_invalid"), "partner distrusted"
    )
    assert await _outcome(channel, FRONTEND, world.frontend) == "allow"
    assert authz.state is not None
    assert "partner.org" not in authz.state.bundles.usable_domains
    assert authz.workload_api is not None
    assert authz.workload_api.restarts == 0  # an update, not a failed source


async def _is(
    channel: grpc.aio.Channel, principal: str, certificate: object, expected: str
) -> bool:
    return await _outcome(channel, principal, certificate) == expected


async def test_failed_source_is_recreated(
    authz: RunningServer, channel: grpc.aio.Channel, wapi: WorkloadApiServer, world: World
) -> None:
    """A non-retryable stream error closes py-spiffe's X509Source; the server keeps the
    last good bundles, recreates the source, and later updates arrive again."""
    wapi.publish(world.server_svid(), [world.ca.certificate])
    await eventually(lambda: _serving(channel), "SERVING")
    assert authz.workload_api is not None
    streams = wapi.streams

    wapi.fail_streams(grpc.StatusCode.INVALID_ARGUMENT)
    await eventually(lambda: authz.workload_api.restarts >= 1, "the source recreated")  # type: ignore[union-attr]
    assert await health(channel) == SERVING
    assert await _outcome(channel, FRONTEND, world.frontend) == "allow"

    wapi.publish(
        world.server_svid(), [world.ca.certificate], {"partner.org": [world.partner_ca.certificate]}
    )
    await eventually(
        lambda: _is(channel, PARTNER, world.partner, "allow"), "update after recreation"
    )
    assert wapi.streams > streams
    assert authz.metrics_port is not None
    _, metrics = await http_get(authz.metrics_port, "/metrics")
    restarts = [
        line
        for line in metrics.splitlines()
        if line.startswith("authz_workload_api_restarts_total")
    ]
    assert restarts and float(restarts[0].split()[-1]) >= 1


@pytest.fixture
async def tls_authz(tmp_path: Path, wapi: WorkloadApiServer) -> AsyncIterator[RunningServer]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = Settings(
        policy=str(policy),
        listen="127.0.0.1:0",
        workload_api=wapi.socket,
        tls_workload_api=True,
        allowed_callers=(ENVOY,),
    )
    running = await start_server(settings)
    yield running
    await running.stop(1.0)


async def test_server_svid_rotates_without_restart(
    tls_authz: RunningServer, wapi: WorkloadApiServer, world: World
) -> None:
    """Before the first SVID no handshake succeeds; after each update a new handshake sees
    the new certificate, and an allowed caller gets decisions over mTLS."""
    envoy = Client(world.ca, ENVOY)
    port = tls_authz.port
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(peer_certificate, port, world.roots, envoy)

    first, second = world.server_svid(), world.server_svid()
    wapi.publish(first, [world.ca.certificate])
    await eventually(lambda: _serves(port, world, envoy, first), "first SVID served")
    async with envoy.channel(port, world.roots) as channel:
        assert await _outcome(channel, FRONTEND, world.frontend) == "allow"

    wapi.publish(second, [world.ca.certificate])
    await eventually(lambda: _serves(port, world, envoy, second), "rotated SVID served")
    async with envoy.channel(port, world.roots) as channel:
        assert await _outcome(channel, FRONTEND, world.frontend) == "allow"


async def _serves(port: int, world: World, client: Client, svid: Svid) -> bool:
    try:
        seen = await asyncio.to_thread(peer_certificate, port, world.roots, client)
    except (ssl.SSLError, OSError):
        return False
    return seen.serial_number == svid.chain[0].serial_number


JWT_POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
  sources: [jwt_svid]
  jwt_svid: {audiences: [orders]}
rules:
  - id: orders-read
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
"""


@pytest.fixture
async def jwt_authz(tmp_path: Path, wapi: WorkloadApiServer) -> AsyncIterator[RunningServer]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(JWT_POLICY)
    settings = Settings(policy=str(policy), listen="127.0.0.1:0", workload_api=wapi.socket)
    running = await start_server(settings)
    yield running
    await running.stop(1.0)


def _bearer(key: ec.EllipticCurvePrivateKey, kid: str) -> Any:
    now = int(time.time())
    token = sources.jwt(key, kid=kid, payload=sources.claims(exp=now + 300, iat=now))
    return request_for(headers={"authorization": f"Bearer {token}"})


@pytest.mark.parametrize(
    "update",
    [
        pytest.param({}, id="domain-removed"),
        pytest.param({"example.org": {}}, id="empty-key-set"),
        pytest.param({"example.org": b""}, id="empty-bytes"),
        pytest.param("rotated", id="key-rotated-out"),
    ],
)
async def test_jwt_svid_keys_come_from_the_workload_api(
    jwt_authz: RunningServer, wapi: WorkloadApiServer, world: World, update: object
) -> None:
    """With no bundle file, a JWT-SVID signed by a key only the Workload API serves is
    verified; an update without that key (each update is the full set) distrusts it."""
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    wapi.publish(world.server_svid(), [world.ca.certificate])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{jwt_authz.port}") as channel:
        await eventually(lambda: _serving(channel), "SERVING")
        request = _bearer(key, "k1")
        assert outcome(await check(channel, request)) == "certificate_invalid"  # no keys yet

        wapi.publish_jwt({"example.org": {"k1": key.public_key()}})
        await eventually(lambda: _decides(channel, request, "allow"), "the key trusted")
        assert jwt_authz.state is not None
        assert set(jwt_authz.state.bundles.jwt_authorities["example.org"]) == {"k1"}

        if update == "rotated":
            update = {"example.org": {"k2": other.public_key()}}
        wapi.publish_jwt(update)  # type: ignore[arg-type]
        await eventually(
            lambda: _decides(channel, request, "certificate_invalid"), "the key distrusted"
        )
    assert jwt_authz.workload_api is not None and jwt_authz.workload_api.jwt is not None
    assert jwt_authz.workload_api.jwt.restarts == 0


async def _decides(channel: grpc.aio.Channel, request: Any, expected: str) -> bool:
    return outcome(await check(channel, request)) == expected


async def test_failed_jwt_stream_is_reopened(
    jwt_authz: RunningServer, wapi: WorkloadApiServer, world: World
) -> None:
    """A non-retryable error ends py-spiffe's JWT bundle stream; the server keeps the last
    keys, reopens the stream, and later updates arrive again."""
    key, rotated = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    wapi.publish(world.server_svid(), [world.ca.certificate])
    wapi.publish_jwt({"example.org": {"k1": key.public_key()}})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{jwt_authz.port}") as channel:
        await eventually(lambda: _decides(channel, _bearer(key, "k1"), "allow"), "k1 trusted")
        watcher = jwt_authz.workload_api.jwt if jwt_authz.workload_api else None
        assert watcher is not None

        wapi.fail_streams(grpc.StatusCode.INVALID_ARGUMENT)
        await eventually(lambda: watcher.restarts >= 1, "the JWT stream reopened")
        assert outcome(await check(channel, _bearer(key, "k1"))) == "allow"  # last keys kept

        wapi.publish_jwt({"example.org": {"k2": rotated.public_key()}})
        await eventually(
            lambda: _decides(channel, _bearer(rotated, "k2"), "allow"), "update after reopening"
        )
        assert outcome(await check(channel, _bearer(key, "k1"))) == "certificate_invalid"
