"""Are the `opentelemetry.proto` modules in this process the ones the OTLP exporter needs?

`xds-protos` (the Envoy API stubs) ships its own, years-old copies of the same files under
the same paths (`opentelemetry/proto/...`): no `ScopeSpans`, no `InstrumentationScope`.
pip writes whichever distribution it installs last over the other, and removing or
upgrading `xds-protos` deletes or replaces `opentelemetry-proto`'s files. With the old
copies the exporter cannot even be imported; a half-replaced set fails when the first
batch is encoded, on the export thread, where nobody sees it. So tracing checks at start
and refuses to start with a message that says how to repair the install.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REPAIR", "otlp_protos_problem", "request_shape_problem"]

REPAIR = (
    "the opentelemetry.proto modules installed are not opentelemetry-proto's (xds-protos "
    "installs older copies under the same paths); reinstall them after xds-protos: "
    "pip install --force-reinstall --no-deps opentelemetry-proto"
)

#: ExportTraceServiceRequest → field → message, as the exporter's encoder walks it.
_PATH = (
    ("resource_spans", "opentelemetry.proto.trace.v1.ResourceSpans"),
    ("scope_spans", "opentelemetry.proto.trace.v1.ScopeSpans"),
    ("spans", "opentelemetry.proto.trace.v1.Span"),
)
_SPAN_FIELDS = ("trace_id", "span_id", "parent_span_id", "flags", "attributes", "status")


def request_shape_problem(request: Any) -> str | None:
    """What an ExportTraceServiceRequest descriptor lacks that the encoder writes, or None."""
    descriptor = request
    for field_name, message in _PATH:
        field = descriptor.fields_by_name.get(field_name)
        if field is None or field.message_type is None:
            return f"{descriptor.full_name} has no field {field_name}"
        descriptor = field.message_type
        if descriptor.full_name != message:
            return f"{field_name} is a {descriptor.full_name}, not a {message}"
    missing = [name for name in _SPAN_FIELDS if name not in descriptor.fields_by_name]
    if missing:
        return f"{descriptor.full_name} has no field(s) {', '.join(missing)}"
    return None


def otlp_protos_problem() -> str | None:
    """None when the OTLP trace exporter and its protos load and agree; else what is wrong
    (with `REPAIR`)."""
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: F401
            OTLPSpanExporter,
        )
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
    except (ImportError, TypeError) as error:  # TypeError: a descriptor pool conflict
        return f"{REPAIR} ({type(error).__name__}: {error})"
    problem = request_shape_problem(ExportTraceServiceRequest.DESCRIPTOR)
    return None if problem is None else f"{REPAIR} ({problem})"
