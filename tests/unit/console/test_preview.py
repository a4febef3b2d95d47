"""The approval card's "Body preview" row: the preview kept with the record, escaped,
with its truncation note; no row when the record has no preview."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from authz_server.console.pages import Decidable, RuleInfo, approval_card
from authz_server.state.events import BodyPreview
from authz_server.state.fingerprint import action_fingerprint, body_digest
from authz_server.state.store import ApprovalRecord, PendingAction

AGENT = "spiffe://example.org/agents/acme/release-bot"
NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
BODY = b'{"tag": "v1.4.0"}'
RULE = RuleInfo("Publish a release", ("spiffe://example.org/humans/release-managers/*",))
ANYONE = Decidable(None, None)


def _record(preview: BodyPreview | None) -> ApprovalRecord:
    action = PendingAction(
        approval_id=action_fingerprint(AGENT, "POST", "pkg.internal", "/v1/releases", "", BODY),
        principal=AGENT,
        method="POST",
        host="pkg.internal",
        path="/v1/releases",
        query="",
        body_digest=body_digest(BODY),
        rule_id="releases-publish",
        approvers=RULE.approvers,
        ttl_s=900.0,
        preview=preview.to_json() if preview is not None else None,
    )
    return ApprovalRecord.pending(action, int(NOW.timestamp() * 1_000_000))


def _card(record: ApprovalRecord) -> str:
    return str(approval_card(record, RULE, ANYONE, "csrf-token", NOW))


@pytest.mark.parametrize("truncated", [True, False], ids=["truncated", "complete"])
def test_the_preview_is_shown_escaped(truncated: bool) -> None:
    fields = {"tag": "<script>alert(1)</script>", "notes": 'say "hi" & <b>bye</b>'}
    card = _card(_record(BodyPreview(MappingProxyType(fields), truncated)))
    assert "<dt>Body preview</dt>" in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card
    assert "<script>" not in card and "<b>bye" not in card
    assert "&lt;b&gt;bye&lt;/b&gt;" in card and "&amp;" in card
    assert ('class="note truncated"' in card) is truncated


def test_no_preview_no_row() -> None:
    card = _card(_record(None))
    assert "Body preview" not in card and 'class="preview"' not in card
    assert "<dt>Body digest</dt>" in card


def test_an_unreadable_stored_preview_is_said_so() -> None:
    record = dataclasses.replace(_record(None), preview="<not json>")
    card = _card(record)
    assert "<dt>Body preview</dt>" in card and "(unreadable)" in card
    assert "<not json>" not in card
