"""Spans exported over real OTLP/gRPC to a receiver in this process (OpenTelemetry's own
`TraceService` on 127.0.0.1:0): the parent comes from a traceparent in the gRPC call's
metadata or from B3 headers, children nest, and an unreachable collector never holds up
the code that ends a span."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from authz_server.core.decision import Decision, Reason
from authz_server.telemetry import spans
from authz_server.telemetry.attributes import SPAN_NAME
from authz_server.telemetry.receiver import OtlpReceiver
from authz_server.telemetry.spans import check_span, current_ids
from authz_server.telemetry.tracing import Tracing, TracingConfig, start_tracing

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
DENY = Decision(
    False,
    Reason.DENIED_BY_RULE,
    rule="no-admin",
    principal="spiffe://example.org/ns/shop/sa/frontend",
    identity_source="peer",
)
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def tracing(receiver: OtlpReceiver) -> Iterator[Tracing]:
    started = start_tracing(TracingConfig(receiver.endpoint, schedule_delay_ms=50))
    yield started
    started.shutdown(timeout_s=5.0)
    spans.install(None)


@pytest.mark.parametrize(
    ("metadata", "headers", "trace_id", "parent_span_id"),
    [
        pytest.param([("traceparent", f"00-{TRACE}-{SPAN}-01")], None, TRACE, SPAN, id="w3c"),
        pytest.param(None, {"b3": f"{TRACE}-{SPAN}-1"}, TRACE, SPAN, id="b3-single"),
        pytest.param(
            None,
            {"x-b3-traceid": SPAN, "x-b3-spanid": SPAN, "x-b3-sampled": "1"},
            "0" * 16 + SPAN,
            SPAN,
            id="b3-multi-64-bit",
        ),
    ],
)
def test_spans_arrive_under_their_parent(
    receiver: OtlpReceiver,
    tracing: Tracing,
    metadata: Any,
    headers: dict[str, str] | None,
    trace_id: str,
    parent_span_id: str,
) -> None:
    with check_span(metadata, headers) as span:
        with span.child("identity"):
            pass
        span.set_decision(DENY, "policy-v7")
        ids = current_ids()
    assert tracing.shutdown(timeout_s=5.0)
    by_name = {s.name: s for s in receiver.wait_for(2)}
    check, identity = by_name[SPAN_NAME], by_name["identity"]
    assert (check.trace_id, check.parent_span_id, check.kind) == (
        trace_id,
        parent_span_id,
        SERVER_KIND,
    )
    assert ids is not None and (ids.trace_id, ids.span_id) == (check.trace_id, check.span_id)
    assert (identity.trace_id, identity.parent_span_id) == (trace_id, check.span_id)
    assert check.attributes["authz.decision"] == "deny"
    assert check.attributes["authz.reason"] == "denied_by_rule"
    assert check.attributes["authz.rule"] == "no-admin"
    assert check.attributes["authz.principal"] == DENY.principal
    assert check.attributes["authz.identity_source"] == "peer"
    assert check.attributes["authz.dry_run"] is False
    assert check.attributes["authz.policy_version"] == "policy-v7"
    assert check.resource["service.name"] == "authz-server"


async def test_parent_from_the_metadata_of_a_real_grpc_call(
    receiver: OtlpReceiver, tracing: Tracing
) -> None:
    """The way the Check servicer will do it: `context.invocation_metadata` as the carrier,
    called only because tracing is on."""

    async def handle(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        with check_span(context.invocation_metadata, {"traceparent": "00-ignored"}) as span:
            span.set_decision(DENY, "v1")
            return (span.ids.span_id if span.ids else "").encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Traced", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/test.Traced/Call"
            )
            metadata = (("traceparent", f"00-{TRACE}-{SPAN}-01"), ("tracestate", "envoy=1"))
            span_id = (await call(b"", metadata=metadata, timeout=10)).decode()
    finally:
        await server.stop(None)
    assert tracing.shutdown(timeout_s=5.0)
    [check] = receiver.wait_for(1)
    assert (check.trace_id, check.parent_span_id, check.span_id) == (TRACE, SPAN, span_id)


class WatchedExporter(OTLPSpanExporter):
    """The real OTLP exporter, telling when an export starts and how it ended."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint=endpoint, timeout=30)
        self.started = threading.Event()
        self.finished = threading.Event()
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.started.set()
        try:
            result = super().export(spans)
            self.results.append(result)
            return result
        finally:
            self.finished.set()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening: nobody can take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_unreachable_collector_never_holds_up_a_check(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Ending a span only queues it: while the exporter is still retrying the first batch
    against a port that refuses connections, further Checks open and end their spans (and
    overflow the small queue, silently) without waiting; shutdown then stops the retries."""
    endpoint = f"http://127.0.0.1:{closed_port}"
    exporter = WatchedExporter(endpoint)
    config = TracingConfig(
        endpoint,
        schedule_delay_ms=10,
        max_queue_size=8,
        max_export_batch_size=4,
    )
    tracing = start_tracing(config, exporter=exporter)
    try:
        with check_span([("traceparent", f"00-{TRACE}-{SPAN}-01")]) as span:
            span.set_decision(DENY, "v1")
        assert exporter.started.wait(timeout=30), "the export thread never picked the span up"
        assert not exporter.finished.is_set(), "the exporter gave up without retrying"
        for _ in range(200):  # the queue holds 8: most of these are dropped, none wait
            with check_span([("traceparent", f"00-{TRACE}-{SPAN}-01")]) as span:
                span.set_decision(DENY, "v1")
                assert current_ids() is not None
        assert not exporter.finished.is_set(), "the Checks above ran during one export"
        dropped = [r for r in caplog.records if "Queue full" in r.getMessage()]
        assert dropped == [], "a dropped span is logged on the Check path"
    finally:
        finished_in_time = tracing.shutdown(timeout_s=0.2)
        spans.install(None)
    assert finished_in_time is False, "shutdown gave up on the export in flight"
    assert exporter.finished.wait(timeout=30), "shutdown did not end the retries"
    assert exporter.results[0] is SpanExportResult.FAILURE
