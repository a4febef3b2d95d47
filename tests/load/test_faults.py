"""Faults: authz-server SIGKILLed under load, a bundle deleted, a policy replaced by
garbage, the audit sink gone.

In each, nothing is allowed that should not be, and no decision a client saw is missing
from the audit log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from authz_server.audit.verify import verify_chain
from authz_server.runtime.server import start_server
from authz_server.runtime.settings import Settings
from authz_server.tools import devcerts
from tests.e2e import harness
from tests.integration.support import check, eventually, readyz, request_for
from tests.load.conftest import ALLOWED, LoadStack, loadgen_results

pytestmark = pytest.mark.e2e


def _records(path: Path) -> list[dict[str, object]]:
    """Audit records, skipping a line torn by the SIGKILL (verify checks it is marked)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _wait_until(condition: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigkill_under_load_fails_closed_and_recovers(
    load_stack: LoadStack, tmp_path: Path
) -> None:
    """While authz-server is dead Envoy answers 503 and allows nothing; after a restart on
    the same port traffic is allowed again, and every decision a client saw is audited."""
    out, stop = tmp_path / "requests.jsonl", tmp_path / "stop"
    argv = load_stack.loadgen_argv(
        count=1_000_000, concurrency=4, max_seconds=40, out=out, stop_file=stop
    )
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def decided() -> int:
        return len(_records(load_stack.audit_log))

    try:
        _wait_until(lambda: decided() >= 150, "load before the kill")
        victim = load_stack.services["authz-server"].process
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)

        for _ in range(5):  # down: Envoy fails closed (failure_mode_allow: false)
            reply = load_stack.request(ALLOWED.format(7))
            assert reply.status == 503, reply
            assert "x-authz-decision-id" not in reply.headers

        load_stack.start_authz("authz-server-restarted")
        _wait_until(lambda: load_stack.request(ALLOWED.format(8)).status == 200, "recovery")
        after_restart = decided()
        _wait_until(lambda: decided() >= after_restart + 150, "load after the restart")
        stop.touch()
        summary, results = loadgen_results(load, out, timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    print(f"\nload across a SIGKILL: {summary}")

    assert summary["errors"] == 0, [r["error"] for r in results if r["error"]][:5]
    assert set(summary["statuses"]) <= {"200", "403", "503"}, summary
    first_503 = min(r["start"] for r in results if r["status"] == 503)
    assert any(r["status"] == 200 and r["start"] > first_503 for r in results), "no recovery"
    records = [r for r in _records(load_stack.audit_log) if "decision_id" in r]
    audited = Counter(r["decision_id"] for r in records)
    verdicts = {r["decision_id"]: r["decision"] for r in records}
    for result in results:
        if result["status"] == 503:  # Envoy's own answer: no decision was made
            assert result["decision_id"] is None, result
            continue
        assert audited[result["decision_id"]] == 1, result
        assert verdicts[result["decision_id"]] == ("allow" if result["status"] == 200 else "deny")
    report = verify_chain([load_stack.audit_log])
    assert report.problem is None, report.problem
    assert report.markers >= 1, "the restart is marked in the chain"


def test_bundle_deleted_while_running_keeps_the_last_good_one(load_stack: LoadStack) -> None:
    """Deleting a trust bundle file neither lets anyone in nor locks everyone out: the
    reload is refused and the bundles in force stay."""
    assert load_stack.request(ALLOWED.format(1)).status == 200
    bundle = load_stack.bundles / "ca.pem"
    bundle.unlink()
    server = load_stack.services["authz-server"]
    os.kill(server.process.pid, signal.SIGHUP)
    _wait_until(lambda: f"{str(bundle)!r}: file not found" in server.log_tail(20), "reload")
    assert load_stack.request(ALLOWED.format(2)).status == 200
    assert load_stack.request("/v1/tenants/acme/files").status == 403


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00\xff\xfe not yaml {{{", id="binary"),
        pytest.param(b"version: 1\nrules: [{id: x, effect: allow, paths: ['/**']", id="truncated"),
        pytest.param(b"", id="emptied"),
    ],
)
def test_policy_replaced_by_garbage_keeps_the_last_good_one(
    load_stack: LoadStack, garbage: bytes
) -> None:
    """A policy file overwritten with garbage (or truncated into an allow-all) is refused
    on reload; decisions go on under the last good policy."""
    load_stack.policy.write_bytes(garbage)
    server = load_stack.services["authz-server"]
    os.kill(server.process.pid, signal.SIGHUP)
    _wait_until(lambda: "reload of policy rejected" in server.log_tail(30), "the reload")
    assert load_stack.request(ALLOWED.format(1)).status == 200
    assert load_stack.request("/v1/tenants/acme/files").status == 403


def test_server_refuses_to_start_without_its_bundle(tmp_path: Path) -> None:
    """A restart with the bundle file missing fails fast with the path, before listening."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(harness.POLICY)
    argv = [sys.executable, "-m", "authz_server", "serve", "--policy", str(policy)]
    argv += ["--listen", "127.0.0.1:0", "--metrics-listen", "off"]
    argv += ["--trust-bundle", f"example.org={tmp_path / 'gone.pem'}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert "gone.pem" in done.stderr
    assert "file not found" in done.stderr


# --- the audit sink -------------------------------------------------------------------------


async def test_unwritable_audit_sink_fails_closed_then_recovers(tmp_path: Path) -> None:
    """The audit file replaced by /dev/full: decisions go on while records can wait in
    memory, then every Check is denied internal_error and /readyz says why; once the file
    is back the waiting records are written in order and allows resume. Every decision
    the client saw is in the log."""
    ca = devcerts.mint_ca("example.org")
    (tmp_path / "ca.pem").write_bytes(devcerts.pem(ca.certificate))
    (tmp_path / "policy.yaml").write_text(harness.POLICY)
    path = tmp_path / "audit.jsonl"
    settings = Settings(
        policy=str(tmp_path / "policy.yaml"),
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        trust_bundles={"example.org": str(tmp_path / "ca.pem")},
        audit_log=str(path),
    )
    running = await start_server(settings)
    running.audit.max_pending = 5  # the default (1000) takes long to fill
    request = request_for(harness.FRONTEND, devcerts.mint_svid(ca, harness.FRONTEND)[0])
    assert running.metrics_port is not None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:

            async def decide() -> tuple[str, str]:
                response = await check(channel, request)
                if response.status.code == 0:
                    headers = {h.header.key: h.header.value for h in response.ok_response.headers}
                    return "allow", headers["x-authz-decision-id"]
                body = json.loads(response.denied_response.body)
                return body["reason"], body["decision_id"]

            first = await decide()
            rotated = path.rename(tmp_path / "audit.jsonl.1")
            path.symlink_to("/dev/full")  # every write fails: ENOSPC
            await eventually(lambda: running.audit.stats.write_errors > 0, "the flusher")
            outcomes = [await decide() for _ in range(8)]
            verdicts = [verdict for verdict, _ in outcomes]
            assert verdicts[:4] == ["allow"] * 4  # the rotate marker and four records wait
            assert set(verdicts[4:]) == {"internal_error"}
            status, body = await readyz(running.metrics_port)
            assert status == 503
            assert body["checks"]["audit"].startswith(f"audit log {path}: write failed")
            assert "records waiting" in body["checks"]["audit"]

            path.unlink()  # the disk has room again
            await eventually(lambda: running.audit.healthy, "the waiting records written")
            assert (await readyz(running.metrics_port))[0] == 200
            last = await decide()
            assert last[0] == "allow"
    finally:
        await running.stop(1.0)
    seen = [decision_id for _, decision_id in [first, *outcomes, last]]
    written = [r["decision_id"] for r in _records(rotated) + _records(path) if "decision_id" in r]
    assert written == seen
    report = verify_chain([rotated, path])
    assert report.problem is None, report.problem
