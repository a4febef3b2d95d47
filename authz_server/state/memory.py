"""The in-process store: one process, no persistence (`--store memory`,
docs/operations/store.md#store).

Every operation runs to completion without awaiting, so it is atomic with respect to
other coroutines on the loop; a lock makes it atomic across threads too (the CLI and tests
may drive it from more than one). Nothing here is shared between processes, which is why
`--workers N>1` refuses this store.

Memory stays bounded: expired approvals, revocations and claims are dropped when touched
and by a periodic sweep, each principal has at most `max_pending` live pending approvals
(`MAX_PENDING_PER_PRINCIPAL` by default, see `store`), and rate windows keep at most
`limit` timestamps per key, idle keys being swept once their window has passed.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections import deque

from authz_server.core.clock import Clock, SystemClock
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.state.events import NULL_EVENTS, ApprovalEvents
from authz_server.state.revocations import RevocationSet, check_revocation
from authz_server.state.store import (
    MAX_PENDING_PER_PRINCIPAL,
    US,
    ApprovalRecord,
    ApprovalState,
    ApprovalStatus,
    Consumed,
    Decided,
    DecideOutcome,
    PendingAction,
    RateResult,
    Revocation,
    check_claim,
    to_us,
)

__all__ = ["MemoryStore"]

_REQUIRED = Consumed(ApprovalState.REQUIRED)
_DENIED = Consumed(ApprovalState.DENIED)
#: Sweep expired entries after this many writes.
_SWEEP_EVERY = 1024


class MemoryStore:
    """`Store` in one process's memory."""

    shared = False

    def __init__(
        self, clock: Clock | None = None, *, max_pending: int = MAX_PENDING_PER_PRINCIPAL
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._max_pending = max_pending
        self._approvals: dict[str, ApprovalRecord] = {}
        # principal → the ids of its pending records, oldest first (may hold stale ids)
        self._pending: dict[str, dict[str, None]] = {}
        # key → (period in µs, timestamps of allowed hits, oldest first)
        self._rates: dict[str, tuple[int, deque[int]]] = {}
        self._revocations = RevocationSet(())
        # claim key → when the claim ends (µs)
        self._claims: dict[str, int] = {}
        self._writes = 0
        self.events: ApprovalEvents = NULL_EVENTS

    def _now(self) -> int:
        return to_us(self._clock.now().timestamp())

    async def start(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # approvals ---------------------------------------------------------------------------

    def _live(self, approval_id: str, now: int) -> ApprovalRecord | None:
        record = self._approvals.get(approval_id)
        if record is not None and record.expires_us <= now:
            del self._approvals[approval_id]
            return None
        return record

    async def consume(self, action: PendingAction) -> Consumed:
        with self._lock:
            now = self._now()
            record = self._live(action.approval_id, now)
            if record is None:
                pending = self._pending.setdefault(action.principal, {})
                if len(pending) >= self._max_pending:
                    self._prune(pending, now)
                if len(pending) >= self._max_pending:
                    first = min(self._approvals[i].expires_us for i in pending)
                    return Consumed(ApprovalState.LIMITED, retry_after_s=(first - now) / US)
                created = ApprovalRecord.pending(action, now)
                self._approvals[action.approval_id] = created
                pending[action.approval_id] = None
                self._wrote(now)
                return Consumed(ApprovalState.REQUIRED, created=created)
            if record.status is ApprovalStatus.APPROVED:
                del self._approvals[action.approval_id]  # one use
                return Consumed(ApprovalState.GRANTED, record.decided_by)
            if record.status is ApprovalStatus.REJECTED:
                return _DENIED
            return _REQUIRED

    def _prune(self, ids: dict[str, None], now: int) -> None:
        """Keep only the live pending records of one principal's ids."""
        for approval_id in list(ids):
            record = self._live(approval_id, now)
            if record is None or record.status is not ApprovalStatus.PENDING:
                del ids[approval_id]

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        with self._lock:
            return self._live(approval_id, self._now())

    async def list_approvals(self, limit: int = 1000) -> list[ApprovalRecord]:
        with self._lock:
            now = self._now()
            live = [r for r in self._approvals.values() if r.expires_us > now]
        live.sort(key=lambda r: (r.created_us, r.approval_id), reverse=True)
        return live[: max(limit, 0)]

    async def approve(self, approval_id: str, approver: str) -> Decided:
        return self._decide(approval_id, approver, ApprovalStatus.APPROVED)

    async def reject(self, approval_id: str, approver: str) -> Decided:
        return self._decide(approval_id, approver, ApprovalStatus.REJECTED)

    def _decide(self, approval_id: str, approver: str, status: ApprovalStatus) -> Decided:
        with self._lock:
            now = self._now()
            record = self._live(approval_id, now)
            if record is None:
                return Decided(DecideOutcome.NOT_FOUND, None)
            if record.status is not ApprovalStatus.PENDING:
                return Decided(DecideOutcome.NOT_PENDING, record)
            decided = dataclasses.replace(
                record,
                status=status,
                decided_by=approver,
                decided_us=now,
                expires_us=now + record.ttl_us,
            )
            self._approvals[approval_id] = decided
            return Decided(DecideOutcome.DONE, decided)

    async def claim_once(self, key: str, ttl_s: float) -> bool:
        check_claim(key, ttl_s)
        with self._lock:
            now = self._now()
            until = self._claims.get(key)
            if until is not None and until > now:
                return False
            self._claims[key] = now + to_us(ttl_s)
            self._wrote(now)
            return True

    # rate limits -------------------------------------------------------------------------

    async def hit(self, key: str, limit: int, period_s: float) -> RateResult:
        if limit < 1 or not period_s > 0:
            raise ValueError(f"rate limit needs limit >= 1 and period > 0, got {limit}/{period_s}")
        period = to_us(period_s)
        with self._lock:
            now = self._now()
            entry = self._rates.get(key)
            if entry is None:
                entry = (period, deque())
                self._rates[key] = entry
                self._wrote(now)
            window = entry[1]
            cutoff = now - period
            while window and window[0] <= cutoff:
                window.popleft()
            if len(window) < limit:
                # Keep the log sorted even if the clock steps back (a slower replica).
                if window and window[-1] > now:
                    bisect.insort(window, now)
                else:
                    window.append(now)
                if entry[0] != period:
                    self._rates[key] = (period, window)
                return RateResult(True)
            # The hit that must leave the window before one more fits.
            blocker = window[len(window) - limit]
            return RateResult(False, (blocker + period - now) / US)

    # revocations -------------------------------------------------------------------------

    async def revoke(self, pattern: str, ttl_s: float, reason: str, by: str) -> Revocation:
        check_revocation(pattern, ttl_s, reason, by)
        with self._lock:
            now = self._now()
            revocation = Revocation(pattern, reason, by, now, now + to_us(ttl_s))
            current = self._revocations.live(now)
            others = [r for r in current if r.pattern != pattern]
            self._revocations = RevocationSet([*others, revocation])
            return revocation

    async def unrevoke(self, pattern: str) -> bool:
        with self._lock:
            now = self._now()
            current = self._revocations.live(now)
            kept = [r for r in current if r.pattern != pattern]
            self._revocations = RevocationSet(kept)
            return len(kept) != len(current)

    async def list_revocations(self) -> list[Revocation]:
        with self._lock:
            return self._revocations.live(self._now())

    async def revoked(self, spiffe_id: SpiffeId) -> Revocation | None:
        if not self._revocations.revocations:  # the common case: no clock read, no lookup
            return None
        return self._revocations.match(spiffe_id, self._now())

    # housekeeping ------------------------------------------------------------------------

    def _wrote(self, now: int) -> None:
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep(now)

    def _sweep(self, now: int) -> None:
        for approval_id in [a for a, r in self._approvals.items() if r.expires_us <= now]:
            del self._approvals[approval_id]
        for principal, ids in list(self._pending.items()):
            self._prune(ids, now)
            if not ids:
                del self._pending[principal]
        for key in [k for k, (p, w) in self._rates.items() if not w or w[-1] <= now - p]:
            del self._rates[key]
        for key in [k for k, until in self._claims.items() if until <= now]:
            del self._claims[key]
