"""Real `authz-server serve` processes sharing one real Redis: replicas and `--workers`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from authz_server.admin import authz_admin_pb2 as pb
from authz_server.cli.main import main
from authz_server.tools import stack
from tests.integration.serve_support import (
    AGENT,
    Files,
    admin_call,
    approval_id_for,
    approve,
    release,
    transfer,
    write_files,
)
from tests.integration.support import check, eventually, outcome, request_for


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return write_files(tmp_path)


def _start(files: Files, name: str, *args: str) -> stack.Service:
    return stack.start_authz(
        files.dir / "logs",
        policy=files.policy,
        bundles={"example.org": files.ca_file},
        audit_log=files.dir / f"{name}.jsonl",
        extra_args=args,
        name=name,
    )


@pytest.fixture
def replicas(files: Files, redis_url: str) -> Iterator[tuple[stack.Service, stack.Service]]:
    """Two server processes on one Redis, each with its own Check and admin port."""
    services: list[stack.Service] = []
    try:
        for name in ("replica-a", "replica-b"):
            admin_port = stack.free_port()
            service = _start(files, name, "--store", redis_url, *files.admin_args(admin_port))
            service.extra["admin_port"] = admin_port
            services.append(service)
        yield services[0], services[1]
    finally:
        for service in services:
            service.stop()


def _channel(service: stack.Service) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")


async def test_approval_granted_on_one_replica_is_used_once_across_both(
    replicas: tuple[stack.Service, stack.Service], files: Files
) -> None:
    """Requested on A, approved through B's admin API, then 25 concurrent Checks on each
    replica: exactly one is allowed."""
    a, b = replicas
    async with _channel(a) as to_a, _channel(b) as to_b:
        approval_id = await approval_id_for(to_a, release())
        await approve(b.extra["admin_port"], files, approval_id)
        checks = [check(channel, release()) for channel in (to_a, to_b) for _ in range(25)]
        outcomes = [outcome(r) for r in await asyncio.gather(*checks)]
    assert outcomes.count("allow") == 1
    assert outcomes.count("approval_required") == 49


async def test_rate_limit_is_shared(replicas: tuple[stack.Service, stack.Service]) -> None:
    """Two per hour for the rule and principal, counted once across both replicas."""
    a, b = replicas
    async with _channel(a) as to_a, _channel(b) as to_b:
        seen = [outcome(await check(channel, transfer())) for channel in (to_a, to_b, to_a, to_b)]
    assert seen == ["allow", "allow", "rate_limited", "rate_limited"]


async def test_revocation_on_one_replica_is_enforced_by_the_other_within_a_second(
    replicas: tuple[stack.Service, stack.Service], files: Files
) -> None:
    """Revoked through A's admin API; one second later B denies the identity `revoked`."""
    a, b = replicas
    async with _channel(b) as to_b:
        assert outcome(await check(to_b, request_for(AGENT))) == "allow"
        request = pb.RevokeRequest(pattern=AGENT, ttl_seconds=300, reason="compromised")
        alice = files.pair("alice")
        await admin_call(a.extra["admin_port"], files, "Revoke", request, pb.Revocation, alice)
        await asyncio.sleep(1.0)  # the bound under test, not a measurement
        assert outcome(await check(to_b, request_for(AGENT))) == "revoked"


def test_workers_refuse_the_memory_store(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    """`--workers 2` without a shared store is refused at start, saying what to use."""
    argv = ["serve", "--policy", str(files.policy), "--listen", "127.0.0.1:19999", "--workers", "2"]
    assert main(argv) == 1
    assert "N>1 needs a shared store: --store redis://HOST:PORT/DB" in capsys.readouterr().err


async def test_workers_share_the_port_and_the_store(files: Files, redis_url: str) -> None:
    """Two worker processes serve one port; a rate limit holds across them; SIGTERM drains
    both and the supervisor exits 0."""
    service = _start(files, "workers", "--store", redis_url, "--workers", "2")
    try:
        listening = [f"worker{i} authz_server.runtime.server: Check listening" for i in (0, 1)]
        await eventually(
            lambda: all(line in service.log_path.read_text() for line in listening),
            "both workers listening",
        )
        seen = []
        for _ in range(6):  # a new connection each time: the kernel picks a worker
            async with _channel(service) as channel:
                seen.append(outcome(await check(channel, transfer())))
        assert sorted(seen) == ["allow"] * 2 + ["rate_limited"] * 4
    finally:
        service.stop()
    assert service.process.returncode == 0
    for index in (0, 1):
        assert (files.dir / f"workers.jsonl.worker{index}").exists()
