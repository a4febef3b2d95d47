"""Approval events: what the core tells the outside world about approval records.

The approval condition emits `pending` when one of its Checks creates a pending record;
the admin API emits `approved` / `rejected` when a human decides one; the notifier's own
sweep emits `expired` when a pending record's ttl passed without a decision. Whoever
emits only calls `emit`, which never awaits and never raises: delivery is someone else's
business (`authz_server.notify`), and it can never slow down or change a decision.

The sink travels with the `Store` (`store.events`), because the store is what the Check
path and the admin API already share; it is `NULL_EVENTS` until a notifier attaches.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from authz_server.state.store import ApprovalRecord

__all__ = ["NULL_EVENTS", "ApprovalEvent", "ApprovalEvents", "BodyPreview", "EventType"]


class EventType(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class BodyPreview:
    """The request body as a human may see it: only allow-listed fields, secrets removed,
    capped in size (`policy.conditions.preview`). Keys are the allow-listed dotted paths."""

    fields: Mapping[str, object]
    #: Some listed field was shortened or left out to respect the size cap.
    truncated: bool = False

    def to_json(self) -> str:
        """Compact JSON, as kept with the pending record (`ApprovalRecord.preview`) so that
        the console can show what the notification showed."""
        document = {"fields": dict(self.fields), "truncated": self.truncated}
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> BodyPreview | None:
        """The preview `to_json` wrote; None for text that is not one (never raises)."""
        try:
            document = json.loads(text)
        except ValueError:
            return None
        if not isinstance(document, dict):
            return None
        fields, truncated = document.get("fields"), document.get("truncated")
        if not isinstance(fields, dict) or not isinstance(truncated, bool):
            return None
        return cls(MappingProxyType(fields), truncated)


@dataclass(frozen=True, slots=True)
class ApprovalEvent:
    """One thing that happened to one approval record (the record as it is after it)."""

    type: EventType
    record: ApprovalRecord
    #: Only on `pending`: the body is not stored (the record keeps this preview for the
    #: console, as `record.preview`).
    preview: BodyPreview | None = None

    @property
    def at_us(self) -> int:
        """When it happened: creation, decision, or the end of the pending ttl."""
        if self.type is EventType.PENDING:
            return self.record.created_us
        if self.type is EventType.EXPIRED:
            return self.record.expires_us
        return self.record.decided_us if self.record.decided_us is not None else 0

    @property
    def slot(self) -> str:
        """At most one event per slot and record: `pending`, then one `outcome` (a record
        is approved, rejected or expires, never two of these)."""
        return "pending" if self.type is EventType.PENDING else "outcome"

    @property
    def event_id(self) -> str:
        """Stable across replicas, for the claim and for receivers that deduplicate. The
        creation time tells apart successive records of one action (same approval id)."""
        return f"{self.record.approval_id}:{self.record.created_us}:{self.slot}"


class ApprovalEvents(Protocol):
    """Where approval events go."""

    def emit(self, event: ApprovalEvent) -> None:
        """Hand `event` over without awaiting anything; never raises."""


class _NullEvents:
    def emit(self, event: ApprovalEvent) -> None:
        return None


#: The sink of a store no notifier is attached to.
NULL_EVENTS: ApprovalEvents = _NullEvents()
