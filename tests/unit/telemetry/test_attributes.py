"""Decision → span attributes: every decision field under its `authz.*` name, absent
values left out, and the trace ids in the shape audit records and metadata carry."""

from __future__ import annotations

import pytest

from authz_server.core.decision import Decision, Reason
from authz_server.telemetry.attributes import TraceIds, decision_attributes

ID = "d" * 32
ALICE = "spiffe://example.org/humans/alice"

CASES = [
    pytest.param(
        Decision(True, Reason.ALLOWED_BY_RULE, rule="orders-read", principal=ALICE,
                 identity_source="peer", decision_id=ID),
        "v1",
        {"authz.decision": "allow", "authz.reason": "allowed_by_rule", "authz.dry_run": False,
         "authz.decision_id": ID, "authz.rule": "orders-read", "authz.principal": ALICE,
         "authz.identity_source": "peer", "authz.policy_version": "v1"},
        id="allow",
    ),
    pytest.param(
        Decision(False, Reason.APPROVAL_REQUIRED, rule="publish", principal=ALICE,
                 identity_source="jwt_svid", approval_id="a" * 64, decision_id=ID),
        "v2",
        {"authz.decision": "deny", "authz.reason": "approval_required", "authz.dry_run": False,
         "authz.decision_id": ID, "authz.rule": "publish", "authz.principal": ALICE,
         "authz.identity_source": "jwt_svid", "authz.approval_id": "a" * 64,
         "authz.policy_version": "v2"},
        id="approval-required",
    ),
    pytest.param(
        Decision(False, Reason.DENIED_BY_RULE, rule="no-admin", principal=ALICE, dry_run=True,
                 enforced_rule="orders-read", decision_id=ID),
        "v3",
        {"authz.decision": "deny", "authz.reason": "denied_by_rule", "authz.dry_run": True,
         "authz.decision_id": ID, "authz.rule": "no-admin", "authz.principal": ALICE,
         "authz.policy_version": "v3", "authz.enforced_rule": "orders-read"},
        id="dry-run-would-be-deny",
    ),
    pytest.param(
        Decision(False, Reason.MALFORMED_REQUEST, decision_id=ID),
        None,
        {"authz.decision": "deny", "authz.reason": "malformed_request", "authz.dry_run": False,
         "authz.decision_id": ID},
        id="no-policy-no-principal",
    ),
    pytest.param(
        Decision(False, Reason.NO_MATCHING_RULE, rule="", principal="", decision_id=ID),
        "",
        {"authz.decision": "deny", "authz.reason": "no_matching_rule", "authz.dry_run": False,
         "authz.decision_id": ID},
        id="empty-values-left-out",
    ),
    pytest.param(
        Decision(True, Reason.ALLOWED_BY_RULE, rule="r", enforced_rule="other", decision_id=ID),
        "v",
        {"authz.decision": "allow", "authz.reason": "allowed_by_rule", "authz.dry_run": False,
         "authz.decision_id": ID, "authz.rule": "r", "authz.policy_version": "v"},
        id="enforced-rule-only-in-dry-run",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("decision", "version", "expected"), CASES)
def test_decision_attributes(
    decision: Decision, version: str | None, expected: dict[str, object]
) -> None:
    assert decision_attributes(decision, version) == expected


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_reason_maps(reason: Reason) -> None:
    attributes = decision_attributes(Decision(False, reason), "v")
    assert attributes["authz.reason"] == reason.value
    assert all(isinstance(v, str | bool) for v in attributes.values())


def test_trace_ids_fields() -> None:
    ids = TraceIds("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert ids.fields() == {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
    }
    trace_id, span_id = ids
    assert (trace_id, span_id) == tuple(ids.fields().values())
