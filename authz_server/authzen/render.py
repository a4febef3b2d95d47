"""Decision → the AuthZEN Decision object: `{"decision": bool, "context": {...}}`.

`decision` is what Envoy would enforce for the same request: true for an allow, and for
a dry-run deny (observed, not enforced); false for everything else. The context says why,
with the same names as the Check path's deny body and audit record:

    decision_id          the audit record's id (also the evaluation's id)
    evaluated_at         RFC 3339, the server's clock
    reason               the reason code (`allowed_by_rule`, `denied_by_rule`, ...)
    rule                 the rule that decided, when one did
    dry_run, enforced_rule   a dry-run decision: `reason`/`rule` are the would-be deny's
    approval_id, approval_expires_at   approval_required: the pending approval a human
                         decides (admin API), and until when it waits; ask again later
                         with the same request and the allow consumes the approval
    retry_after          rate_limited: seconds before asking again is useful
    error                {status, message}: an evaluation that could not be mapped

Absent values are omitted, never null (the standard's JSON advice).
"""

from __future__ import annotations

from typing import Any

from authz_server.audit.format import format_time
from authz_server.authzen.mapping import MappingProblem
from authz_server.core.decision import Decision

__all__ = ["decision_object"]


def decision_object(
    decision: Decision,
    problem: MappingProblem | None = None,
    approval_expires_us: int | None = None,
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "decision_id": decision.decision_id,
        "evaluated_at": format_time(decision.at),
        "reason": decision.reason.value,
    }
    if decision.rule:
        context["rule"] = decision.rule
    if decision.dry_run:
        context["dry_run"] = True
        if decision.enforced_rule:
            context["enforced_rule"] = decision.enforced_rule
    if decision.approval_id:
        context["approval_id"] = decision.approval_id
        if approval_expires_us is not None:
            context["approval_expires_at"] = format_time(approval_expires_us / 1e6)
    if decision.retry_after is not None:
        context["retry_after"] = decision.retry_after
    if problem is not None:
        context["error"] = {"status": decision.http_status, "message": problem.message}
    return {"decision": decision.enforced_allow, "context": context}
