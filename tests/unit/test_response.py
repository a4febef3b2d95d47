"""Decision → CheckResponse rendering (SPEC §7)."""

from __future__ import annotations

import json

import pytest

from authz_server.decision import STATUS_BY_REASON, Decision, Reason
from authz_server.response import render_check_response


def _headers(options: object) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}  # type: ignore[attr-defined]


def test_allow_sets_identity_headers_and_strips_client_ones() -> None:
    """Allow overwrites our headers and removes every other client-sent x-authz-* header."""
    decision = Decision(True, Reason.ALLOWED_BY_RULE, rule="orders-read", principal="spiffe://e/a")
    response = render_check_response(
        decision, ["x-authz-principal", "x-authz-extra", "X-Authz-Case", "accept"]
    )
    assert response.status.code == 0
    headers = _headers(response.ok_response.headers)
    assert headers == {
        "x-authz-principal": "spiffe://e/a",
        "x-authz-rule": "orders-read",
        "x-authz-decision-id": decision.decision_id,
    }
    assert all(
        h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD for h in response.ok_response.headers
    )
    assert list(response.ok_response.headers_to_remove) == ["x-authz-extra"]
    metadata = dict(response.dynamic_metadata.fields)
    assert metadata["principal"].string_value == "spiffe://e/a"
    assert metadata["rule"].string_value == "orders-read"
    assert metadata["decision_id"].string_value == decision.decision_id


def test_allow_without_identity_removes_forged_principal() -> None:
    """An anonymous allow must not leave a client's x-authz-principal in place."""
    decision = Decision(True, Reason.ALLOWED_BY_RULE, rule="health")
    response = render_check_response(decision, ["x-authz-principal"])
    headers = _headers(response.ok_response.headers)
    assert "x-authz-principal" not in headers
    assert "x-authz-principal" in response.ok_response.headers_to_remove


@pytest.mark.parametrize(
    "reason", [r for r in Reason if STATUS_BY_REASON[r][0] != 0], ids=lambda r: r.value
)
def test_deny_body_and_status(reason: Reason) -> None:
    """Every deny reason renders its status, JSON body and decision id header."""
    decision = Decision(False, reason, rule="r1")
    response = render_check_response(decision)
    grpc_code, http_status = STATUS_BY_REASON[reason]
    assert response.status.code == grpc_code
    assert response.denied_response.status.code == http_status
    headers = _headers(response.denied_response.headers)
    assert headers["content-type"] == "application/json"
    assert headers["x-authz-decision-id"] == decision.decision_id
    assert json.loads(response.denied_response.body) == {
        "decision": "deny",
        "reason": reason.value,
        "rule": "r1",
        "decision_id": decision.decision_id,
    }


def test_deny_with_retry_after_and_approval() -> None:
    """Rate limits and approvals add their headers and the approval id in the body."""
    decision = Decision(False, Reason.APPROVAL_REQUIRED, approval_id="ap1", retry_after=30)
    response = render_check_response(decision)
    headers = _headers(response.denied_response.headers)
    assert headers["x-authz-approval-id"] == "ap1"
    assert headers["retry-after"] == "30"
    assert json.loads(response.denied_response.body)["approval_id"] == "ap1"


def test_dry_run_deny_is_enforced_as_allow() -> None:
    """A dry-run deny renders as an OK response."""
    decision = Decision(
        False, Reason.DENIED_BY_RULE, rule="r", dry_run=True, principal="spiffe://e/a"
    )
    assert render_check_response(decision).HasField("ok_response")


def test_every_reason_has_a_status() -> None:
    """The reason table is total."""
    assert set(STATUS_BY_REASON) == set(Reason)
