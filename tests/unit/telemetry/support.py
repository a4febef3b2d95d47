"""Tracing set up for a unit test: the real SDK, spans kept in memory."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authz_server.telemetry.tracing import Tracing, TracingConfig, start_tracing


def traced(root_ratio: float = 1.0) -> tuple[Tracing, InMemorySpanExporter]:
    """Tracing on (`start_tracing`), exporting to memory instead of a collector."""
    exporter = InMemorySpanExporter()
    config = TracingConfig("http://127.0.0.1:4317", root_ratio=root_ratio)
    return start_tracing(config, exporter=exporter), exporter
