"""Decision → CheckResponse rendering (docs/concepts/response-contract.md)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz_server.check import response as response_module
from authz_server.check.response import render_check_response, render_response_bytes
from authz_server.core.decision import STATUS_BY_REASON, Decision, Reason, new_decision_id


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


# --- rendering from templates (the Check path) -------------------------------------------

_TD = "spiffe://example.org"
_TEMPLATED = [
    pytest.param(
        Decision(True, Reason.ALLOWED_BY_RULE, rule="r", principal=f"{_TD}/a"), id="allow"
    ),
    pytest.param(Decision(True, Reason.ALLOWED_BY_DEFAULT), id="allow-default-anonymous"),
    pytest.param(Decision(True, Reason.ALLOWED_BY_RULE, rule="health"), id="allow-no-principal"),
    pytest.param(
        Decision(False, Reason.DENIED_BY_RULE, rule="r", principal=f"{_TD}/a", dry_run=True),
        id="dry-run-deny",
    ),
    pytest.param(
        Decision(True, Reason.ALLOWED_BY_RULE, rule="r", principal=f"{_TD}/a", dry_run=True),
        id="dry-run-allow",
    ),
    pytest.param(
        Decision(False, Reason.CERTIFICATE_INVALID, principal='spiffe://x/"quoted"\\ü'),
        id="deny-unverified-principal-to-escape",
    ),
    pytest.param(Decision(False, Reason.NO_MATCHING_RULE, principal=f"{_TD}/a"), id="deny-default"),
    pytest.param(Decision(False, Reason.INTERNAL_ERROR), id="internal-error"),
    pytest.param(Decision(False, Reason.MALFORMED_REQUEST), id="malformed"),
    *(
        pytest.param(Decision(False, r, rule="r1", principal=f"{_TD}/b"), id=f"deny-{r.value}")
        for r in Reason
        if STATUS_BY_REASON[r][0] != 0
    ),
]
_FRESH = [
    pytest.param(
        Decision(False, Reason.APPROVAL_REQUIRED, rule="r", approval_id="ap1"), id="approval"
    ),
    pytest.param(Decision(False, Reason.RATE_LIMITED, rule="r", retry_after=7), id="retry-after"),
    pytest.param(Decision(True, Reason.ALLOWED_BY_RULE, rule="~" * 40), id="placeholder-in-rule"),
    pytest.param(
        Decision(False, Reason.DENIED_BY_RULE, rule="r", decision_id="short"), id="other-id-shape"
    ),
]


def _same(decision: Decision, headers: list[str]) -> None:
    fresh = render_check_response(decision, headers)
    assert (
        external_auth_pb2.CheckResponse.FromString(render_response_bytes(decision, headers))
        == fresh
    )


@pytest.mark.parametrize("decision", _TEMPLATED + _FRESH)
def test_rendered_bytes_parse_to_the_built_response(decision: Decision) -> None:
    """The Check path's bytes, first and repeated, parse to exactly the built response."""
    headers = ["accept", "x-request-id"]
    _same(decision, headers)  # first: builds the template
    _same(decision, headers)  # again: from the template
    other = dataclasses.replace(decision, decision_id=new_decision_id())
    _same(other, headers)  # another id through the same template


@pytest.mark.parametrize("decision", _TEMPLATED)
def test_templates_are_used_for_plain_decisions(decision: Decision) -> None:
    """Decisions without per-request parts are served from a template."""
    render_response_bytes(decision)
    key = (
        decision.allowed,
        decision.reason,
        decision.rule,
        decision.principal,
        decision.dry_run,
        decision.enforced_rule,
    )
    assert response_module._templates.get(key) is not None


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(["x-authz-principal"], id="forged-principal"),
        pytest.param(["x-authz-rule", "x-authz-extra", "accept"], id="forged-several"),
    ],
)
def test_forged_headers_are_removed_on_the_check_path(headers: list[str]) -> None:
    """An allow on the Check path still removes every client-sent x-authz-* header."""
    decision = Decision(True, Reason.ALLOWED_BY_RULE, rule="health")
    _same(decision, headers)
    response = external_auth_pb2.CheckResponse.FromString(render_response_bytes(decision, headers))
    assert set(response.ok_response.headers_to_remove) == set(headers) - {"x-authz-rule", "accept"}


def test_template_table_is_bounded() -> None:
    """Caller-chosen principals cannot grow the template table without bound."""
    for i in range(response_module.MAX_TEMPLATES + 10):
        render_response_bytes(Decision(False, Reason.CERTIFICATE_INVALID, principal=f"{_TD}/{i}"))
    assert len(response_module._templates) <= response_module.MAX_TEMPLATES


@pytest.mark.parametrize(
    ("enforced_rule", "header"),
    [
        pytest.param("reads", "reads", id="enforced-rule-grants"),
        pytest.param(None, None, id="observe-only-default-grants"),
    ],
)
def test_dry_run_allow_names_the_granting_rule_upstream(
    enforced_rule: str | None, header: str | None
) -> None:
    """A dry-run decision tells the upstream the enforced rule that grants it, never the
    would-be deny's rule; without one a forged x-authz-rule is removed."""
    decision = Decision(
        False,
        Reason.DENIED_BY_RULE,
        rule="new-deny",
        principal=f"{_TD}/a",
        dry_run=True,
        enforced_rule=enforced_rule,
    )
    for rendered in (
        render_check_response(decision, ["x-authz-rule"]),
        external_auth_pb2.CheckResponse.FromString(render_response_bytes(decision)),
    ):
        assert _headers(rendered.ok_response.headers).get("x-authz-rule") == header
        assert rendered.dynamic_metadata.fields["rule"].string_value == (header or "")
    forged = render_check_response(decision, ["x-authz-rule"]).ok_response.headers_to_remove
    assert ("x-authz-rule" in forged) is (header is None)
    # Another granting rule is another template, never the first one's bytes.
    other = dataclasses.replace(decision, enforced_rule="other", decision_id=new_decision_id())
    rendered = external_auth_pb2.CheckResponse.FromString(render_response_bytes(other))
    assert _headers(rendered.ok_response.headers)["x-authz-rule"] == "other"
