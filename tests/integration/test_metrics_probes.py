"""`/metrics`, `/healthz` and `/readyz` of a real server after known traffic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz_server.runtime.server import RunningServer, start_server
from authz_server.runtime.settings import Settings
from authz_server.tools import devcerts
from tests.integration.support import CHECK, check, http_get, outcome, readyz, request_for

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
POLICY = """\
version: 1
identity: {trust_domains: [example.org], require_certificate: true}
rules:
  - id: orders-read
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: no-admin
    paths: ["/v1/orders/13"]
    effect: deny
    mode: dry_run
"""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, devcerts.Authority]]:
    ca = devcerts.mint_ca("example.org")
    (tmp_path / "ca.pem").write_bytes(devcerts.pem(ca.certificate))
    (tmp_path / "policy.yaml").write_text(POLICY)
    settings = Settings(
        policy=str(tmp_path / "policy.yaml"),
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        trust_bundles={"example.org": str(tmp_path / "ca.pem")},
        audit_log=str(tmp_path / "audit.jsonl"),
    )
    running = await start_server(settings)
    yield running, ca
    await running.stop(1.0)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _decisions(
    decision: str, reason: str, rule: str, dry_run: str = "false"
) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"decision": decision, "reason": reason, "rule": rule, "dry_run": dry_run}
    return ("authz_decisions_total", tuple(sorted(labels.items())))


async def test_metrics_after_known_traffic(
    server: tuple[RunningServer, devcerts.Authority],
) -> None:
    """Decisions by decision/reason/rule/dry_run, identity failures, latency count, policy
    version, audit records: each equals the traffic sent."""
    running, ca = server
    good, _ = devcerts.mint_svid(ca, FRONTEND)
    other_ca = devcerts.mint_ca("example.org")
    forged, _ = devcerts.mint_svid(other_ca, FRONTEND)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        sent = [
            *[request_for(FRONTEND, good)] * 3,
            request_for(FRONTEND, forged),
            request_for(FRONTEND),
            request_for(FRONTEND, good, path="/v1/orders/13"),
        ]
        seen = [outcome(await check(channel, r)) for r in sent]
        await channel.unary_unary(CHECK)(b"\xff\xff", timeout=5)
    assert seen == ["allow"] * 3 + ["certificate_invalid", "certificate_required", "allow"]
    assert running.metrics_port is not None
    running.audit.flush()

    status, text = await http_get(running.metrics_port, "/metrics")
    assert status == 200
    samples = _samples(text)
    assert samples[_decisions("allow", "allowed_by_rule", "orders-read")] == 3
    assert samples[_decisions("deny", "denied_by_rule", "no-admin", "true")] == 1
    assert samples[_decisions("deny", "certificate_invalid", "")] == 1
    assert samples[_decisions("deny", "certificate_required", "")] == 1
    assert samples[_decisions("deny", "malformed_request", "")] == 1
    for reason in ("certificate_invalid", "certificate_required"):
        assert samples[("authz_identity_failures_total", (("reason", reason),))] == 1
    assert samples[("authz_check_duration_seconds_count", ())] == 7
    assert running.state is not None
    version = (("version", running.state.policy.version),)
    assert samples[("authz_policy_info", version)] == 1
    assert samples[("authz_policy_rules", ())] == 2
    assert samples[("authz_audit_records_total", ())] == 7
    assert samples[("authz_audit_write_errors_total", ())] == 0
    assert samples[("authz_ready", ())] == 1
    assert samples[("authz_trust_domains", (("state", "trusted"),))] == 1


async def test_probes(server: tuple[RunningServer, devcerts.Authority]) -> None:
    """/healthz is live, /readyz reports each check and the policy; other paths 404/405."""
    running, _ = server
    port = running.metrics_port
    assert port is not None
    assert await http_get(port, "/healthz") == (200, "ok\n")
    status, body = await readyz(port)
    assert status == 200
    assert body["checks"] == {
        "policy_and_bundles": "ok",
        "draining": "ok",
        "store": "ok",
        "audit": "ok",
    }
    assert running.state is not None
    assert body["detail"]["policy"]["version"] == running.state.policy.version
    assert body["detail"]["last_reload_error"] is None
    assert (await http_get(port, "/nope"))[0] == 404
    assert (await http_get(port, "/metrics", method="POST"))[0] == 405


@pytest.mark.parametrize(
    ("check", "shown"),
    [
        pytest.param(
            lambda: "redis://store:6379 unreachable", "redis://store:6379 unreachable", id="problem"
        ),
        pytest.param(
            lambda: 1 / 0, "check failed: ZeroDivisionError: division by zero", id="raises"
        ),
    ],
)
async def test_readiness_checks_added_later(
    server: tuple[RunningServer, devcerts.Authority], check: object, shown: str
) -> None:
    """A readiness check added by another part (the store) turns /readyz 503 with its
    message; gRPC health is unaffected (rules without the store keep working)."""
    running, _ = server
    running.add_readiness_check("store", check)  # type: ignore[arg-type]
    assert running.metrics_port is not None
    status, body = await readyz(running.metrics_port)
    assert status == 503
    assert body["checks"]["store"] == shown
    assert body["ready"] is False


async def test_readyz_reports_draining(server: tuple[RunningServer, devcerts.Authority]) -> None:
    """While draining /readyz is 503 and /healthz still 200."""
    running, _ = server
    running.draining = True
    await running.refresh_health()
    assert running.metrics_port is not None
    status, body = await readyz(running.metrics_port)
    assert (status, body["checks"]["draining"]) == (503, "draining")
    assert (await http_get(running.metrics_port, "/healthz"))[0] == 200
    running.draining = False
