"""The start-up check that the OTLP protos are opentelemetry-proto's, not the old copies
xds-protos ships under the same paths: the installed set passes; descriptors shaped like
the old copies (built here in a pool of their own) are refused with the repair."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from authz_server.telemetry.otlp_protos import (
    REPAIR,
    otlp_protos_problem,
    request_shape_problem,
)

_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_BYTES = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES


def _old_request(inner: str, inner_field: str, span_fields: tuple[str, ...]) -> Any:
    """An ExportTraceServiceRequest descriptor whose ResourceSpans holds `inner` messages
    in field `inner_field` (the old protos: InstrumentationLibrarySpans)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="old/trace.proto", package="opentelemetry.proto.trace.v1", syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, str | None]]) -> None:
        proto = file.message_type.add(name=name)
        for number, (field, type_name) in enumerate(fields, start=1):
            proto.field.add(
                name=field,
                number=number,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                if type_name
                else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                type=_MESSAGE if type_name else _BYTES,
                type_name=f".opentelemetry.proto.trace.v1.{type_name}" if type_name else None,
            )

    message("Span", [(name, None) for name in span_fields])
    message(inner, [("spans", "Span")])
    message("ResourceSpans", [(inner_field, inner)])
    message("ExportTraceServiceRequest", [("resource_spans", "ResourceSpans")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool.FindMessageTypeByName("opentelemetry.proto.trace.v1.ExportTraceServiceRequest")


SPAN_FIELDS = ("trace_id", "span_id", "parent_span_id", "flags", "attributes", "status")


@pytest.mark.parametrize(
    ("inner", "field", "span_fields", "problem"),
    [
        pytest.param(
            "InstrumentationLibrarySpans", "instrumentation_library_spans", SPAN_FIELDS,
            "opentelemetry.proto.trace.v1.ResourceSpans has no field scope_spans",
            id="xds-protos-copy",
        ),
        pytest.param(
            "InstrumentationLibrarySpans", "scope_spans", SPAN_FIELDS,
            "scope_spans is a opentelemetry.proto.trace.v1.InstrumentationLibrarySpans, "
            "not a opentelemetry.proto.trace.v1.ScopeSpans",
            id="renamed-field-old-message",
        ),
        pytest.param(
            "ScopeSpans", "scope_spans", SPAN_FIELDS[:3],
            "opentelemetry.proto.trace.v1.Span has no field(s) flags, attributes, status",
            id="span-without-flags",
        ),
    ],
)  # fmt: skip
def test_old_shapes_are_refused(
    inner: str, field: str, span_fields: tuple[str, ...], problem: str
) -> None:
    assert request_shape_problem(_old_request(inner, field, span_fields)) == problem


def test_the_installed_protos_are_the_exporters() -> None:
    assert request_shape_problem(ExportTraceServiceRequest.DESCRIPTOR) is None
    assert otlp_protos_problem() is None


def test_the_repair_is_a_command() -> None:
    assert "pip install --force-reinstall --no-deps opentelemetry-proto" in REPAIR
