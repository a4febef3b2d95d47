"""The Authorization/Check handler: a thin adapter that never raises.

Requests arrive as raw bytes (a generic handler without a deserializer), so that a
malformed CheckRequest becomes a `malformed_request` deny instead of a gRPC error that
Envoy would have to interpret. The one catch-all turns anything unexpected into a
fail-closed `internal_error` deny, logged with its traceback.

With tracing on (`telemetry.tracing`), the Check gets a span from the moment the request
arrived, opened once the request is read (its parent may be in the request's headers)
and ended after the audit record; the record and Envoy's dynamic metadata carry its ids.
With tracing off that costs one check of a global.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import DecodeError

from authz_server.audit.log import AuditLog, audit_record
from authz_server.check.pipeline import Pipeline
from authz_server.check.response import render_response_bytes
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.core.decision import Decision, Reason
from authz_server.core.errors import RequestError
from authz_server.core.request import RequestView, connection_view, view_from_check_request
from authz_server.telemetry import spans
from authz_server.telemetry.metrics import NULL_OBSERVER, DecisionObserver

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.auth.v3.Authorization"


class CheckService:
    def __init__(
        self,
        pipeline: Pipeline,
        state: SnapshotHolder,
        audit: AuditLog,
        observer: DecisionObserver = NULL_OBSERVER,
    ) -> None:
        self.pipeline = pipeline
        self.state = state
        self.audit = audit
        self.observer = observer  # metrics: one cheap call per decision
        self.decisions = 0

    async def check_bytes(self, data: bytes, context: Any = None) -> bytes:
        """Decide one serialized CheckRequest; always returns a serialized CheckResponse.

        Registered as the gRPC method itself: no wrapper coroutine. `context` (the gRPC
        call's) is read only while tracing is on, for the parent in its metadata.
        """
        started = time.perf_counter_ns()
        traced = spans.tracer() is not None
        wall_start = time.time_ns() if traced else None
        # One version for the whole Check; none while the audit sink is down (fail closed).
        snapshot = self.state.snapshot if self.audit.healthy else None
        view: RequestView | None = None
        try:
            view, early = self._read(data, snapshot)
        except Exception:
            log.exception("Check failed; denying (internal_error)")
            early = Decision(False, Reason.INTERNAL_ERROR)
        if not traced:
            return await self._answer(view, early, snapshot, started, spans.NOOP)
        metadata = getattr(context, "invocation_metadata", None)
        headers = view.headers if view is not None else None
        with spans.check_span(metadata, headers, start_time_ns=wall_start) as span:
            return await self._answer(view, early, snapshot, started, span)

    async def _answer(
        self,
        view: RequestView | None,
        decision: Decision | None,
        snapshot: Snapshot | None,
        started: int,
        span: spans.CheckSpan,
    ) -> bytes:
        """Decide (unless `decision` already is the answer), render, count and audit."""
        policy_version = snapshot.policy.version if snapshot else ""
        trace = span.ids  # None unless traced and sampled
        try:
            if decision is None:  # no coroutine in between: this is the Check path
                assert view is not None and snapshot is not None
                if view.method:
                    decision = await self.pipeline.evaluate(view, snapshot)
                else:  # a connection without HTTP attributes (`connection_view`)
                    decision = await self.pipeline.authenticate_connection(view, snapshot)
            span.set_decision(decision, policy_version or None)
            response = render_response_bytes(decision, view.headers if view else (), trace)
        except Exception:
            log.exception("Check failed; denying (internal_error)")
            decision = Decision(False, Reason.INTERNAL_ERROR)
            span.set_decision(decision, policy_version or None)
            response = render_response_bytes(decision, (), trace)
        self.decisions += 1
        elapsed_ns = time.perf_counter_ns() - started
        self.observer.observe(decision, elapsed_ns / 1e9)
        try:
            self.audit.record(
                audit_record(
                    decision,
                    view,
                    policy_version=policy_version,
                    latency_us=elapsed_ns // 1000,
                    trace=trace,
                )
            )
        except Exception:
            log.exception("audit record for decision %s failed", decision.decision_id)
        return response

    def _read(
        self, data: bytes, snapshot: Snapshot | None
    ) -> tuple[RequestView | None, Decision | None]:
        """The request's view, or the deny it gets before any rule is read (None: decide)."""
        try:
            request = external_auth_pb2.CheckRequest.FromString(data)
        except DecodeError:
            return None, Decision(False, Reason.MALFORMED_REQUEST)
        if snapshot is None:
            # Not ready: no policy or no bundles yet. Fail closed.
            return None, Decision(False, Reason.INTERNAL_ERROR)
        try:
            return view_from_check_request(request), None
        except RequestError as error:
            if error.reason is Reason.UNSUPPORTED_REQUEST and snapshot.policy.allow_non_http:
                # The opt-in lets connections through, never anonymous or revoked callers.
                return connection_view(request), None
            return None, Decision(False, error.reason)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Check": grpc.unary_unary_rpc_method_handler(self.check_bytes)}
        )
