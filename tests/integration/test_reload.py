"""Policy and bundle reload on a running server, observed through real Checks."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.request import RequestView
from authz_server.policy.evaluate import Trace
from authz_server.runtime.server import RunningServer, start_server
from authz_server.runtime.settings import Settings
from authz_server.state.memory import MemoryStore
from authz_server.tools import devcerts
from authz_server.tools.stack import free_port
from tests.integration.support import (
    check,
    eventually,
    http_get,
    outcome,
    readyz,
    request_for,
    serve_process,
)

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"

V1 = """\
version: 1
identity: {trust_domains: [example.org]}
rules:
  - id: orders-read
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
"""
V2 = V1.replace("/v1/orders/{id}", "/v2/orders/{id}").replace("orders-read", "orders-v2")
BROKEN = V1 + "  - id: orders-read\n    effect: allow\n"


# --- ways a policy changes on disk ------------------------------------------------------


def edit_in_place(root: Path, text: str) -> None:
    (root / "policy.yaml").write_text(text)


def rename_over(root: Path, text: str) -> None:
    """What editors and `kubectl cp` do: a new file renamed over the old one."""
    (root / ".policy.yaml.tmp").write_text(text)
    os.replace(root / ".policy.yaml.tmp", root / "policy.yaml")


def configmap_layout(root: Path, text: str, generation: int = 1) -> None:
    """kubelet's ConfigMap volume: files are links through `..data`, swapped atomically."""
    version = root / f"..2026_11_29_{generation:02d}"
    version.mkdir()
    (version / "policy.yaml").write_text(text)
    (root / "..data_tmp").symlink_to(version.name)
    os.replace(root / "..data_tmp", root / "..data")
    if not (root / "policy.yaml").is_symlink():
        (root / "policy.yaml").symlink_to("..data/policy.yaml")


def configmap_swap(root: Path, text: str) -> None:
    old = os.readlink(root / "..data")
    configmap_layout(root, text, generation=int(old[-2:]) + 1)
    for path in (root / old).iterdir():
        path.unlink()
    (root / old).rmdir()


Layout = Callable[[Path, str], None]

CHANGES = [
    pytest.param(edit_in_place, edit_in_place, "file", id="file-edited-in-place"),
    pytest.param(edit_in_place, rename_over, "file", id="file-renamed-over"),
    pytest.param(configmap_layout, configmap_swap, "dir", id="configmap-dir-symlink-swap"),
    pytest.param(configmap_layout, configmap_swap, "file", id="configmap-file-symlink-swap"),
]


async def _start(policy: str, **settings: Any) -> RunningServer:
    base: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "reload_interval": 0.05,
    }
    return await start_server(Settings(policy=policy, **{**base, **settings}))


@pytest.fixture
async def stop_later() -> AsyncIterator[list[RunningServer]]:
    servers: list[RunningServer] = []
    yield servers
    for server in servers:
        await server.stop(1.0)


async def _decides(port: int, expected: str, path: str = "/v1/orders/1") -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return outcome(await check(channel, request_for(FRONTEND, path=path))) == expected


@pytest.mark.parametrize(("layout", "change", "given"), CHANGES)
async def test_policy_change_is_picked_up(
    tmp_path: Path, stop_later: list[RunningServer], layout: Layout, change: Layout, given: str
) -> None:
    """However the file changes (in place, renamed over, ConfigMap `..data` swap), the next
    Checks are decided by the new policy."""
    layout(tmp_path, V1)
    target = tmp_path if given == "dir" else tmp_path / "policy.yaml"
    running = await _start(str(target))
    stop_later.append(running)
    assert await _decides(running.port, "allow")

    change(tmp_path, V2)
    await eventually(lambda: _decides(running.port, "no_matching_rule"), "v1 path denied")
    assert await _decides(running.port, "allow", path="/v2/orders/1")


async def test_invalid_policy_keeps_the_last_good_one(
    tmp_path: Path, stop_later: list[RunningServer]
) -> None:
    """A broken edit is rejected with its errors (logged, counted, in /readyz); Checks stay
    on the last good policy until a valid edit replaces it and clears the error."""
    edit_in_place(tmp_path, V1)
    running = await _start(str(tmp_path / "policy.yaml"))
    stop_later.append(running)
    assert running.state is not None and running.metrics_port is not None
    first_version = running.state.policy.version

    edit_in_place(tmp_path, BROKEN)
    await eventually(lambda: "policy" in running.state.failures, "the failed reload recorded")  # type: ignore[union-attr]
    assert await _decides(running.port, "allow")
    assert running.state.policy.version == first_version
    status, body = await readyz(running.metrics_port)
    assert status == 200  # still deciding, on the last good policy
    error = body["detail"]["last_reload_error"]
    assert error["source"] == "policy"
    assert any("duplicate rule id" in e for e in error["errors"])
    _, metrics = await http_get(running.metrics_port, "/metrics")
    assert 'authz_reloads_total{result="error",source="policy"} 1.0' in metrics

    edit_in_place(tmp_path, V2)
    await eventually(lambda: _decides(running.port, "no_matching_rule"), "the valid edit applied")
    assert running.state.last_reload_error is None


