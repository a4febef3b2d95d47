"""Noticing pending approvals that expired undecided (the `expired` event).

The stores expire records lazily: nothing happens when a ttl ends, the record just stops
being live. So the notifier looks: each sweep it lists the live records and remembers the
pending ones (and those it announced itself, in case a record lives shorter than a sweep
interval). A remembered pending record that is past its end and no longer listed expired
undecided; one listed as approved or rejected is forgotten. Every replica sweeps; the
store's claim lets only one of them announce each expiry, and the same claim slot as the
decision (`ApprovalEvent.slot`) means a record is never announced both decided and
expired.

A record that expired more than `STALE_US` ago (this replica could not reach the store
for that long) is forgotten without an event: the claims of the other replicas may be
gone by then, and a late "expired" tells nobody anything.
"""

from __future__ import annotations

from authz_server.state.store import US, ApprovalRecord, ApprovalStatus

__all__ = ["STALE_US", "ExpiryWatch"]

STALE_US = 3600 * US
#: Remembered records at most (more live pending records than this are not watched).
MAX_WATCHED = 100_000

_Key = tuple[str, int]


class ExpiryWatch:
    """The pending records one notifier has seen, by (approval id, creation time)."""

    def __init__(self) -> None:
        self._pending: dict[_Key, ApprovalRecord] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def watch(self, record: ApprovalRecord) -> None:
        if record.status is ApprovalStatus.PENDING and len(self._pending) < MAX_WATCHED:
            self._pending.setdefault((record.approval_id, record.created_us), record)

    def update(self, live: list[ApprovalRecord], now_us: int) -> list[ApprovalRecord]:
        """Take in a listing of live records at `now_us`; the watched records that expired."""
        listed_pending: set[_Key] = set()
        for record in live:
            key = (record.approval_id, record.created_us)
            if record.status is ApprovalStatus.PENDING:
                listed_pending.add(key)
                self.watch(record)
            else:
                self._pending.pop(key, None)
        expired: list[ApprovalRecord] = []
        for key, record in list(self._pending.items()):
            if record.expires_us > now_us or key in listed_pending:
                continue
            del self._pending[key]
            if now_us - record.expires_us <= STALE_US:
                expired.append(record)
        expired.sort(key=lambda r: (r.expires_us, r.approval_id))
        return expired
