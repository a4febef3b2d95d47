"""`serve --workers N` on the memory store: real processes, no Redis.

A policy without approvals or rate limits runs on N workers sharing the Check and admin
ports; a revocation made through the admin API reaches every worker. Each worker has its
own `/metrics` port, so its decision counters say which worker answered which Checks:
many Checks on fresh connections (the kernel spreads them over the workers) and then
each worker's counters prove that every one of them refused the revoked identity.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from authz_server.admin import authz_admin_pb2 as pb
from authz_server.cli.main import main
from authz_server.tools import stack
from tests.integration.serve_support import AGENT, Files, admin_call, write_files
from tests.integration.support import check, eventually, http_get, outcome, readyz, request_for

WORKERS = 3
#: Fresh connections per round: the chance that one of 3 workers gets none is 3 * (2/3)^45.
CONNECTIONS = 45

STATELESS = """\
version: 1
identity: {trust_domains: [example.org]}
admin:
  principals: ["spiffe://example.org/humans/**"]
rules:
  - id: orders-read
    paths: ["/v1/orders/**"]
    effect: allow
"""

RATE_LIMITED = (
    STATELESS
    + """\
  - id: transfers
    methods: [POST]
    paths: ["/v1/transfers"]
    effect: allow
    when:
      rate_limit: {requests: 2, per: 1h}
"""
)

_METRICS_PORT = re.compile(r"authz-server: metrics and probes on port (\d+)")
_DECISIONS = re.compile(r"^authz_decisions_total\{([^}]*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return write_files(tmp_path, STATELESS)


@pytest.fixture
def workers(files: Files) -> Iterator[stack.Service]:
    """The supervisor of WORKERS workers on the memory store, with an mTLS admin API."""
    admin_port = stack.free_port()
    service = stack.start_authz(
        files.dir / "logs",
        policy=files.policy,
        bundles={"example.org": files.ca_file},
        audit_log=files.dir / "audit.jsonl",
        extra_args=(
            "--workers",
            str(WORKERS),
            "--reload-interval",
            "0.1",
            *files.admin_args(admin_port),
        ),
        name="workers",
    )
    service.extra["admin_port"] = admin_port
    try:
        yield service
    finally:
        service.stop()


async def _metrics_ports(service: stack.Service) -> list[int]:
    """Each worker's /metrics port, from the line each worker prints once it serves."""

    def found() -> list[int]:
        return [int(p) for p in _METRICS_PORT.findall(service.log_path.read_text())]

    await eventually(lambda: len(found()) == WORKERS, "every worker serving")
    return found()


async def _decisions(port: int) -> dict[str, float]:
    """One worker's decisions by `decision:reason`."""
    status, body = await http_get(port, "/metrics")
    assert status == 200
    counts: dict[str, float] = {}
    for line in body.splitlines():
        if (match := _DECISIONS.match(line)) is not None:
            labels = dict(_LABEL.findall(match.group(1)))
            key = f"{labels['decision']}:{labels['reason']}"
            counts[key] = counts.get(key, 0) + float(match.group(2))
    return counts


async def _fresh_connection_outcomes(service: stack.Service, request: object) -> list[str]:
    """CONNECTIONS Checks, each on a new connection, so that the kernel picks a worker."""
    seen = []
    for _ in range(CONNECTIONS):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            seen.append(outcome(await check(channel, request)))
    return seen


async def _per_worker(ports: list[int], key: str) -> list[float]:
    return [(await _decisions(port)).get(key, 0) for port in ports]


async def test_a_revocation_reaches_every_worker(workers: stack.Service, files: Files) -> None:
    """Before: every worker allows the agent. Revoked through the shared admin port;
    half a second later every worker denies it `revoked`; unrevoked, every worker
    allows it again."""
    ports = await _metrics_ports(workers)
    assert await _fresh_connection_outcomes(workers, request_for(AGENT)) == ["allow"] * CONNECTIONS
    allowed = await _per_worker(ports, "allow:allowed_by_rule")
    assert all(count > 0 for count in allowed), allowed  # the load reached every worker

    alice, admin_port = files.pair("alice"), workers.extra["admin_port"]
    request = pb.RevokeRequest(pattern=AGENT, ttl_seconds=300, reason="compromised")
    await admin_call(admin_port, files, "Revoke", request, pb.Revocation, alice)
    await asyncio.sleep(0.5)  # the bound under test, not a measurement
    seen = await _fresh_connection_outcomes(workers, request_for(AGENT))
    assert seen == ["revoked"] * CONNECTIONS
    refused = await _per_worker(ports, "deny:revoked")
    assert all(count > 0 for count in refused), refused  # every worker refused
    assert sum(refused) == CONNECTIONS

    listing = pb.ListRevocationsRequest()
    reply = pb.ListRevocationsResponse
    listed = await admin_call(admin_port, files, "ListRevocations", listing, reply, alice)
    assert [r.pattern for r in listed.revocations] == [AGENT]
    unrevoke = pb.UnrevokeRequest(pattern=AGENT)
    await admin_call(admin_port, files, "Unrevoke", unrevoke, pb.UnrevokeResponse, alice)
    await asyncio.sleep(0.5)
    assert await _fresh_connection_outcomes(workers, request_for(AGENT)) == ["allow"] * CONNECTIONS
    now = await _per_worker(ports, "allow:allowed_by_rule")
    again = [a - b for a, b in zip(now, allowed, strict=True)]
    assert all(count > 0 for count in again), again


async def test_a_reload_adding_a_rate_limit_is_refused_by_every_worker(
    workers: stack.Service, files: Files
) -> None:
    """The policy file gains a rate-limited rule: each worker keeps the policy in force and
    reports the reload error on /readyz; requests are still decided by the old policy."""
    ports = await _metrics_ports(workers)
    before = [(await readyz(port))[1]["detail"]["policy"]["version"] for port in ports]
    files.policy.write_text(RATE_LIMITED)

    async def all_refused() -> bool:
        for port in ports:
            status, body = await readyz(port)
            assert status == 200  # still deciding, on the last good policy
            error = body["detail"]["last_reload_error"]
            if error is None or "needs a shared store" not in "\n".join(error["errors"]):
                return False
        return True

    await eventually(all_refused, "every worker refusing the reload")
    after = [(await readyz(port))[1]["detail"]["policy"]["version"] for port in ports]
    assert after == before
    transfer = request_for(AGENT, method="POST", path="/v1/transfers")
    assert set(await _fresh_connection_outcomes(workers, transfer)) == {"no_matching_rule"}


def test_workers_on_memory_refuse_a_policy_with_approvals_or_rate_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused at start, naming the rules that keep state and what to use instead."""
    files = write_files(tmp_path, RATE_LIMITED)
    port = stack.free_port()
    argv = ["serve", "--policy", str(files.policy), "--listen", f"127.0.0.1:{port}"]
    assert main([*argv, "--workers", "2", "--admin-listen", "off"]) == 1
    err = capsys.readouterr().err
    assert "N>1 needs a shared store: --store redis://HOST:PORT/DB" in err
    assert "transfers (rate_limit)" in err


def test_workers_on_memory_need_a_writable_temporary_directory(
    files: Files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The shared revocation file cannot be made: one clear error, no traceback."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    port = stack.free_port()
    argv = ["serve", "--policy", str(files.policy), "--listen", f"127.0.0.1:{port}"]
    assert main([*argv, "--workers", "2", "--admin-listen", "off"]) == 1
    err = capsys.readouterr().err
    assert "shares revocations through a file in the temporary directory" in err
    assert "Traceback" not in err