def _pem_bundle(authority: devcerts.Authority) -> bytes:
    return devcerts.pem(authority.certificate)


def _json_bundle(authority: devcerts.Authority | None) -> bytes:
    keys = []
    if authority is not None:
        der = authority.certificate.public_bytes(Encoding.DER)
        keys.append({"use": "x509-svid", "kty": "EC", "x5c": [base64.b64encode(der).decode()]})
    return json.dumps({"spiffe_sequence": 2, "keys": keys}).encode()


REQUIRE = V1.replace(
    "{trust_domains: [example.org]}", "{trust_domains: [example.org], require_certificate: true}"
)


@pytest.mark.parametrize(
    ("render", "distrust", "after"),
    [
        pytest.param(_pem_bundle, None, ("certificate_invalid", "allow"), id="pem-rotated"),
        pytest.param(
            _json_bundle, None, ("certificate_invalid", "allow"), id="spiffe-json-rotated"
        ),
        # The policy's only domain distrusted: nothing can be verified, so not ready (503).
        pytest.param(
            _json_bundle,
            b'{"keys": []}',
            ("internal_error", "internal_error"),
            id="spiffe-json-emptied",
        ),
    ],
)
async def test_trust_bundle_change_is_picked_up(
    tmp_path: Path,
    stop_later: list[RunningServer],
    render: Callable[[devcerts.Authority], bytes],
    distrust: bytes | None,
    after: tuple[str, str],
) -> None:
    """A rotated bundle trusts the new CA and no longer the old one; a SPIFFE bundle with
    no keys distrusts the domain."""
    old_ca, new_ca = devcerts.mint_ca("example.org"), devcerts.mint_ca("example.org")
    old_cert, _ = devcerts.mint_svid(old_ca, FRONTEND)
    new_cert, _ = devcerts.mint_svid(new_ca, FRONTEND)
    edit_in_place(tmp_path, REQUIRE)
    bundle = tmp_path / "bundle"
    bundle.write_bytes(render(old_ca))
    running = await _start(
        str(tmp_path / "policy.yaml"), trust_bundles={"example.org": str(bundle)}
    )
    stop_later.append(running)

    async def decides(certificate: object, expected: str) -> bool:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            response = await check(channel, request_for(FRONTEND, certificate))  # type: ignore[arg-type]
            return outcome(response) == expected

    assert await decides(old_cert, "allow")
    bundle.write_bytes(distrust if distrust is not None else render(new_ca))
    await eventually(lambda: decides(old_cert, after[0]), "old CA distrusted")
    assert await decides(new_cert, after[1])


class GatedPipeline(Pipeline):
    """Holds every evaluation until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())  # replaced by the server's store
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def evaluate(
        self, view: RequestView, snapshot: Snapshot, trace: Trace | None = None
    ) -> Any:
        self.entered.set()
        await self.gate.wait()
        return await super().evaluate(view, snapshot, trace)


async def test_in_flight_check_finishes_on_the_version_it_started_with(
    tmp_path: Path, stop_later: list[RunningServer]
) -> None:
    """A Check that started before a reload is decided, and audited, by the old policy."""
    edit_in_place(tmp_path, V1)
    pipeline = GatedPipeline()
    settings = Settings(
        policy=str(tmp_path / "policy.yaml"),
        listen="127.0.0.1:0",
        reload_interval=0.05,
        audit_log=str(tmp_path / "audit.jsonl"),
    )
    running = await start_server(settings, pipeline=pipeline)
    stop_later.append(running)
    assert running.state is not None
    old_version = running.state.policy.version

    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        in_flight = asyncio.ensure_future(check(channel, request_for(FRONTEND)))
        await asyncio.wait_for(pipeline.entered.wait(), 10)
        edit_in_place(tmp_path, V2)
        await eventually(lambda: running.state.policy.version != old_version, "reloaded")  # type: ignore[union-attr]
        pipeline.gate.set()
        assert outcome(await in_flight) == "allow"
        assert outcome(await check(channel, request_for(FRONTEND))) == "no_matching_rule"
    running.audit.flush()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert records[0]["policy_version"] == old_version
    assert records[1]["policy_version"] == running.state.policy.version


def test_sighup_reloads_when_polling_is_off(tmp_path: Path) -> None:
    """With `--reload-interval 0` an edit waits for SIGHUP; SIGHUP applies it."""
    edit_in_place(tmp_path, V1)
    port = free_port()
    process = serve_process(
        tmp_path / "policy.yaml",
        port,
        "--reload-interval",
        "0",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "Check listening" in process.stdout.readline()
        assert asyncio.run(_decides(port, "allow"))
        edit_in_place(tmp_path, V2)
        assert asyncio.run(_decides(port, "allow"))  # no polling: still the old policy
        process.send_signal(signal.SIGHUP)
        asyncio.run(eventually(lambda: _decides(port, "no_matching_rule"), "SIGHUP reload"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
