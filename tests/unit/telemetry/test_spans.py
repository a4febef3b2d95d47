"""The Check path's tracing API on the real SDK (spans kept in memory): one server span
per Check with the right parent, children, decision attributes, ids for the audit
record; with tracing off, one shared object that reads nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from authz_server.core.decision import Decision, Reason
from authz_server.telemetry import spans
from authz_server.telemetry.attributes import SPAN_NAME, TraceIds
from authz_server.telemetry.spans import NOOP, check_span, child, current_ids
from authz_server.telemetry.tracing import Tracing
from tests.unit.telemetry.support import traced

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
TP = f"00-{TRACE}-{SPAN}-01"
ALLOW = Decision(True, Reason.ALLOWED_BY_RULE, rule="orders-read", principal="spiffe://x/y")

Memory = tuple[Tracing, InMemorySpanExporter]


class CountingHeaders(Mapping[str, str]):
    """A header dict that counts every read."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.reads = 0

    def __getitem__(self, key: str) -> str:
        self.reads += 1
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        self.reads += 1
        return iter(self._values)

    def __len__(self) -> int:
        self.reads += 1
        return len(self._values)


def finished(memory: Memory) -> list[ReadableSpan]:
    tracing, exporter = memory
    tracing.provider.force_flush()
    return list(exporter.get_finished_spans())


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def test_off_is_one_shared_object_that_reads_nothing() -> None:
    spans.install(None)
    calls: list[int] = []

    def metadata() -> list[tuple[str, str]]:
        calls.append(1)
        return [("traceparent", TP)]

    headers = CountingHeaders({"traceparent": TP})
    handle = check_span(metadata, headers)
    assert handle is NOOP
    with handle as span:
        assert span is NOOP
        assert span.child("identity") is NOOP
        assert child("store.revoked") is NOOP
        span.set_decision(ALLOW, "v1")
        assert span.ids is None and current_ids() is None
    assert calls == [] and headers.reads == 0


def test_one_server_span_per_check_under_the_metadata_parent(memory: Memory) -> None:
    with check_span(lambda: [("traceparent", TP)], {"b3": f"{'1' * 32}-{'2' * 16}-1"}) as span:
        span.set_decision(ALLOW, "v1")
        ids = current_ids()
        assert ids == span.ids
    [recorded] = finished(memory)
    assert recorded.name == SPAN_NAME and recorded.kind is SpanKind.SERVER
    assert recorded.parent is not None and recorded.parent.is_remote
    assert format(recorded.parent.span_id, "016x") == SPAN
    assert ids == TraceIds(*hex_ids(recorded)) and ids.trace_id == TRACE
    attributes = dict(recorded.attributes or {})
    assert attributes["authz.decision"] == "allow"
    assert attributes["authz.rule"] == "orders-read"
    assert attributes["authz.policy_version"] == "v1"
    assert attributes["rpc.method"] == "Check" and attributes["rpc.system"] == "grpc"
    assert recorded.resource.attributes["service.name"] == "authz-server"
    assert recorded.status.status_code is StatusCode.UNSET


def test_parent_from_headers_when_the_metadata_has_none(memory: Memory) -> None:
    headers = {"x-b3-traceid": "1" * 32, "x-b3-spanid": "2" * 16, "x-b3-sampled": "1"}
    with check_span([("user-agent", "grpc-c")], headers):
        pass
    [recorded] = finished(memory)
    assert hex_ids(recorded)[0] == "1" * 32
    assert recorded.parent is not None and format(recorded.parent.span_id, "016x") == "2" * 16


def test_without_a_parent_a_check_starts_a_trace(memory: Memory) -> None:
    with check_span(None, {"traceparent": "garbage"}) as span:
        ids = span.ids
    [recorded] = finished(memory)
    assert recorded.parent is None and ids == TraceIds(*hex_ids(recorded))


