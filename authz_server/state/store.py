"""The shared state a decision may need: approvals, rate counters, revocations
(docs/operations/store.md#store).

`Store` is the one interface; `memory.MemoryStore` serves one process, `redis.RedisStore`
several workers or replicas. Both behave the same (the tests run one table against both)
and read time from an injected `Clock`, never from the store server.

Approvals (docs/policy/approvals.md) — one record per action fingerprint (the approval id):

    consume(action)  no live record      → create a pending one,        REQUIRED
                     … but the principal already has MAX_PENDING_PER_PRINCIPAL
                       live pending records → create nothing,           LIMITED
                     pending             →                              REQUIRED
                     approved (in ttl)   → delete it, atomically,       GRANTED  (one use,
                                                                        with the approver)
                     rejected (in ttl)   →                              DENIED
    approve / reject only a live pending record; the decision lives `ttl` from then on.

A pending record also lives `ttl` from its creation; after that the next identical request
creates a new one. `consume` is atomic: of any number of concurrent consumers of one granted
approval, on any number of replicas sharing the store, exactly one gets GRANTED.

The cap bounds what one principal (a runaway or hostile agent) can put in front of the
approvers: its requests beyond the cap are refused (LIMITED, with the seconds until its
earliest pending record expires; the approval condition answers `rate_limited`) instead of
evicting its older records, so the queue the humans are working through never changes
under them and nothing is ever allowed by it. Its existing records keep working: an
approved one is still GRANTED once, and deciding one frees a slot. `list_approvals` shows
the newest `limit` live records first.

Rate limits are a sliding-window log: a hit at `now` is allowed iff fewer than `limit` hits
were allowed in the half-open window (now - period, now]. So at most `limit` requests pass
in any window of length `period` — exactly, also at window edges (a hit allowed at t frees
its slot at t + period, not a microsecond earlier or later). Denied hits are not counted.
Times are integer microseconds, so the arithmetic is exact.

Revocations are SPIFFE ID patterns (policy syntax) with a ttl; `revoked(id)` is the hot-path
check. Every store failure raises `StoreUnavailable`: callers deny with internal_error.

`claim_once(key, ttl)` is true for exactly one caller per key, on any number of replicas,
until the claim's ttl ends: the notifier claims each approval event before sending it, so
that with several workers or replicas every event goes out once. `events` is where the
approval condition and the admin API announce approval events (`state.events`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from authz_server.identity.spiffe_id import SpiffeId

if TYPE_CHECKING:
    from authz_server.state.events import ApprovalEvents

__all__ = [
    "MAX_PENDING_PER_PRINCIPAL",
    "ApprovalRecord",
    "ApprovalState",
    "ApprovalStatus",
    "Consumed",
    "DecideOutcome",
    "Decided",
    "PendingAction",
    "RateResult",
    "Revocation",
    "Store",
    "check_claim",
    "to_us",
]

US = 1_000_000
#: Live pending approval records one principal may have at a time (see above).
MAX_PENDING_PER_PRINCIPAL = 100


def to_us(seconds: float) -> int:
    """Seconds (epoch or duration) as integer microseconds."""
    return round(seconds * US)


def check_claim(key: str, ttl_s: float) -> None:
    """ValueError unless `claim_once` can keep `key` for `ttl_s`."""
    if not key:
        raise ValueError("a claim needs a key")
    if not (ttl_s > 0 and math.isfinite(ttl_s)):
        raise ValueError(f"a claim ttl must be a positive number of seconds, got {ttl_s}")


class ApprovalState(enum.StrEnum):
    """What `consume` says about one action."""

    GRANTED = "granted"
    REQUIRED = "required"
    DENIED = "denied"
    #: No record was created: the principal has too many pending ones.
    LIMITED = "limited"


@dataclass(frozen=True, slots=True)
class Consumed:
    """What `consume` returns: the state, on GRANTED who approved (for the audit log), on
    LIMITED the seconds until the principal's earliest pending record expires, and on the
    REQUIRED that created a pending record, that record (announced as a `pending` event)."""

    state: ApprovalState
    approver: str | None = None
    retry_after_s: float = 0.0
    created: ApprovalRecord | None = None


class ApprovalStatus(enum.StrEnum):
    """The state of a stored approval record."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class PendingAction:
    """What the approval condition knows about one request that needs approval."""

    approval_id: str
    principal: str
    method: str
    host: str
    path: str
    query: str
    body_digest: str | None
    rule_id: str
    #: The rule's approver patterns, as written (shown to humans; the live policy decides).
    approvers: tuple[str, ...]
    #: How long a pending record waits, and how long an approval or rejection holds.
    ttl_s: float
    #: The body preview shown to approvers (`BodyPreview.to_json`, already size-capped);
    #: display data only, never part of the approval id.
    preview: str | None = None

    def __post_init__(self) -> None:
        if not (self.ttl_s > 0 and math.isfinite(self.ttl_s)):
            raise ValueError(f"approval ttl must be a positive number of seconds, got {self.ttl_s}")


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """A stored approval: the action, its status and who decided it when."""

    approval_id: str
    principal: str
    method: str
    host: str
    path: str
    query: str
    body_digest: str | None
    rule_id: str
    approvers: tuple[str, ...]
    ttl_us: int
    created_us: int
    status: ApprovalStatus
    #: When the record stops counting (pending: created + ttl; decided: decided + ttl).
    expires_us: int
    decided_by: str | None = None
    decided_us: int | None = None
    #: The body preview of the pending action (`PendingAction.preview`), if the rule has one.
    preview: str | None = None

    @classmethod
    def pending(cls, action: PendingAction, now_us: int) -> ApprovalRecord:
        ttl = to_us(action.ttl_s)
        return cls(
            action.approval_id,
            action.principal,
            action.method,
            action.host,
            action.path,
            action.query,
            action.body_digest,
            action.rule_id,
            action.approvers,
            ttl,
            now_us,
            ApprovalStatus.PENDING,
            now_us + ttl,
            preview=action.preview,
        )


