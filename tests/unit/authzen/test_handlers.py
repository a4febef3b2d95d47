"""The endpoints without HTTP: statuses, Decision objects, batch semantics, audit, metrics."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

from typing import Any

import pytest

from authz_server.core.errors import StoreUnavailable
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.state.memory import MemoryStore
from authz_server.state.store import Revocation
from tests.unit.authzen.support import make_rig

POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
rules:
  - id: read
    methods: [GET]
    paths: ["/ok/**"]
    effect: allow
  - id: observed
    paths: ["/beta/**"]
    mode: dry_run
    effect: deny
  - id: beta
    methods: [GET]
    paths: ["/beta/**"]
    effect: allow
  - id: release
    methods: [POST]
    paths: ["/release"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/*"], ttl: 10m}
  - id: limited
    methods: [GET]
    paths: ["/limited"]
    effect: allow
    when:
      rate_limit: {requests: 1, per: 1h}
"""

ALICE = "spiffe://example.org/ns/a/sa/alice"
SUBJECT = {"type": "spiffe", "id": ALICE}


def _http(path: str) -> dict[str, Any]:
    return {"type": "http", "id": path}


def _evaluation(path: str, action: str = "GET", **extra: Any) -> dict[str, Any]:
    return {"subject": SUBJECT, "action": {"name": action}, "resource": _http(path), **extra}


async def test_allow() -> None:
    rig = make_rig(POLICY)
    reply = await rig.evaluation(_evaluation("/ok/1"))
    assert reply.status == 200
    assert reply.body["decision"] is True
    context = reply.body["context"]
    assert (context["reason"], context["rule"]) == ("allowed_by_rule", "read")
    assert len(context["decision_id"]) == 32 and context["evaluated_at"].endswith("+00:00")
    assert set(context) == {"decision_id", "evaluated_at", "reason", "rule"}


async def test_deny_is_200_with_decision_false() -> None:
    rig = make_rig(POLICY)
    reply = await rig.evaluation(_evaluation("/nothing"))
    assert reply.status == 200
    assert reply.body["decision"] is False
    assert reply.body["context"]["reason"] == "no_matching_rule"
    assert "rule" not in reply.body["context"]  # absent, never null


async def test_dry_run_deny_is_enforced_as_allow() -> None:
    reply = await make_rig(POLICY).evaluation(_evaluation("/beta/x"))
    assert reply.body["decision"] is True
    context = reply.body["context"]
    assert (context["reason"], context["rule"], context["dry_run"], context["enforced_rule"]) == (
        "denied_by_rule", "observed", True, "beta",
    )  # fmt: skip


async def test_approval_required_then_granted() -> None:
    rig = make_rig(POLICY)
    first = await rig.evaluation(_evaluation("/release", "POST"))
    context = first.body["context"]
    assert (first.body["decision"], context["reason"], context["rule"]) == (
        False,
        "approval_required",
        "release",
    )
    approval_id = context["approval_id"]
    assert context["approval_expires_at"] > context["evaluated_at"]  # same format: ISO order
    record = await rig.store.get_approval(approval_id)
    assert record is not None and record.principal == ALICE
    await rig.store.approve(approval_id, "spiffe://example.org/humans/bob")
    second = await rig.evaluation(_evaluation("/release", "POST"))
    assert second.body["decision"] is True and second.body["context"]["approval_id"] == approval_id
    assert rig.audit.records[-1]["approver"] == "spiffe://example.org/humans/bob"
    third = await rig.evaluation(_evaluation("/release", "POST"))  # one approval, one action
    assert third.body["context"]["reason"] == "approval_required"


async def test_rate_limited_says_when_to_retry() -> None:
    rig = make_rig(POLICY)
    assert (await rig.evaluation(_evaluation("/limited"))).body["decision"] is True
    reply = await rig.evaluation(_evaluation("/limited"))
    assert reply.body["decision"] is False
    assert reply.body["context"]["reason"] == "rate_limited"
    assert 0 < reply.body["context"]["retry_after"] <= 3600


class _DownStore(MemoryStore):
    async def revoked(self, spiffe_id: SpiffeId) -> Revocation | None:
        raise StoreUnavailable("redis is down")


async def test_store_down_fails_closed() -> None:
    rig = make_rig(POLICY)
    rig.handler.service.pipeline.store = _DownStore()
    reply = await rig.evaluation(_evaluation("/ok/1"))
    assert (reply.status, reply.body["decision"], reply.body["context"]["reason"]) == (
        200,
        False,
        "internal_error",
    )


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        pytest.param(_evaluation("/ok/1"), None, 415, "no content-type", id="no-content-type"),
        pytest.param(_evaluation("/ok/1"), "text/plain", 415, "is not application/json", id="text-plain"),
        pytest.param(_evaluation("/ok/1"), "application/json; charset=latin-1", 415, "is not UTF-8", id="latin1"),
        pytest.param(_evaluation("/ok/1"), "application/json,application/json", 415, "is not application/json", id="repeated"),
        pytest.param(b"{", "application/json", 400, "not valid JSON", id="bad-json"),
        pytest.param({"action": {"name": "GET"}, "resource": _http("/")}, "application/json", 400, "'subject' is required", id="missing-subject"),
        pytest.param({**_evaluation("/ok/1"), "a": 1, "A": 2}, "application/json", 400, "differ only in case", id="case-duplicates"),
    ],
)  # fmt: skip
async def test_errors(body: Any, content_type: str | None, status: int, message: str) -> None:
    rig = make_rig(POLICY)
    for reply in (
        await rig.evaluation(body, content_type),
        await rig.evaluations(body, content_type),
    ):
        assert reply.status == status
        assert reply.body["error"]["status"] == status and message in reply.body["error"]["message"]
    assert rig.audit.records == []  # errors are not decisions


