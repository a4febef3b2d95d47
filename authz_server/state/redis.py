"""The Redis store: approvals, rate windows and revocations shared by workers and replicas.

Keys (all under `authz:`):

    authz:approval:<id>          hash: status, data (JSON), expires_us, ttl_us, decided_*
    authz:approvals              sorted set: approval id → expires_us (the list index)
    authz:rate:<sha256 of key>   sorted set: one member per allowed hit, scored by its time
    authz:revocations            hash: pattern → JSON
    authz:revocations:version    counter, incremented on every revoke / unrevoke

Read-modify-write steps are Lua scripts (`redis_scripts`), atomic on the server. Revocations
are cached in the process and re-validated at most every `refresh_interval_s` (one GET of the
version counter; the hash is fetched only when it changed), so a revocation made through any
replica is enforced by every other within that interval. If Redis cannot be reached, the
last confirmed set stays in force (SPEC §9: only the rules that need the store fail closed;
nobody can add a revocation through an unreachable store either), while readiness reports
the store down so that orchestrators move traffic away. `revocation_max_age_s` bounds that
grace instead when set. A set that was never confirmed fails closed.

Every Redis failure (connection, timeout, protocol, malformed data) raises `StoreUnavailable`.
Sockets time out after `timeout_s` and a broken connection is retried once, so a Check never
waits on Redis for more than about twice that.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from authz_server.clock import Clock, SystemClock
from authz_server.errors import StoreUnavailable
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.state import redis_scripts
from authz_server.state.revocations import RevocationSet, check_revocation
from authz_server.state.store import (
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
    to_us,
)

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

_PREFIX = "authz:"
_INDEX = _PREFIX + "approvals"
_REVOCATIONS = _PREFIX + "revocations"
_REVOCATIONS_VERSION = _PREFIX + "revocations:version"
#: Expired revocations are deleted from Redis only this long after expiry (clock skew).
_PRUNE_AFTER_US = 3600 * US


def _approval_key(approval_id: str) -> str:
    return f"{_PREFIX}approval:{approval_id}"


def _rate_key(key: str) -> str:
    # Keys may carry header values: hash them to a fixed, safe length.
    return f"{_PREFIX}rate:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


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
    ) -> None:
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
        self._refresh_interval = refresh_interval_s
        self._max_age = revocation_max_age_s
        self._monotonic = monotonic
        self._revocations = RevocationSet(())
        self._version: str | None = None
        self._confirmed_at: float | None = None  # monotonic time of the last good refresh
        self._attempted_at: float | None = None  # monotonic time of the last attempt
        self._last_error: str | None = None  # why the last attempt failed
        self._refresh_lock = asyncio.Lock()

    def _now(self) -> int:
        return to_us(self._clock.now().timestamp())

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """Turn every Redis or data failure into `StoreUnavailable` (fail closed)."""
        try:
            yield
        except (RedisError, OSError) as error:
            raise StoreUnavailable(
                f"redis {what} failed: {type(error).__name__}: {error}"
            ) from error
        except (ValueError, KeyError, TypeError) as error:
            raise StoreUnavailable(f"redis {what}: malformed stored data: {error}") from error

    async def ping(self) -> None:
        async with self._guard("ping"):
            await self._redis.ping()

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    # approvals ---------------------------------------------------------------------------

    async def consume(self, action: PendingAction) -> Consumed:
        now = self._now()
        record = ApprovalRecord.pending(action, now)
        async with self._guard("consume"):
            state, approver = await self._consume(
                keys=[_approval_key(action.approval_id), _INDEX],
                args=[
                    now,
                    action.approval_id,
                    _encode_data(record),
                    record.expires_us,
                    record.ttl_us,
                    record.ttl_us // 1000 + redis_scripts.GC_SLACK_MS,
                ],
            )
            if state == ApprovalState.GRANTED:
                return Consumed(ApprovalState.GRANTED, _text(approver))
            return Consumed(ApprovalState(state))

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        async with self._guard("get approval"):
            fields = _text_map(await self._redis.hgetall(_approval_key(approval_id)))
            return _live_record(approval_id, fields, self._now())

    async def list_approvals(self, limit: int = 1000) -> list[ApprovalRecord]:
        async with self._guard("list approvals"):
            ids = [_text(i) for i in await self._redis.zrange(_INDEX, 0, max(limit, 1) - 1)]
            async with self._redis.pipeline(transaction=False) as pipe:
                for approval_id in ids:
                    pipe.hgetall(_approval_key(approval_id))
                rows = [_text_map(row) for row in await pipe.execute()]
            now = self._now()
            records: list[ApprovalRecord] = []
            gone: list[str] = []
            for approval_id, fields in zip(ids, rows, strict=True):
                record = _live_record(approval_id, fields, now)
                if record is not None:
                    records.append(record)
                elif not fields:
                    gone.append(approval_id)
            if gone:
                await self._redis.zrem(_INDEX, *gone)
        records.sort(key=lambda r: (r.created_us, r.approval_id))
        return records

    async def approve(self, approval_id: str, approver: str) -> Decided:
        return await self._decide(approval_id, approver, ApprovalStatus.APPROVED)

    async def reject(self, approval_id: str, approver: str) -> Decided:
        return await self._decide(approval_id, approver, ApprovalStatus.REJECTED)

    async def _decide(self, approval_id: str, approver: str, status: ApprovalStatus) -> Decided:
        now = self._now()
        async with self._guard(f"{status.value} approval"):
            outcome, flat = await self._approve(
                keys=[_approval_key(approval_id), _INDEX],
                args=[now, approval_id, status.value, approver, redis_scripts.GC_SLACK_MS],
            )
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            record = _record(approval_id, fields) if fields else None
            return Decided(DecideOutcome(outcome), record)

    # rate limits -------------------------------------------------------------------------

    async def hit(self, key: str, limit: int, period_s: float) -> RateResult:
        if limit < 1 or not period_s > 0:
            raise ValueError(f"rate limit needs limit >= 1 and period > 0, got {limit}/{period_s}")
        async with self._guard("rate limit"):
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
        async with self._guard("revoke"):
            stale = await self._stale_patterns(now)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(_REVOCATIONS, pattern, _encode_revocation(revocation))
                if stale:
                    pipe.hdel(_REVOCATIONS, *stale)
                pipe.incr(_REVOCATIONS_VERSION)
                await pipe.execute()
        self._attempted_at = None  # our own change is visible on the next check
        return revocation

    async def unrevoke(self, pattern: str) -> bool:
        async with self._guard("unrevoke"), self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(_REVOCATIONS, pattern)
            pipe.incr(_REVOCATIONS_VERSION)
            removed, _ = await pipe.execute()
        self._attempted_at = None
        return bool(removed)

    async def list_revocations(self) -> list[Revocation]:
        # Read through (an admin listing must show the store, not this replica's cache).
        async with self._guard("list revocations"):
            raw = _text_map(await self._redis.hgetall(_REVOCATIONS))
            revocations = RevocationSet(_decode_revocations(raw))
        return revocations.live(self._now())

    async def revoked(self, spiffe_id: SpiffeId) -> Revocation | None:
        await self._refresh()
        return self._revocations.match(spiffe_id, self._now())

    async def _refresh(self) -> None:
        """Bring the cached revocations up to date if the last attempt is older than the interval.

        Raises `StoreUnavailable` when the cache cannot be confirmed and the last confirmed
        set is older than `revocation_max_age_s`. A failed attempt is not repeated within
        the interval, so an outage costs one connection attempt per interval, not per Check.
        """
        if not self._due():
            self._check_usable()
            return
        async with self._refresh_lock:
            if not self._due():  # another coroutine refreshed while we waited
                self._check_usable()
                return
            self._attempted_at = self._monotonic()
            try:
                async with self._guard("revocations refresh"):
                    stored = await self._redis.get(_REVOCATIONS_VERSION)
                    version = None if stored is None else _text(stored)
                    if version != self._version or self._confirmed_at is None:
                        raw = _text_map(await self._redis.hgetall(_REVOCATIONS))
                        self._revocations = RevocationSet(_decode_revocations(raw))
                        self._version = version
            except StoreUnavailable as error:
                self._last_error = str(error)
                log.warning("revocations not refreshed: %s", error)
            else:
                self._confirmed_at = self._attempted_at
                self._last_error = None
            self._check_usable()

    def _due(self) -> bool:
        return (
            self._attempted_at is None
            or self._monotonic() - self._attempted_at >= self._refresh_interval
        )

    def _check_usable(self) -> None:
        """Fail closed once the cached set has gone unconfirmed for too long."""
        if self._last_error is None:
            return
        young = self._confirmed_at is not None and (
            self._max_age is None or self._monotonic() - self._confirmed_at <= self._max_age
        )
        if not young:
            raise StoreUnavailable(self._last_error)

    async def _stale_patterns(self, now: int) -> list[str]:
        raw = _text_map(await self._redis.hgetall(_REVOCATIONS))
        return [
            r.pattern for r in _decode_revocations(raw) if r.expires_us <= now - _PRUNE_AFTER_US
        ]


def _text(value: object) -> str:
    """A reply element as text (the client decodes replies; anything else is corrupt)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string reply, got {type(value).__name__}")
    return value


def _text_map(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise TypeError(f"expected a hash reply, got {type(raw).__name__}")
    return {_text(k): _text(v) for k, v in raw.items()}


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
    )


def _encode_revocation(revocation: Revocation) -> str:
    return json.dumps(
        {
            "reason": revocation.reason,
            "by": revocation.by,
            "created_us": revocation.created_us,
            "expires_us": revocation.expires_us,
        },
        separators=(",", ":"),
    )


def _decode_revocations(raw: dict[str, str]) -> Sequence[Revocation]:
    revocations = []
    for pattern, text in raw.items():
        data = json.loads(text)
        revocations.append(
            Revocation(
                pattern,
                str(data["reason"]),
                str(data["by"]),
                int(data["created_us"]),
                int(data["expires_us"]),
            )
        )
    return revocations