class DecideOutcome(enum.StrEnum):
    DONE = "done"
    #: No live record with that id (never created, expired, or already consumed).
    NOT_FOUND = "not_found"
    #: The record was already approved or rejected.
    NOT_PENDING = "not_pending"


@dataclass(frozen=True, slots=True)
class Decided:
    """The result of `approve` / `reject`: the record as it is after the attempt."""

    outcome: DecideOutcome
    record: ApprovalRecord | None


@dataclass(frozen=True, slots=True)
class RateResult:
    allowed: bool
    #: Seconds until a hit would be allowed; 0.0 when allowed.
    retry_after_s: float = 0.0

    @property
    def retry_after(self) -> int:
        """Whole seconds for the `retry-after` header, rounded up, at least 1 when denied."""
        return 0 if self.allowed else max(1, math.ceil(self.retry_after_s))


@dataclass(frozen=True, slots=True)
class Revocation:
    pattern: str
    reason: str
    by: str
    created_us: int
    expires_us: int


class Store(Protocol):
    """Approvals, rate counters and revocations; every method raises `StoreUnavailable`."""

    #: False for a store private to one process (refused with `--workers N>1`).
    shared: bool
    #: Where approval events are announced; `NULL_EVENTS` until a notifier attaches.
    events: ApprovalEvents

    async def start(self) -> None:
        """Begin background work (the Redis store's revocation refresh); never raises
        `StoreUnavailable`. Called once by the server before it serves; `close` stops it."""

    async def ping(self) -> None:
        """Return when the store answers; `StoreUnavailable` otherwise (readiness)."""

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    # approvals (docs/policy/approvals.md)
    async def consume(self, action: PendingAction) -> Consumed:
        """Use a granted approval once, or report (and create) the pending/denied state;
        LIMITED when a new pending record would exceed the principal's cap."""

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        """The live record with that id, if any."""

    async def list_approvals(self, limit: int = 1000) -> list[ApprovalRecord]:
        """The `limit` newest live records (pending, approved and unused, rejected), newest
        first (by creation time)."""

    async def approve(self, approval_id: str, approver: str) -> Decided:
        """Approve a live pending record for one use within its ttl."""

    async def reject(self, approval_id: str, approver: str) -> Decided:
        """Reject a live pending record: retries get DENIED for its ttl."""

    async def claim_once(self, key: str, ttl_s: float) -> bool:
        """True for the first caller of `key` within `ttl_s` (on any replica), False for
        every other; ValueError on an empty key or a ttl that is not a positive number."""

    # rate limits (docs/policy/conditions.md#rate-limit)
    async def hit(self, key: str, limit: int, period_s: float) -> RateResult:
        """Count one request against `key`: at most `limit` allowed per sliding `period_s`."""

    # revocations (docs/policy/revocations.md)
    async def revoke(self, pattern: str, ttl_s: float, reason: str, by: str) -> Revocation:
        """Revoke every identity matching `pattern` for `ttl_s`; ValueError on a bad pattern."""

    async def unrevoke(self, pattern: str) -> bool:
        """Lift a revocation; False when there was none for exactly that pattern."""

    async def list_revocations(self) -> list[Revocation]:
        """Revocations in force, by pattern."""

    async def revoked(self, spiffe_id: SpiffeId) -> Revocation | None:
        """The revocation in force for `spiffe_id`, if any (the hot-path check: it never
        waits on a remote store, see `redis_revocations`)."""
