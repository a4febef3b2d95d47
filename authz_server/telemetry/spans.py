"""The Check path's side of tracing: one span per Check, child spans, the ids to record.

    with check_span(context.invocation_metadata, view.headers) as span:
        with span.child("identity"): ...
        span.set_decision(decision, policy_version)
        ids = current_ids()          # for the audit record and Envoy's metadata

With tracing off (`tracer()` is None, the default) `check_span` and `child` return one
shared object whose methods do nothing: one global read and a call, no allocation, no
metadata or header read. `metadata` may be a callable (the gRPC context's
`invocation_metadata`) so that it is only called when tracing is on.

With tracing on, the Check span is a SERVER span whose parent is the first valid context
in the gRPC metadata, then the HTTP headers (`propagation`); the sampler follows that
parent's decision. Ending a span only queues it for the export thread (`tracing`), so a
slow or unreachable collector never delays or changes a decision. Nothing here raises
into the Check path: a tracing failure costs the span, never the decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from contextvars import Token
from types import TracebackType
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from authz_server.core.decision import Decision, Reason
from authz_server.telemetry.attributes import (
    RPC_ATTRIBUTES,
    SPAN_NAME,
    TraceIds,
    decision_attributes,
)
from authz_server.telemetry.propagation import extract_parent

__all__ = [
    "NOOP",
    "CheckSpan",
    "ChildSpan",
    "check_span",
    "child",
    "current_ids",
    "install",
    "tracer",
]

log = logging.getLogger(__name__)

Metadata = Iterable[Any] | Callable[[], Iterable[Any] | None] | None

_tracer: Tracer | None = None


def install(new: Tracer | None) -> None:
    """Make `new` the tracer of every Check from now on; None turns tracing off.

    Its sampler must follow the parent's decision (`start_tracing` installs such a one):
    a Check under an unsampled parent gets no span at all, not even a non-recording one.
    """
    global _tracer
    _tracer = new


def tracer() -> Tracer | None:
    return _tracer


class ChildSpan(Protocol):
    """A phase of the Check (identity, rules, a store call) as a context manager."""

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None: ...


class CheckSpan(Protocol):
    """What the Check path holds while a Check is traced (or not)."""

    def set_decision(self, decision: Decision, policy_version: str | None) -> None: ...

    def child(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> ChildSpan: ...

    @property
    def ids(self) -> TraceIds | None: ...


class _Noop:
    """Tracing off, or a Check that is not sampled: every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> _Noop:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_decision(self, decision: Decision, policy_version: str | None) -> None:
        return None

    def child(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> _Noop:
        return self

    @property
    def ids(self) -> TraceIds | None:
        return None


NOOP = _Noop()


def check_span(
    metadata: Metadata = None,
    headers: Mapping[str, str] | None = None,
    *,
    start_time_ns: int | None = None,
) -> _Noop | _LiveCheckSpan:
    """The span of one Check, to enter with `with`; `start_time_ns` (time.time_ns()) when
    the Check began before its request was parsed."""
    current = _tracer
    if current is None:
        return NOOP
    return _LiveCheckSpan(current, metadata, headers, start_time_ns)


def child(name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Any:
    """A child of the current span, for code that holds no `CheckSpan` (e.g. the store);
    nothing while tracing is off or the current span is not recorded."""
    current = _tracer
    if current is None or not trace.get_current_span().is_recording():
        return NOOP
    return current.start_as_current_span(name, attributes=attributes)


def current_ids() -> TraceIds | None:
    """The ids of the current span when it is sampled (so the backend will have it)."""
    if _tracer is None:
        return None
    return _ids(trace.get_current_span())


def _ids(span: trace.Span) -> TraceIds | None:
    context = span.get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return TraceIds(format(context.trace_id, "032x"), format(context.span_id, "016x"))


class _LiveCheckSpan:
    __slots__ = ("_headers", "_metadata", "_span", "_start", "_token", "_tracer")

    def __init__(
        self,
        tracer: Tracer,
        metadata: Metadata,
        headers: Mapping[str, str] | None,
        start_time_ns: int | None,
    ) -> None:
        self._tracer = tracer
        self._metadata = metadata
        self._headers = headers
        self._start = start_time_ns
        self._span: trace.Span = trace.INVALID_SPAN
        self._token: Token[Context] | None = None

    def __enter__(self) -> CheckSpan:
        try:
            metadata = self._metadata() if callable(self._metadata) else self._metadata
            parent = extract_parent(metadata, self._headers)
            if parent is not None and not parent.trace_flags.sampled:
                # The sampler follows the parent (`start_tracing` installs a parent-based
                # one): skip the SDK's non-recording span, there is nothing to record.
                return NOOP
            context = Context() if parent is None else set_span_in_context(NonRecordingSpan(parent))
            self._span = self._tracer.start_span(
                SPAN_NAME,
                context=context,
                kind=SpanKind.SERVER,
                attributes=RPC_ATTRIBUTES,
                start_time=self._start,
            )
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        except Exception:  # tracing is never worth a decision
            log.exception("could not start the span of a Check")
            return NOOP
        return self if self._span.is_recording() else NOOP

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if error is not None and self._span.is_recording():
                self._span.record_exception(error)
                self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            if self._token is not None:
                otel_context.detach(self._token)
            self._span.end()
        except Exception:
            log.exception("could not end the span of a Check")

    def set_decision(self, decision: Decision, policy_version: str | None) -> None:
        try:
            self._span.set_attributes(decision_attributes(decision, policy_version))
            if decision.reason is Reason.INTERNAL_ERROR:
                self._span.set_status(Status(StatusCode.ERROR, decision.reason.value))
        except Exception:
            log.exception("could not record a decision on its span")

    def child(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Any:
        return self._tracer.start_as_current_span(name, attributes=attributes)

    @property
    def ids(self) -> TraceIds | None:
        return _ids(self._span)
