"""Tracing for a test: the real SDK set up by `start_tracing`, spans kept in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authz_server.telemetry import spans
from authz_server.telemetry.tracing import Tracing
from tests.unit.telemetry.support import traced


@pytest.fixture(autouse=True)
def tracing_off_afterwards() -> Iterator[None]:
    """No test leaves a tracer installed for the next one."""
    yield
    spans.install(None)


@pytest.fixture
def memory() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    tracing, exporter = traced()
    yield tracing, exporter
    tracing.shutdown(timeout_s=5.0)
