"""The JSON body of an approval notification (`format: json`).

    {"version": 1, "event_id": "<approval id>:<created µs>:pending|outcome",
     "type": "pending|approved|rejected|expired", "approval_id": "<64 hex>",
     "occurred_at": "...Z", "requester": "spiffe://...", "method": "POST",
     "host": "pay.internal", "path": "/v1/transfers",
     "rule": {"id": "...", "description": "..."}, "body_digest": "sha256:..." | null,
     "preview": {"fields": {...}, "truncated": false} | null,
     "created_at": "...Z", "expires_at": "...Z", "decided_by": "..." | null,
     "decided_at": "...Z" | null, "console_url": "<console_url>/approvals/<id>" | null}

`expires_at` is when the record stops counting: the end of the wait for a pending record,
the end of the approval's (or rejection's) validity once decided. The query string is left
out: it may carry secrets, and the body digest with the path identify the action. The
preview is only on `pending` events (the body is not stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote as url_quote

from authz_server.state.events import ApprovalEvent

__all__ = ["Facts", "approval_link", "json_payload", "rfc3339"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Facts:
    """One event with what the policy in force says about it: everything any format shows."""

    event: ApprovalEvent
    rule_description: str = ""
    #: `<console_url>/approvals/<id>`, or None without a console.
    link: str | None = None


def approval_link(console_url: str | None, approval_id: str) -> str | None:
    if console_url is None:
        return None
    return f"{console_url.rstrip('/')}/approvals/{url_quote(approval_id, safe='')}"


def rfc3339(us: int) -> str:
    """UTC, second precision or better, with a `Z`."""
    moment = _EPOCH + timedelta(microseconds=us)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def json_payload(facts: Facts) -> dict[str, object]:
    event = facts.event
    record = event.record
    preview = None
    if event.preview is not None:
        preview = {"fields": dict(event.preview.fields), "truncated": event.preview.truncated}
    return {
        "version": 1,
        "event_id": event.event_id,
        "type": event.type.value,
        "approval_id": record.approval_id,
        "occurred_at": rfc3339(event.at_us),
        "requester": record.principal,
        "method": record.method,
        "host": record.host,
        "path": record.path,
        "rule": {"id": record.rule_id, "description": facts.rule_description},
        "body_digest": record.body_digest,
        "preview": preview,
        "created_at": rfc3339(record.created_us),
        "expires_at": rfc3339(record.expires_us),
        "decided_by": record.decided_by,
        "decided_at": None if record.decided_us is None else rfc3339(record.decided_us),
        "console_url": facts.link,
    }
