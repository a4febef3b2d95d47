"""What a Check span says about its decision, and the trace ids other records carry.

The attribute names are a stable interface (queries and dashboards in a trace backend
depend on them): `authz.*` for the decision, OpenTelemetry's `rpc.*` conventions for the
call. Absent values are left out rather than sent empty: OpenTelemetry drops None, and an
empty string would read as "the rule named ''".
"""

from __future__ import annotations

from typing import NamedTuple

from opentelemetry.util.types import AttributeValue

from authz_server.core.decision import Decision

__all__ = [
    "APPROVAL_ID",
    "DECISION",
    "DECISION_ID",
    "DRY_RUN",
    "ENFORCED_RULE",
    "IDENTITY_SOURCE",
    "POLICY_VERSION",
    "PRINCIPAL",
    "REASON",
    "RPC_ATTRIBUTES",
    "RULE",
    "SPAN_NAME",
    "TraceIds",
    "decision_attributes",
]

DECISION = "authz.decision"
REASON = "authz.reason"
RULE = "authz.rule"
PRINCIPAL = "authz.principal"
IDENTITY_SOURCE = "authz.identity_source"
DRY_RUN = "authz.dry_run"
APPROVAL_ID = "authz.approval_id"
POLICY_VERSION = "authz.policy_version"
DECISION_ID = "authz.decision_id"
#: With dry run: the enforced rule that granted the request (`authz.rule` is the would-be deny's).
ENFORCED_RULE = "authz.enforced_rule"

#: The span of one Check is named like the gRPC method it serves.
SPAN_NAME = "envoy.service.auth.v3.Authorization/Check"
RPC_ATTRIBUTES: dict[str, AttributeValue] = {
    "rpc.system": "grpc",
    "rpc.service": "envoy.service.auth.v3.Authorization",
    "rpc.method": "Check",
}


def decision_attributes(
    decision: Decision, policy_version: str | None
) -> dict[str, AttributeValue]:
    """The span attributes of `decision`, decided under `policy_version` (None: no policy
    was in force, e.g. the server was not ready)."""
    attributes: dict[str, AttributeValue] = {
        DECISION: decision.verdict,
        REASON: decision.reason.value,
        DRY_RUN: decision.dry_run,
        DECISION_ID: decision.decision_id,
    }
    optional = (
        (RULE, decision.rule),
        (PRINCIPAL, decision.principal),
        (IDENTITY_SOURCE, decision.identity_source),
        (APPROVAL_ID, decision.approval_id),
        (POLICY_VERSION, policy_version),
        (ENFORCED_RULE, decision.enforced_rule if decision.dry_run else None),
    )
    for name, value in optional:
        if value:
            attributes[name] = value
    return attributes


class TraceIds(NamedTuple):
    """The trace and span of a sampled Check span, lower-case hex (32 and 16 digits), as
    W3C trace context writes them: what an audit record or Envoy's metadata can carry so
    that a decision can be found in the trace backend."""

    trace_id: str
    span_id: str

    def fields(self) -> dict[str, str]:
        """`{"trace_id": ..., "span_id": ...}`: the audit record's and the metadata's keys."""
        return {"trace_id": self.trace_id, "span_id": self.span_id}
