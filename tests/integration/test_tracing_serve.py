"""`serve --otlp-endpoint`: a Check called over real gRPC with a `traceparent` in its
metadata (as Envoy's tracer sends it) is exported over real OTLP/gRPC to a receiver in
this process, under that parent, with its children; the audit record and the response's
dynamic metadata carry the same ids; draining exports the last spans and never waits
long for a collector that is gone."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz_server.core.errors import ConfigError
from authz_server.runtime.server import RunningServer, start_server
from authz_server.runtime.settings import Settings
from authz_server.telemetry import spans
from authz_server.telemetry.attributes import SPAN_NAME
from authz_server.telemetry.receiver import OtlpReceiver
from tests.integration.support import outcome, request_for

TRACE = "0af7651916cd43dd8448eb211c80319c"
ENVOY_SPAN = "b7ad6b7169203331"
POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
  require_certificate: false
rules:
  - id: orders-read
    methods: [GET]
    paths: ["/v1/orders/{id}"]
    unauthenticated: true
    effect: allow
"""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    running.start()
    yield running
    running.stop()


def _settings(tmp_path: Path, endpoint: str) -> Settings:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return Settings(
        policy=str(tmp_path / "policy.yaml"),
        listen="127.0.0.1:0",
        audit_log=str(tmp_path / "audit.jsonl"),
        admin_listen=None,
        reload_interval=0,
        otlp_endpoint=endpoint,
    )


@pytest.fixture
async def traced(
    tmp_path: Path, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningServer]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    running = await start_server(_settings(tmp_path, receiver.endpoint))
    yield running
    await running.stop(1.0)
    spans.install(None)


async def _check(port: int, path: str, traceparent: str | None) -> Any:
    metadata = (("traceparent", traceparent),) if traceparent else ()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        raw: bytes = await channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")(
            request_for(path=path).SerializeToString(), metadata=metadata, timeout=5
        )
    return external_auth_pb2.CheckResponse.FromString(raw)


def _audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


async def test_a_check_is_exported_under_the_callers_span(
    traced: RunningServer, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    allowed = await _check(traced.port, "/v1/orders/1", f"00-{TRACE}-{ENVOY_SPAN}-01")
    denied = await _check(traced.port, "/v1/admin", f"00-{TRACE}-{ENVOY_SPAN}-01")
    assert (outcome(allowed), outcome(denied)) == ("allow", "no_identity")
    await traced.stop(1.0)  # drains: the queued spans are exported now
    received = receiver.wait_for(6)
    checks = [s for s in received if s.name == SPAN_NAME]
    assert len(checks) == 2
    records = {r["decision_id"]: r for r in _audit(tmp_path) if "decision_id" in r}
    for span, response in zip(checks, (allowed, denied), strict=True):
        assert (span.trace_id, span.parent_span_id) == (TRACE, ENVOY_SPAN)
        metadata = dict(response.dynamic_metadata.items())
        record = records[span.attributes["authz.decision_id"]]
        assert record["decision_id"] == metadata["decision_id"]
        assert record["trace_id"] == metadata["trace_id"] == TRACE
        assert record["span_id"] == metadata["span_id"] == span.span_id
        assert span.attributes["authz.reason"] == record["reason"] == metadata["reason"]
        children = {s.name for s in received if s.parent_span_id == span.span_id}
        assert children == {"identity", "rules"}
    assert checks[0].attributes["authz.rule"] == "orders-read"
    assert checks[0].resource["service.name"] == "authz-server"


async def test_an_unsampled_caller_is_not_traced(
    traced: RunningServer, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    response = await _check(traced.port, "/v1/orders/1", f"00-{TRACE}-{ENVOY_SPAN}-00")
    assert "trace_id" not in dict(response.dynamic_metadata.items())
    await traced.stop(1.0)
    assert receiver.spans == []
    [record] = [r for r in _audit(tmp_path) if "decision_id" in r]
    assert "trace_id" not in record


async def test_a_dead_collector_neither_fails_checks_nor_holds_the_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector's port refuses connections: Checks are decided as usual, and the
    drain gives up on the spans after its bound instead of retrying for half a minute."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        running = await start_server(_settings(tmp_path, endpoint))
        try:
            for n in range(20):
                response = await _check(running.port, f"/v1/orders/{n}", None)
                assert outcome(response) == "allow"
                assert len(dict(response.dynamic_metadata.items())["trace_id"]) == 32
        finally:
            started = time.monotonic()
            await running.stop(0.5)
            spans.install(None)
    assert time.monotonic() - started < 10.0
    assert spans.tracer() is None


async def test_a_bad_endpoint_stops_the_start_with_nothing_bound(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--otlp-endpoint 'collector:4317'"):
        await start_server(_settings(tmp_path, "collector:4317"))
    assert spans.tracer() is None


async def test_check_request_without_a_context_is_still_traced(
    traced: RunningServer, receiver: OtlpReceiver
) -> None:
    """The generic handler hands its gRPC context over; a direct call without one (as
    the AuthZEN tests do) is traced from the request's headers alone."""
    parent = "1" * 16
    request = request_for(headers={"traceparent": f"00-{TRACE}-{parent}-01"})
    raw = await traced.service.check_bytes(request.SerializeToString())
    assert raw
    await traced.stop(1.0)
    [span] = [s for s in receiver.wait_for(1) if s.name == SPAN_NAME]
    assert (span.trace_id, span.parent_span_id) == (TRACE, parent)
