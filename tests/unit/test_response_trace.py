"""Envoy-visible decision metadata: the same keys on allow and deny, and a traced Check's
ids added to it, from the pre-serialized templates as from a freshly built response."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz_server.check.response import render_check_response, render_response_bytes
from authz_server.core.decision import Decision, Reason
from authz_server.telemetry.attributes import TraceIds

TRACE = TraceIds("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
PRINCIPAL = "spiffe://example.org/ns/shop/sa/frontend"

DECISIONS = [
    pytest.param(
        Decision(True, Reason.ALLOWED_BY_RULE, rule="orders-read", principal=PRINCIPAL),
        id="allow",
    ),
    pytest.param(
        Decision(False, Reason.DENIED_BY_RULE, rule="no-admin", principal=PRINCIPAL), id="deny"
    ),
    pytest.param(
        Decision(
            False,
            Reason.DENIED_BY_RULE,
            rule="would-deny",
            dry_run=True,
            enforced_rule="orders-read",
            principal=PRINCIPAL,
        ),
        id="dry-run",
    ),
    # Not served from a template: the approval id and retry-after vary per decision.
    pytest.param(
        Decision(False, Reason.APPROVAL_REQUIRED, rule="publish", approval_id="ap-1"),
        id="approval",
    ),
    pytest.param(Decision(False, Reason.RATE_LIMITED, rule="t", retry_after=30), id="rate"),
    pytest.param(Decision(False, Reason.NO_IDENTITY), id="no-rule"),
]


def _parse(data: bytes) -> Any:
    return external_auth_pb2.CheckResponse.FromString(data)


def _metadata(response: Any) -> dict[str, Any]:
    return {k: v for k, v in response.dynamic_metadata.items()}


@pytest.mark.parametrize("decision", DECISIONS)
def test_allow_and_deny_carry_the_same_metadata_keys(decision: Decision) -> None:
    """What the access log reads: decision id, reason, rule, principal, dry run."""
    metadata = _metadata(_parse(render_response_bytes(decision)))
    rule = decision.enforced_rule if decision.dry_run else decision.rule
    assert metadata == {
        "decision_id": decision.decision_id,
        "reason": decision.reason.value,
        "rule": rule or "",
        "principal": decision.principal or "",
        "dry_run": decision.dry_run,
    }


@pytest.mark.parametrize("decision", DECISIONS)
def test_a_traced_response_adds_the_ids_and_changes_nothing_else(decision: Decision) -> None:
    for _ in range(2):  # the first render makes the template, the second uses it
        traced = _parse(render_response_bytes(decision, (), TRACE))
        built = render_check_response(decision, (), TRACE)
        assert traced == built
        assert _metadata(traced) == {
            **_metadata(_parse(render_response_bytes(decision))),
            "trace_id": TRACE.trace_id,
            "span_id": TRACE.span_id,
        }
        untraced = render_check_response(decision)
        del built.dynamic_metadata["trace_id"]
        del built.dynamic_metadata["span_id"]
        assert built == untraced


def test_a_traced_allow_still_removes_forged_headers() -> None:
    decision = Decision(True, Reason.ALLOWED_BY_RULE, rule="orders-read", principal=PRINCIPAL)
    response = _parse(render_response_bytes(decision, ["x-authz-rule", "x-authz-extra"], TRACE))
    assert list(response.ok_response.headers_to_remove) == ["x-authz-extra"]
    assert _metadata(response)["trace_id"] == TRACE.trace_id


def test_untraced_responses_have_no_trace_keys() -> None:
    decision = Decision(True, Reason.ALLOWED_BY_RULE, rule="orders-read")
    assert not {"trace_id", "span_id"} & set(_metadata(_parse(render_response_bytes(decision))))
