"""A small, real OTLP/gRPC trace receiver that keeps what it is sent.

For the tests and the tracing benchmark, and to try `--otlp-endpoint` without a
collector: it serves OpenTelemetry's `TraceService` (the collector's own protocol, from
`opentelemetry-proto`) on a loopback port and holds every span in memory.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

__all__ = ["OtlpReceiver", "ReceivedSpan"]


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One exported span, its ids as lower-case hex and its attributes as Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    resource: dict[str, Any]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # the gRPC method
        self._receiver._add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """`start()` binds 127.0.0.1:0 and returns the port; `spans` is what arrived."""

    def __init__(self) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        add = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
        add(_Servicer(self), self._server)  # type: ignore[no-untyped-call]
        self._arrived = threading.Condition()
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> int:
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self.port

    def stop(self) -> None:
        self._server.stop(grace=None)

    def _add(self, request: Any) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.kind,
                            _attributes(span.attributes),
                            span.status.code,
                            resource,
                        )
                    )
        with self._arrived:
            self.requests += 1
            self.spans.extend(received)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ReceivedSpan]:
        """The spans received once there are at least `count` (TimeoutError otherwise)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.spans) >= count, timeout_s):
                raise TimeoutError(f"{len(self.spans)} of {count} spans arrived")
            return list(self.spans)
