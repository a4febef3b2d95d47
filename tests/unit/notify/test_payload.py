"""The JSON and Slack bodies: the same facts, the console link, nothing unsafe."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType

from authz_server.notify.payload import Facts, approval_link, json_payload
from authz_server.notify.slack import slack_payload
from authz_server.state.events import ApprovalEvent, BodyPreview, EventType
from authz_server.state.store import ApprovalStatus
from tests.unit.notify.support import AGENT, HUMAN, record

CONSOLE = "https://console.example.org/authz"
PREVIEW = BodyPreview(MappingProxyType({"amount": 250, "destination.country": "DE"}), False)


def _facts(event: ApprovalEvent) -> Facts:
    return Facts(event, "Agents move money", approval_link(CONSOLE, event.record.approval_id))


def test_json_pending() -> None:
    pending = record()
    body = json_payload(_facts(ApprovalEvent(EventType.PENDING, pending, PREVIEW)))
    assert body == {
        "version": 1,
        "event_id": f"{pending.approval_id}:{pending.created_us}:pending",
        "type": "pending",
        "approval_id": pending.approval_id,
        "occurred_at": "2027-01-15T08:00:00Z",
        "requester": AGENT,
        "method": "POST",
        "host": "pay.internal",
        "path": "/v1/transfers",
        "rule": {"id": "agent-transfers", "description": "Agents move money"},
        "body_digest": pending.body_digest,
        "preview": {"fields": {"amount": 250, "destination.country": "DE"}, "truncated": False},
        "created_at": "2027-01-15T08:00:00Z",
        "expires_at": "2027-01-15T08:15:00Z",
        "decided_by": None,
        "decided_at": None,
        "console_url": f"{CONSOLE}/approvals/{pending.approval_id}",
    }
    json.dumps(body)  # serializable as is


def test_json_decided_and_expired_share_the_outcome_slot() -> None:
    pending = record()
    approved = dataclasses.replace(
        pending, status=ApprovalStatus.APPROVED, decided_by=HUMAN,
        decided_us=pending.created_us + 60_000_000, expires_us=pending.created_us + 960_000_000,
    )  # fmt: skip
    body = json_payload(Facts(ApprovalEvent(EventType.APPROVED, approved)))
    assert body["type"] == "approved" and body["decided_by"] == HUMAN
    assert (
        body["decided_at"] == "2027-01-15T08:01:00Z" and body["occurred_at"] == body["decided_at"]
    )
    assert body["preview"] is None and body["console_url"] is None
    expired = json_payload(Facts(ApprovalEvent(EventType.EXPIRED, pending)))
    assert expired["occurred_at"] == "2027-01-15T08:15:00Z"
    assert (
        expired["event_id"]
        == body["event_id"]
        == f"{pending.approval_id}:{pending.created_us}:outcome"
    )


def test_no_query_in_any_body() -> None:
    secret_query = dataclasses.replace(record(), query="token=SECRET")
    for payload in (json_payload, slack_payload):
        text = json.dumps(payload(_facts(ApprovalEvent(EventType.PENDING, secret_query))))
        assert "SECRET" not in text


def test_slack_body() -> None:
    pending = record()
    body = slack_payload(_facts(ApprovalEvent(EventType.PENDING, pending, PREVIEW)))
    assert set(body) == {"text", "blocks"}
    text = body["text"]
    assert isinstance(text, str)
    link = f"{CONSOLE}/approvals/{pending.approval_id}"
    assert text.startswith("Approval requested: POST pay.internal/v1/transfers by " + AGENT)
    assert f"<{link}|Review>" in text
    blocks = body["blocks"]
    assert isinstance(blocks, list)
    assert [b["type"] for b in blocks] == [
        "header",
        "section",
        "section",
        "section",
        "actions",
        "context",
    ]
    everything = json.dumps(blocks, ensure_ascii=False)
    for fact in (
        AGENT,
        "agent-transfers",
        "Agents move money",
        "2027-01-15T08:15:00Z",
        pending.approval_id,
        str(pending.body_digest),
        '\\"amount\\": 250',
    ):
        assert fact in everything, fact
    assert blocks[4]["elements"][0]["url"] == link  # fmt: skip


def test_slack_escapes_requester_controlled_text() -> None:
    """A crafted path or description cannot become a Slack link or mention."""
    evil = dataclasses.replace(record(), path="/x/<https://evil.example|click>&<!channel>")
    facts = Facts(ApprovalEvent(EventType.PENDING, evil), "desc <@U123>")
    text = json.dumps(slack_payload(facts))
    assert "<https://evil" not in text and "<!channel>" not in text and "<@U123>" not in text
    assert "&lt;https://evil.example|click&gt;&amp;&lt;!channel&gt;" in text


def test_slack_decided_names_the_approver_and_has_no_button_without_console() -> None:
    decided = dataclasses.replace(
        record(), status=ApprovalStatus.REJECTED, decided_by=HUMAN, decided_us=1_800_000_060_000_000
    )
    body = slack_payload(Facts(ApprovalEvent(EventType.REJECTED, decided)))
    blocks = body["blocks"]
    assert isinstance(blocks, list)
    assert "actions" not in [b["type"] for b in blocks]
    assert str(body["text"]).startswith("Approval rejected:")
    assert HUMAN in json.dumps(blocks)


def test_console_link_quotes_the_id() -> None:
    assert approval_link("https://c/x/", "ab/c") == "https://c/x/approvals/ab%2Fc"
    assert approval_link(None, "abc") is None
