"""The Redis store: approvals, rate windows and revocations shared by workers and replicas.

Keys (all under `authz:`):

    authz:approval:<id>          hash: status, data (JSON, with the body preview), expires_us,
                                 ttl_us, decided_*
    authz:approvals              sorted set: approval id → expires_us (expiry cleanup)
    authz:approvals:created      sorted set: approval id → created_us (newest-first listing)
    authz:pending:<sha256 of principal>
                                 sorted set: that principal's pending ids → expires_us
                                 (the MAX_PENDING_PER_PRINCIPAL cap)
    authz:rate:<sha256 of key>   sorted set: one member per allowed hit, scored by its time
    authz:revocations            hash: pattern → JSON
    authz:revocations:version    counter, incremented on every revoke / unrevoke
    authz:claim:<sha256 of key>  "1" while a `claim_once` claim holds (SET NX PX)

Read-modify-write steps are Lua scripts (`redis_scripts`), atomic on the server, the
per-principal cap included. Revocations are cached in the process and refreshed in the
background (`redis_revocations`): `revoked()`, the hot-path check, never waits on Redis.

Every Redis failure (connection, timeout, protocol, malformed data) raises `StoreUnavailable`.
Sockets time out after `timeout_s` and a broken connection is retried once, so an approval
or rate-limit step never waits on Redis for more than about twice that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from authz_server.core.clock import Clock, SystemClock
from authz_server.core.errors import StoreUnavailable
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.state import redis_scripts
from authz_server.state.events import NULL_EVENTS, ApprovalEvents
from authz_server.state.redis_revocations import (
    REVOCATIONS,
    REVOCATIONS_VERSION,
    RevocationCache,
    decode_revocations,
    encode_revocation,
    guard,
    reply_map,
    reply_text,
)
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

__all__ = ["RedisStore"]

_PREFIX = "authz:"
_RECORD_PREFIX = _PREFIX + "approval:"
_INDEX = _PREFIX + "approvals"
_CREATED = _PREFIX + "approvals:created"
#: Expired revocations are deleted from Redis only this long after expiry (clock skew).
_PRUNE_AFTER_US = 3600 * US


def _approval_key(approval_id: str) -> str:
    return _RECORD_PREFIX + approval_id


def _digest(text: str) -> str:
    # Keys may carry header values or SPIFFE IDs: hash them to a fixed, safe length.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _rate_key(key: str) -> str:
    return f"{_PREFIX}rate:{_digest(key)}"


def _pending_key(principal: str) -> str:
    return f"{_PREFIX}pending:{_digest(principal)}"


def _claim_key(key: str) -> str:
    return f"{_PREFIX}claim:{_digest(key)}"


class RedisStore:
    """`Store` on a Redis server (`redis://HOST:PORT/DB`)."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        timeout_s: float = 1.0,
        refresh_interval_s: float = 0.5,
        revocation_max_age_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        refresh_in_background: bool = True,
        max_pending: int = MAX_PENDING_PER_PRINCIPAL,
    ) -> None:
        """`refresh_in_background=False` leaves revocation refreshes to `refresh()` calls
        (tests that step the `monotonic` clock by hand)."""
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._clock = clock or SystemClock()
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        self._consume = self._redis.register_script(redis_scripts.CONSUME)
        self._approve = self._redis.register_script(redis_scripts.APPROVE)
        self._rate = self._redis.register_script(redis_scripts.RATE_HIT)
        self._max_pending = max_pending
        self.events: ApprovalEvents = NULL_EVENTS
        self._revocations = RevocationCache(
            self._redis,
            interval_s=refresh_interval_s,
            max_age_s=revocation_max_age_s,
            monotonic=monotonic,
            background=refresh_in_background,
        )

    def _now(self) -> int:
        return to_us(self._clock.now().timestamp())

    async def start(self) -> None:
        """Load the revocations (bounded by the socket timeouts) and keep them fresh."""
        await self._revocations.start()

    async def refresh(self) -> None:
        """Re-read the revocations now (the background task does this every interval)."""
        await self._revocations.refresh()

    async def ping(self) -> None:
        async with guard("ping"):
            await self._redis.ping()

    async def close(self) -> None:
        await self._revocations.close()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    # approvals ---------------------------------------------------------------------------

    async def consume(self, action: PendingAction) -> Consumed:
        now = self._now()
        record = ApprovalRecord.pending(action, now)
        async with guard("consume"):
            state, detail = await self._consume(
                keys=[
                    _approval_key(action.approval_id),
                    _INDEX,
                    _CREATED,
                    _pending_key(action.principal),
                ],
                args=[
                    now,
                    action.approval_id,
                    _encode_data(record),
                    record.expires_us,
                    record.ttl_us,
                    record.ttl_us // 1000 + redis_scripts.GC_SLACK_MS,
                    self._max_pending,
                    _RECORD_PREFIX,
                ],
            )
            if state == ApprovalState.GRANTED:
                return Consumed(ApprovalState.GRANTED, reply_text(detail))
            if state == ApprovalState.LIMITED:
                return Consumed(ApprovalState.LIMITED, retry_after_s=int(detail) / US)
            if state == ApprovalState.REQUIRED and reply_text(detail) == "created":
                return Consumed(ApprovalState.REQUIRED, created=record)
            return Consumed(ApprovalState(state))

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        async with guard("get approval"):
            fields = reply_map(await self._redis.hgetall(_approval_key(approval_id)))
            return _live_record(approval_id, fields, self._now())

    async def list_approvals(self, limit: int = 1000) -> list[ApprovalRecord]:
        records: list[ApprovalRecord] = []
        if limit < 1:
            return records
        now = self._now()
        async with guard("list approvals"):
            # Newest first, page by page: entries of expired records (removed by the next
            # consume) are skipped, so the listing still fills up to `limit`.
            start = 0
            while len(records) < limit:
                newest = await self._redis.zrevrange(_CREATED, start, start + limit - 1)
                page = [reply_text(i) for i in newest]
                if not page:
                    break
                start += len(page)
                async with self._redis.pipeline(transaction=False) as pipe:
                    for approval_id in page:
                        pipe.hgetall(_approval_key(approval_id))
                    rows = [reply_map(row) for row in await pipe.execute()]
                for approval_id, fields in zip(page, rows, strict=True):
                    record = _live_record(approval_id, fields, now)
                    if record is not None:
                        records.append(record)
        records.sort(key=lambda r: (r.created_us, r.approval_id), reverse=True)
        return records[:limit]

    async def approve(self, approval_id: str, approver: str) -> Decided:
        return await self._decide(approval_id, approver, ApprovalStatus.APPROVED)

    async def reject(self, approval_id: str, approver: str) -> Decided:
        return await self._decide(approval_id, approver, ApprovalStatus.REJECTED)

    async def _decide(self, approval_id: str, approver: str, status: ApprovalStatus) -> Decided:
        now = self._now()
        async with guard(f"{status.value} approval"):
            outcome, flat = await self._approve(
                keys=[_approval_key(approval_id), _INDEX],
                args=[now, approval_id, status.value, approver, redis_scripts.GC_SLACK_MS],
            )
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            record = _record(approval_id, fields) if fields else None
            return Decided(DecideOutcome(outcome), record)

    async def claim_once(self, key: str, ttl_s: float) -> bool:
        # The claim's ttl runs on the Redis server's clock: it only bounds how long the key
        # is kept, which needs no agreement between replicas.
        check_claim(key, ttl_s)
        async with guard("claim"):
            claimed = await self._redis.set(
                _claim_key(key), "1", nx=True, px=max(1, math.ceil(ttl_s * 1000))
            )
            return bool(claimed)

    # rate limits -------------------------------------------------------------------------

    async def hit(self, key: str, limit: int, period_s: float) -> RateResult:
        if limit < 1 or not period_s > 0:
            raise ValueError(f"rate limit needs limit >= 1 and period > 0, got {limit}/{period_s}")
        async with guard("rate limit"):
            allowed, retry_us = await self._rate(
                keys=[_rate_key(key)],
                args=[self._now(), to_us(period_s), limit, os.urandom(8).hex()],
            )
            if int(allowed) == 1:
                return RateResult(True)
            return RateResult(False, int(retry_us) / US)

    # revocations -------------------------------------------------------------------------

    async def revoke(self, pattern: str, ttl_s: float, reason: str, by: str) -> Revocation:
        check_revocation(pattern, ttl_s, reason, by)
        now = self._now()
        revocation = Revocation(pattern, reason, by, now, now + to_us(ttl_s))
        async with guard("revoke"):
            stale = await self._stale_patterns(now)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(REVOCATIONS, pattern, encode_revocation(revocation))
                if stale:
                    pipe.hdel(REVOCATIONS, *stale)
                pipe.incr(REVOCATIONS_VERSION)
                await pipe.execute()
        await self._refresh_own_change()
        return revocation

    async def unrevoke(self, pattern: str) -> bool:
        async with guard("unrevoke"), self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(REVOCATIONS, pattern)
            pipe.incr(REVOCATIONS_VERSION)
            removed, _ = await pipe.execute()
        await self._refresh_own_change()
        return bool(removed)

    async def _refresh_own_change(self) -> None:
        """Enforce this replica's own change at once; the write itself has succeeded, so a
        failing refresh is left to the background task (and logged by it)."""
        with contextlib.suppress(StoreUnavailable):
            await self._revocations.refresh()

    async def list_revocations(self) -> list[Revocation]:
        # Read through (an admin listing must show the store, not this replica's cache).
        async with guard("list revocations"):
            raw = reply_map(await self._redis.hgetall(REVOCATIONS))
            revocations = RevocationSet(decode_revocations(raw))
        return revocations.live(self._now())

    async def revoked(self, spiffe_id: SpiffeId) -> Revocation | None:
        # Memory only: a Check never waits on Redis (see `redis_revocations`).
        return self._revocations.match(spiffe_id, self._now())

    async def _stale_patterns(self, now: int) -> list[str]:
        raw = reply_map(await self._redis.hgetall(REVOCATIONS))
        return [r.pattern for r in decode_revocations(raw) if r.expires_us <= now - _PRUNE_AFTER_US]


