"""SIGTERM under load: a real `python -m authz_server serve` drains and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import grpc

from authz_server.tools.stack import free_port
from tests.integration.support import (
    SERVING,
    check,
    eventually,
    health,
    outcome,
    request_for,
    serve_process,
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
CLIENTS = 8
#: Bounds the test if the signal were lost; the clients stop at their first error.
MAX_CHECKS_PER_CLIENT = 3000
SIGNAL_AFTER = 300


async def _serving(port: int) -> bool:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await health(channel) == SERVING
    except grpc.aio.AioRpcError:
        return False


async def _load(port: int, process: subprocess.Popen[bytes]) -> dict[str, str]:
    """Concurrent clients send Checks until the server goes away; SIGTERM mid-way."""
    results: dict[str, str] = {}

    async def client(index: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for n in range(MAX_CHECKS_PER_CLIENT):
                request_id = f"client{index}-{n}"
                request = request_for(FRONTEND, headers={"x-request-id": request_id})
                try:
                    response = await check(channel, request)
                except grpc.aio.AioRpcError as error:
                    results[request_id] = error.code().name
                    return
                results[request_id] = "OK" if outcome(response) == "allow" else "WRONG"

    async def terminate() -> None:
        await eventually(lambda: len(results) >= SIGNAL_AFTER, "load under way", timeout=60)
        process.send_signal(signal.SIGTERM)

    await asyncio.gather(terminate(), *(client(i) for i in range(CLIENTS)))
    return results


def test_sigterm_under_load_drains_in_flight_checks(tmp_path: Path) -> None:
    """Exit 0; every Check the server started deciding was answered and audited; the only
    failures are calls it never started (refused or unmatched when the listener closed)."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    audit = tmp_path / "audit.jsonl"
    log = tmp_path / "server.log"
    port = free_port()
    process = serve_process(
        tmp_path / "policy.yaml",
        port,
        "--audit-log",
        str(audit),
        "--grace",
        "10",
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        asyncio.run(eventually(lambda: _serving(port), "health SERVING"))
        results = asyncio.run(_load(port, process))
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    answered = {rid for rid, status in results.items() if status == "OK"}
    failures = {rid: status for rid, status in results.items() if status != "OK"}
    assert len(answered) >= SIGNAL_AFTER - CLIENTS
    # gRPC refuses new streams after GOAWAY (UNAVAILABLE) and cancels calls that had
    # reached the transport but no handler yet (CANCELLED): neither was being decided.
    assert set(failures.values()) <= {"UNAVAILABLE", "CANCELLED"}, failures
    assert len(failures) == CLIENTS  # every client was still sending when the server left
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    audited = {record["request_id"] for record in records}
    # Decided ⇔ answered: no Check the server took was lost, none was answered undecided.
    assert audited == answered
    assert len(records) == len(audited)
    server_log = log.read_text()
    assert "Traceback" not in server_log
    assert f"stopped after {len(answered)} decisions" in server_log