async def test_unauthenticated_caller_is_401_before_anything_else() -> None:
    rig = make_rig(POLICY, authenticated=True)
    reply = await rig.evaluation(b"not even json", None)
    assert reply.status == 401 and "client certificate" in reply.body["error"]["message"]
    assert rig.audit.records == []


async def test_not_ready_is_503() -> None:
    rig = make_rig(POLICY)
    rig.holder.snapshot = None
    reply = await rig.evaluation(_evaluation("/ok/1"))
    assert reply.status == 503 and reply.headers["Retry-After"] == "1"
    assert "no policy" in reply.body["error"]["message"]


ALLOW, DENY = _http("/ok/1"), _http("/nothing")


@pytest.mark.parametrize(
    ("semantic", "resources", "answers"),
    [
        pytest.param(None, [ALLOW, DENY, ALLOW], [True, False, True], id="default-execute-all"),
        pytest.param("execute_all", [DENY, DENY, ALLOW], [False, False, True], id="execute-all"),
        pytest.param("deny_on_first_deny", [ALLOW, DENY, ALLOW], [True, False], id="deny-on-first-deny"),
        pytest.param("deny_on_first_deny", [ALLOW, ALLOW], [True, True], id="deny-on-first-deny-none"),
        pytest.param("deny_on_first_deny", [DENY, ALLOW], [False], id="deny-on-first-deny-first"),
        pytest.param("permit_on_first_permit", [DENY, ALLOW, DENY], [False, True], id="permit-on-first-permit"),
        pytest.param("permit_on_first_permit", [DENY, DENY], [False, False], id="permit-on-first-permit-none"),
        pytest.param("permit_on_first_permit", [ALLOW, DENY], [True], id="permit-on-first-permit-first"),
    ],
)  # fmt: skip
async def test_batch_semantics(
    semantic: str | None, resources: list[dict[str, Any]], answers: list[bool]
) -> None:
    rig = make_rig(POLICY)
    document: dict[str, Any] = {
        "subject": SUBJECT,
        "action": {"name": "GET"},
        "evaluations": [{"resource": r} for r in resources],
    }
    if semantic is not None:
        document["options"] = {"evaluations_semantic": semantic}
    reply = await rig.evaluations(document)
    assert reply.status == 200 and set(reply.body) == {"evaluations"}
    assert [e["decision"] for e in reply.body["evaluations"]] == answers
    # Only what was decided is audited and counted; each once, in request order.
    assert [r["path"] for r in rig.audit.records] == [r["id"] for r in resources[: len(answers)]]
    assert rig.decisions("allow", "allowed_by_rule", "read") == answers.count(True)
    assert rig.decisions("deny", "no_matching_rule") == answers.count(False)


async def test_a_bad_item_is_denied_with_its_reason_and_the_others_are_decided() -> None:
    rig = make_rig(POLICY)
    document = {
        "subject": SUBJECT,
        "action": {"name": "GET"},
        "evaluations": [
            {"resource": ALLOW},
            {"resource": {"type": "http"}},
            {"resource": {"type": "document", "id": "1"}},
            {"resource": ALLOW, "subject": {"type": "user", "id": "alice"}},
            {"resource": ALLOW},
        ],
    }
    evaluations = (await rig.evaluations(document)).body["evaluations"]
    assert [e["decision"] for e in evaluations] == [True, False, False, False, True]
    malformed, unsupported_resource, unsupported_subject = (e["context"] for e in evaluations[1:4])
    assert malformed["reason"] == "malformed_request"
    assert malformed["error"] == {
        "status": 400,
        "message": "'evaluations[1].resource.id' is required",
    }
    assert unsupported_resource["reason"] == "unsupported_request"
    assert "resource type 'document'" in unsupported_resource["error"]["message"]
    assert unsupported_subject["reason"] == "unsupported_request"
    assert [r["reason"] for r in rig.audit.records] == [
        "allowed_by_rule", "malformed_request", "unsupported_request", "unsupported_request", "allowed_by_rule",
    ]  # fmt: skip


async def test_evaluations_without_items_answers_one_decision() -> None:
    reply = await make_rig(POLICY).evaluations(_evaluation("/ok/1", evaluations=[]))
    assert reply.body["decision"] is True and "evaluations" not in reply.body


async def test_audit_record_names_the_api_and_the_caller() -> None:
    rig = make_rig(POLICY)
    await rig.evaluation(
        _evaluation(
            "/ok/1?x=1", context={"headers": {"authorization": "Bearer s3cr3t"}, "body": {"k": 1}}
        )
    )
    (record,) = rig.audit.records
    assert record["api"] == "authzen"
    assert record["vouched_by"] == "local-pep (--authzen-insecure-local)"
    assert record["identity_source"] == "authzen"
    assert (record["principal"], record["method"], record["path"], record["request_id"]) == (
        ALICE,
        "GET",
        "/ok/1",
        "rid",
    )
    assert record["decision"] == "allow" and record["rule"] == "read" and record["status"] == 200
    assert record["body_digest"].startswith("sha256:")
    assert "s3cr3t" not in str(record)  # never a header value, like a Check record
    assert rig.decisions("allow", "allowed_by_rule", "read") == 1
