"""The Authorization/Check handler: a thin adapter that never raises.

Requests arrive as raw bytes (a generic handler without a deserializer), so that a
malformed CheckRequest becomes a `malformed_request` deny instead of a gRPC error that
Envoy would have to interpret. The one catch-all turns anything unexpected into a
fail-closed `internal_error` deny, logged with its traceback.
"""

from __future__ import annotations

import logging
import time

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

    async def check_bytes(self, data: bytes, context: object = None) -> bytes:
        """Decide one serialized CheckRequest; always returns a serialized CheckResponse.

        Registered as the gRPC method itself (`context` unused): no wrapper coroutine.
        """
        started = time.perf_counter_ns()
        # One version for the whole Check; none while the audit sink is down (fail closed).
        snapshot = self.state.snapshot if self.audit.healthy else None
        view: RequestView | None = None
        try:
            view, decision = await self._decide(data, snapshot)
            response = render_response_bytes(decision, view.headers if view else ())
        except Exception:
            log.exception("Check failed; denying (internal_error)")
            decision = Decision(False, Reason.INTERNAL_ERROR)
            response = render_response_bytes(decision)
        self.decisions += 1
        elapsed_ns = time.perf_counter_ns() - started
        self.observer.observe(decision, elapsed_ns / 1e9)
        try:
            self.audit.record(
                audit_record(
                    decision,
                    view,
                    policy_version=snapshot.policy.version if snapshot else "",
                    latency_us=elapsed_ns // 1000,
                )
            )
        except Exception:
            log.exception("audit record for decision %s failed", decision.decision_id)
        return response

    async def _decide(
        self, data: bytes, snapshot: Snapshot | None
    ) -> tuple[RequestView | None, Decision]:
        try:
            request = external_auth_pb2.CheckRequest.FromString(data)
        except DecodeError:
            return None, Decision(False, Reason.MALFORMED_REQUEST)
        if snapshot is None:
            # Not ready: no policy or no bundles yet. Fail closed.
            return None, Decision(False, Reason.INTERNAL_ERROR)
        try:
            view = view_from_check_request(request)
        except RequestError as error:
            if error.reason is Reason.UNSUPPORTED_REQUEST and snapshot.policy.allow_non_http:
                # The opt-in lets connections through, never anonymous or revoked callers.
                view = connection_view(request)
                return view, await self.pipeline.authenticate_connection(view, snapshot)
            return None, Decision(False, error.reason)
        return view, await self.pipeline.evaluate(view, snapshot)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Check": grpc.unary_unary_rpc_method_handler(self.check_bytes)}
        )
