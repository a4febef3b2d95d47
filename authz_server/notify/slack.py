"""The Slack incoming-webhook body of an approval notification (`format: slack`).

`{"text": ..., "blocks": [...]}` with the same facts as the JSON format and a button to
the approval console. Everything the requester controls (principal, host, path, preview
values, the rule's description) is escaped for Slack's mrkdwn (`&`, `<`, `>`), so a
crafted path cannot turn into a link or a mention, and clipped to Slack's size limits.
"""

from __future__ import annotations

import json

from authz_server.notify.payload import Facts, rfc3339
from authz_server.state.events import EventType

__all__ = ["slack_payload"]

_TITLES = {
    EventType.PENDING: "Approval requested",
    EventType.APPROVED: "Approval granted",
    EventType.REJECTED: "Approval rejected",
    EventType.EXPIRED: "Approval request expired",
}
#: Slack's limits: 3000 characters per text block; keep well inside them.
_MAX_TEXT = 2900
_MAX_FIELD = 1900


def _escape(text: str, limit: int = _MAX_FIELD) -> str:
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str, limit: int = _MAX_FIELD) -> str:
    return "`" + _escape(text.replace("`", "'"), limit) + "`"


def slack_payload(facts: Facts) -> dict[str, object]:
    event = facts.event
    record = event.record
    title = _TITLES[event.type]
    action = f"{record.method} {record.host}{record.path}"
    summary = f"{title}: {_escape(action)} by {_escape(record.principal)}"
    rule = _code(record.rule_id)
    if facts.rule_description:
        rule += " " + _escape(facts.rule_description)
    fields = [
        f"*Requester*\n{_code(record.principal)}",
        f"*Rule*\n{rule}",
        f"*Expires*\n{rfc3339(record.expires_us)}",
    ]
    if record.decided_by is not None:
        fields.append(f"*Decided by*\n{_code(record.decided_by)}")
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_code(action, 1000)}*"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if event.preview is not None:
        shown = json.dumps(dict(event.preview.fields), ensure_ascii=False, indent=1)
        note = " (truncated)" if event.preview.truncated else ""
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*Body preview*{note}\n```{_escape(shown, _MAX_TEXT - 40)}```",
                },
            }
        )
    if facts.link is not None:
        summary += f" <{facts.link}|Review>"
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Review in the console"},
                        "url": facts.link,
                    }
                ],
            }
        )
    digest = record.body_digest or "no body"
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"approval {_code(record.approval_id)} · {_escape(digest)}",
                }
            ],
        }
    )
    return {"text": summary, "blocks": blocks}