def test_children_nest_under_the_check(memory: Memory) -> None:
    with check_span() as span:
        with span.child("identity"), child("store.revoked", {"store.operation": "revoked"}):
            pass
        with span.child("rules"):
            pass
    by_name = {s.name: s for s in finished(memory)}
    assert set(by_name) == {SPAN_NAME, "identity", "store.revoked", "rules"}

    def parent_of(name: str) -> str:
        parent = by_name[name].parent
        assert parent is not None
        return format(parent.span_id, "016x")

    check_id = hex_ids(by_name[SPAN_NAME])[1]
    assert parent_of("identity") == check_id and parent_of("rules") == check_id
    assert parent_of("store.revoked") == hex_ids(by_name["identity"])[1]
    assert dict(by_name["store.revoked"].attributes or {}) == {"store.operation": "revoked"}


def test_an_unsampled_parent_records_nothing(memory: Memory) -> None:
    with check_span([("traceparent", f"00-{TRACE}-{SPAN}-00")]) as span:
        assert span is NOOP
        # Not even a non-recording span from the SDK: nothing is made for nothing.
        assert not trace.get_current_span().get_span_context().is_valid
        assert current_ids() is None
        assert child("store.revoked") is NOOP
    assert finished(memory) == []


def test_the_parent_decides_over_the_root_ratio() -> None:
    tracing, exporter = traced(root_ratio=0.0)
    try:
        with check_span():
            assert current_ids() is None
        with check_span([("traceparent", TP)]):
            assert current_ids() is not None
        tracing.provider.force_flush()
        [recorded] = exporter.get_finished_spans()
        assert hex_ids(recorded)[0] == TRACE
    finally:
        tracing.shutdown()


def test_an_exception_marks_the_span_and_still_propagates(memory: Memory) -> None:
    with pytest.raises(ZeroDivisionError), check_span():
        _ = 1 / 0
    [recorded] = finished(memory)
    assert recorded.status.status_code is StatusCode.ERROR
    assert [event.name for event in recorded.events] == ["exception"]


def test_internal_error_is_an_error_span(memory: Memory) -> None:
    with check_span() as span:
        span.set_decision(Decision(False, Reason.INTERNAL_ERROR), None)
    [recorded] = finished(memory)
    assert recorded.status.status_code is StatusCode.ERROR
    assert "authz.policy_version" not in (recorded.attributes or {})


def test_the_context_is_restored_after_the_check(memory: Memory) -> None:
    before = trace.get_current_span()
    with check_span():
        assert trace.get_current_span() is not before
    assert trace.get_current_span() is before and current_ids() is None


def test_start_time_covers_what_came_before_the_span(memory: Memory) -> None:
    with check_span(start_time_ns=1_700_000_000_000_000_000):
        pass
    [recorded] = finished(memory)
    assert recorded.start_time == 1_700_000_000_000_000_000


async def test_concurrent_checks_keep_their_own_spans(memory: Memory) -> None:
    """Checks interleave on one event loop; each sees its own span across awaits."""

    async def one(trace_id: str) -> tuple[TraceIds | None, TraceIds | None]:
        with check_span([("traceparent", f"00-{trace_id}-{SPAN}-01")]) as span:
            await asyncio.sleep(0)
            with span.child("rules"):
                await asyncio.sleep(0)
            return span.ids, current_ids()

    results = await asyncio.gather(*(one(f"{i:032x}") for i in range(1, 6)))
    for i, (own, current) in enumerate(results, start=1):
        assert own is not None and own == current and own.trace_id == f"{i:032x}"
    assert len(finished(memory)) == 10


def test_shutdown_turns_tracing_off() -> None:
    tracing, exporter = traced()
    with check_span():
        pass
    assert tracing.shutdown(timeout_s=5.0) is True
    assert len(exporter.get_finished_spans()) == 1, "queued spans are exported on shutdown"
    assert check_span([("traceparent", TP)]) is NOOP and spans.tracer() is None