def _encode_data(record: ApprovalRecord) -> str:
    return json.dumps(
        {
            "principal": record.principal,
            "method": record.method,
            "host": record.host,
            "path": record.path,
            "query": record.query,
            "body_digest": record.body_digest,
            "rule_id": record.rule_id,
            "approvers": list(record.approvers),
            "created_us": record.created_us,
            "preview": record.preview,
        },
        separators=(",", ":"),
    )


def _live_record(approval_id: str, fields: dict[str, str], now: int) -> ApprovalRecord | None:
    if not fields:
        return None
    record = _record(approval_id, fields)
    return record if record.expires_us > now else None


def _record(approval_id: str, fields: dict[str, str]) -> ApprovalRecord:
    data: dict[str, Any] = json.loads(fields["data"])
    decided_us = fields.get("decided_us")
    return ApprovalRecord(
        approval_id=approval_id,
        principal=str(data["principal"]),
        method=str(data["method"]),
        host=str(data["host"]),
        path=str(data["path"]),
        query=str(data["query"]),
        body_digest=None if data["body_digest"] is None else str(data["body_digest"]),
        rule_id=str(data["rule_id"]),
        approvers=tuple(str(a) for a in data["approvers"]),
        ttl_us=int(fields["ttl_us"]),
        created_us=int(data["created_us"]),
        status=ApprovalStatus(fields["status"]),
        expires_us=int(fields["expires_us"]),
        decided_by=fields.get("decided_by"),
        decided_us=int(decided_us) if decided_us is not None else None,
        preview=_preview(data.get("preview")),
    )


def _preview(value: object) -> str | None:
    """The stored preview text; absent in records written before previews were stored."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("approval record: preview is not a string")
    return value
