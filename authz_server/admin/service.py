"""The admin gRPC service (`authz.admin.v1.AdminService`, protos/authz_admin.proto).

Every method runs the same gate: a policy must be in force, the caller is authenticated
from its certificate (`auth.py`), must be an admin and must not be revoked
(`operations.AdminOperations.admit`). The approval and revocation methods are the
transport-agnostic `operations.AdminOperations` (shared with the web console), wrapped
into protobuf here.

Refusals become gRPC status codes with a message for the human at the CLI; a store that
cannot be reached is UNAVAILABLE, never a silent success.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from authz_server.admin import authz_admin_pb2 as pb
from authz_server.admin.auth import Caller, Refused, authenticate
from authz_server.admin.operations import AdminOperations, ApproversFor
from authz_server.check.offline import decide_offline, offline_snapshot
from authz_server.check.snapshot import Snapshot
from authz_server.core.clock import Clock, SystemClock
from authz_server.core.decision import Decision
from authz_server.core.errors import StoreUnavailable
from authz_server.core.request import RequestView, normalize_host, split_path
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.policy.conditions.approval import ApprovalCondition
from authz_server.policy.evaluate import Trace
from authz_server.policy.model import Policy
from authz_server.state.store import ApprovalRecord, Revocation, Store

__all__ = [
    "SERVICE_NAME",
    "AdminService",
    "ApproversFor",
    "Explain",
    "Explanation",
    "PolicyStatus",
    "pipeline_explain",
    "policy_approvers",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "authz.admin.v1.AdminService"


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    trace: list[dict[str, object]]


#: Evaluate a described request (principal taken as verified) at a time, without side effects.
Explain = Callable[[RequestView, datetime | None], Awaitable[Explanation]]


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """What the reloader knows beyond the snapshot: when it loaded, and the last failure."""

    loaded_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


def policy_approvers(policy: Policy, rule_id: str) -> tuple[PrincipalMatcher, ...]:
    """The `when.approval.approvers` of rule `rule_id` in `policy`; empty when it has none."""
    for rule in policy.rules:
        if rule.id == rule_id:
            for condition in rule.when.stateful:
                if isinstance(condition, ApprovalCondition):
                    return condition.approvers
    return ()


def pipeline_explain(snapshot_source: Callable[[], Snapshot | None]) -> Explain:
    """Explain the live policy as `authz-server check` decides (`check/offline.py`): the
    principal taken as verified, on empty state of its own. The server's store is never
    touched, so explaining spends, counts and creates nothing; a rate limit admits, an
    approval is `approval_required`, and revocations are not consulted.
    """

    async def explain(view: RequestView, at: datetime | None) -> Explanation:
        snapshot = snapshot_source()
        if snapshot is None:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "no policy loaded")
        trace = Trace()
        offline = offline_snapshot(snapshot.policy, snapshot.bundles)
        decision = await decide_offline(offline, view, at, trace)
        return Explanation(decision, trace.steps)

    return explain


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class AdminService:
    def __init__(
        self,
        *,
        store: Store,
        snapshot_source: Callable[[], Snapshot | None],
        explain: Explain,
        approvers_for: ApproversFor,
        insecure_local: bool = False,
        clock: Clock | None = None,
        policy_status: Callable[[], PolicyStatus] | None = None,
    ) -> None:
        #: The operations behind the approval and revocation calls (the console's too).
        self.operations = AdminOperations(store, approvers_for)
        self._snapshot = snapshot_source
        self._explain = explain
        self._insecure_local = insecure_local
        self._clock = clock or SystemClock()
        self._policy_status = policy_status or PolicyStatus

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Callable[..., Any], Any, Any]] = {
            "Explain": (self.explain, pb.ExplainRequest, pb.ExplainResponse),
            "ListApprovals": (
                self.list_approvals, pb.ListApprovalsRequest, pb.ListApprovalsResponse
            ),
            "Approve": (self.approve, pb.DecideRequest, pb.Approval),
            "Reject": (self.reject, pb.DecideRequest, pb.Approval),
            "Revoke": (self.revoke, pb.RevokeRequest, pb.Revocation),
            "Unrevoke": (self.unrevoke, pb.UnrevokeRequest, pb.UnrevokeResponse),
            "ListRevocations": (
                self.list_revocations, pb.ListRevocationsRequest, pb.ListRevocationsResponse
            ),
            "GetPolicy": (self.get_policy, pb.GetPolicyRequest, pb.PolicyInfo),
        }  # fmt: skip
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    self._guarded(name, method),
                    request_deserializer=request.FromString,
                    response_serializer=response.SerializeToString,
                )
                for name, (method, request, response) in methods.items()
            },
        )

    def _guarded(
        self, name: str, method: Callable[[Any, Caller, Snapshot], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        """The common gate, then the method; every refusal becomes a status code."""

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            caller_name = "?"
            try:
                snapshot = self._snapshot()
                if snapshot is None:
                    raise Refused(grpc.StatusCode.UNAVAILABLE, "no policy loaded")
                caller = self._caller(context, snapshot)
                caller_name = caller.name
                await self.operations.admit(caller, snapshot.policy)
                return await method(request, caller, snapshot)
            except Refused as refusal:
                log.warning("admin %s by %s refused: %s", name, caller_name, refusal.message)
                await context.abort(refusal.code, refusal.message)
            except StoreUnavailable as error:
                log.error("admin %s by %s: %s", name, caller_name, error)
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, f"state store unavailable: {error}"
                )
            except ValueError as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))

        return call

    def _caller(self, context: grpc.aio.ServicerContext[Any, Any], snapshot: Snapshot) -> Caller:
        if self._insecure_local:
            return Caller(None)
        auth_context = {k: list(v) for k, v in context.auth_context().items()}
        return authenticate(
            auth_context,
            snapshot.bundles,
            snapshot.policy.identity.trust_domains,
            self._clock.now(),
        )

    # methods -----------------------------------------------------------------------------

    async def explain(
        self, request: pb.ExplainRequest, caller: Caller, snapshot: Snapshot
    ) -> pb.ExplainResponse:
        path, query = split_path(request.path)
        if not request.method or not path:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "method and path are required")
        view = RequestView(
            method=request.method.upper(),
            host=normalize_host(request.host),
            path=path,
            query=query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.body if request.HasField("body") else None,
            principal=request.principal,
        )
        at = request.at.ToDatetime(tzinfo=UTC) if request.HasField("at") else None
        result = await self._explain(view, at)
        decision = result.decision
        return pb.ExplainResponse(
            decision=decision.verdict,
            reason=decision.reason.value,
            rule=decision.rule or "",
            http_status=decision.http_status,
            principal=decision.principal or "",
            dry_run=decision.dry_run,
            approval_id=decision.approval_id or "",
            policy_version=snapshot.policy.version,
            trace=[_struct(step) for step in result.trace],
        )

    async def list_approvals(
        self, request: pb.ListApprovalsRequest, caller: Caller, snapshot: Snapshot
    ) -> pb.ListApprovalsResponse:
        records = await self.operations.list_approvals(caller)
        return pb.ListApprovalsResponse(approvals=[_approval(r) for r in records])

    async def approve(
        self, request: pb.DecideRequest, caller: Caller, snapshot: Snapshot
    ) -> pb.Approval:
        return _approval(await self.operations.approve(caller, request.approval_id))

    async def reject(
        self, request: pb.DecideRequest, caller: Caller, snapshot: Snapshot
    ) -> pb.Approval:
        return _approval(await self.operations.reject(caller, request.approval_id))

    async def revoke(
        self, request: pb.RevokeRequest, caller: Caller, snapshot: Snapshot
    ) -> pb.Revocation:
        revocation = await self.operations.revoke(
            caller, request.pattern, request.ttl_seconds, request.reason
        )
        return _revocation(revocation)

    async def unrevoke(
        self, request: pb.UnrevokeRequest, caller: Caller, snapshot: Snapshot
    ) -> pb.UnrevokeResponse:
        removed = await self.operations.unrevoke(caller, request.pattern)
        return pb.UnrevokeResponse(removed=removed)

    async def list_revocations(
        self, request: pb.ListRevocationsRequest, caller: Caller, snapshot: Snapshot
    ) -> pb.ListRevocationsResponse:
        revocations = await self.operations.list_revocations(caller)
        return pb.ListRevocationsResponse(revocations=[_revocation(r) for r in revocations])

    async def get_policy(
        self, request: pb.GetPolicyRequest, caller: Caller, snapshot: Snapshot
    ) -> pb.PolicyInfo:
        policy = snapshot.policy
        status = self._policy_status()
        info = pb.PolicyInfo(
            version=policy.version,
            rule_count=len(policy.rules),
            last_reload_error=status.last_error or "",
            files=list(policy.files),
        )
        if status.loaded_at is not None:
            info.loaded_at.FromDatetime(status.loaded_at)
        if status.last_error_at is not None:
            info.last_reload_error_at.FromDatetime(status.last_error_at)
        return info


def _timestamp(us: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(us)
    return stamp


def _approval(record: ApprovalRecord) -> pb.Approval:
    message = pb.Approval(
        approval_id=record.approval_id,
        status=record.status.value,
        principal=record.principal,
        method=record.method,
        host=record.host,
        path=record.path,
        query=record.query,
        body_digest=record.body_digest or "",
        rule_id=record.rule_id,
        approvers=list(record.approvers),
        created_at=_timestamp(record.created_us),
        expires_at=_timestamp(record.expires_us),
        decided_by=record.decided_by or "",
    )
    if record.decided_us is not None:
        message.decided_at.CopyFrom(_timestamp(record.decided_us))
    return message


def _revocation(revocation: Revocation) -> pb.Revocation:
    return pb.Revocation(
        pattern=revocation.pattern,
        reason=revocation.reason,
        revoked_by=revocation.by,
        created_at=_timestamp(revocation.created_us),
        expires_at=_timestamp(revocation.expires_us),
    )


def _struct(step: dict[str, object]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    json_format.ParseDict(json.loads(json.dumps(step, default=str)), struct)
    return struct
