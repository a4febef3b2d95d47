"""A bundle CA that cannot sign, on a real server: logged with its source, shown in
/readyz and in `authz_trust_domains{state="unusable"}`, but never refused."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from authz_server.runtime.server import RunningServer, start_server
from authz_server.runtime.settings import Settings
from authz_server.tools import devcerts
from tests.integration.support import check, eventually, outcome, readyz, request_for
from tests.workload_api_server import Svid, WorkloadApiServer

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
PARTNER = "spiffe://partner.org/shop/web"
POLICY = """\
version: 1
identity: {trust_domains: [example.org, partner.org], require_certificate: true}
rules:
  - id: orders-read
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*", "spiffe://partner.org/shop/*"]
    effect: allow
"""
OURS = devcerts.mint_ca("example.org")
ROTATED_IN = devcerts.mint_ca("example.org", name="rotated-in CA", key_usage="none")
PARTNER_CA = devcerts.mint_ca("partner.org", key_usage="no_cert_sign")
LOGGERS = ("authz_server.identity.authorities", "authz_server.identity.workload_api")


def _gauge(running: RunningServer, state: str) -> float | None:
    return running.metrics.registry.get_sample_value("authz_trust_domains", {"state": state})


def _warnings(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    """Warnings of the bundle loaders containing `needle`, from start-up on."""
    records = caplog.get_records("setup") + caplog.get_records("call")
    return [
        r.getMessage()
        for r in records
        if r.levelno == logging.WARNING and r.name in LOGGERS and needle in r.getMessage()
    ]


async def _decides(running: RunningServer, principal: str, certificate: object) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        return outcome(await check(channel, request_for(principal, certificate)))  # type: ignore[arg-type]


@pytest.fixture
async def from_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[RunningServer]:
    """Our bundle (PEM) holds a good CA and one without keyUsage; the partner's (SPIFFE
    JSON) holds only a CA without keyCertSign."""
    (tmp_path / "ours.pem").write_bytes(
        devcerts.pem(OURS.certificate) + devcerts.pem(ROTATED_IN.certificate)
    )
    der = PARTNER_CA.certificate.public_bytes(Encoding.DER)
    keys = [{"use": "x509-svid", "x5c": [base64.b64encode(der).decode()]}]
    (tmp_path / "partner.json").write_text(json.dumps({"keys": keys}))
    (tmp_path / "policy.yaml").write_text(POLICY)
    settings = Settings(
        policy=str(tmp_path / "policy.yaml"),
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        trust_bundles={
            "example.org": str(tmp_path / "ours.pem"),
            "partner.org": str(tmp_path / "partner.json"),
        },
    )
    caplog.set_level(logging.WARNING)
    running = await start_server(settings)
    yield running
    await running.stop(1.0)


async def test_file_bundles_warn_and_stay_in_force(
    from_files: RunningServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each bad CA is logged with its file; /readyz lists it per domain; the partner, whose
    only CA cannot sign, is unusable; our good CA still verifies our callers."""
    running = from_files
    (ours,) = _warnings(caplog, "CN=rotated-in CA")
    assert ours.startswith(f"trust bundle '{tmp_path / 'ours.pem'}': trust domain 'example.org'")
    assert "no keyUsage extension" in ours
    (partner,) = _warnings(caplog, "trust domain 'partner.org'")
    assert partner.startswith(f"trust bundle '{tmp_path / 'partner.json'}'")
    assert "keyUsage lacks keyCertSign" in partner

    assert running.metrics_port is not None
    status, body = await readyz(running.metrics_port)
    assert status == 200  # warned, not refused: the server still decides
    warnings = body["detail"]["trust_bundle_warnings"]
    assert sorted(warnings) == ["example.org", "partner.org"]
    assert "CN=rotated-in CA" in warnings["example.org"][0]
    assert "keyUsage lacks keyCertSign" in warnings["partner.org"][0]
    assert (_gauge(running, "trusted"), _gauge(running, "unusable")) == (1, 1)
    assert _gauge(running, "distrusted") == 0

    frontend, _ = devcerts.mint_svid(OURS, FRONTEND)
    assert await _decides(running, FRONTEND, frontend) == "allow"
    partner_leaf, _ = devcerts.mint_svid(PARTNER_CA, PARTNER)
    assert await _decides(running, PARTNER, partner_leaf) == "certificate_invalid"


@pytest.fixture
def wapi() -> Iterator[WorkloadApiServer]:
    server = WorkloadApiServer().start()
    yield server
    server.stop()


@pytest.fixture
async def from_workload_api(
    tmp_path: Path, wapi: WorkloadApiServer, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[RunningServer]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    settings = Settings(
        policy=str(tmp_path / "policy.yaml"),
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        workload_api=wapi.socket,
    )
    caplog.set_level(logging.WARNING)
    running = await start_server(settings)
    yield running
    await running.stop(1.0)


async def test_workload_api_bundles_warn_once_per_problem(
    from_workload_api: RunningServer, wapi: WorkloadApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A federated bundle whose CA cannot sign is logged naming the Workload API socket,
    once however many updates repeat it, and reported until a good CA replaces it."""
    running = from_workload_api
    source = running.workload_api
    assert source is not None and running.metrics_port is not None
    svid = Svid.mint(OURS, "spiffe://example.org/authz")
    for expected in (1, 2):  # the second update repeats the same bundles
        wapi.publish(svid, [OURS.certificate], {"partner.org": [PARTNER_CA.certificate]})
        await eventually(lambda n=expected: source.updates >= n, f"update {expected}")  # type: ignore[misc]
    (line,) = _warnings(caplog, "trust domain 'partner.org'")
    assert line.startswith(f"Workload API {wapi.socket}: trust domain 'partner.org': CA ")
    assert "keyUsage lacks keyCertSign" in line
    body = (await readyz(running.metrics_port))[1]
    assert list(body["detail"]["trust_bundle_warnings"]) == ["partner.org"]
    assert _gauge(running, "unusable") == 1

    good_partner = devcerts.mint_ca("partner.org")
    wapi.publish(svid, [OURS.certificate], {"partner.org": [good_partner.certificate]})
    await eventually(lambda: source.updates >= 3, "update 3")
    body = (await readyz(running.metrics_port))[1]
    assert body["detail"]["trust_bundle_warnings"] == {}
    assert (_gauge(running, "trusted"), _gauge(running, "unusable")) == (2, 0)
