"""The Redis store's revocations, cached in the process and kept fresh off the Check path.

Every Check asks `revoked(id)`, and Envoy gives a Check 0.5 s in all: a Check must never
wait on Redis for revocations. So `RevocationCache.match` only reads memory, and a
background task (`start()`, or started lazily by the first `match`) calls `refresh()`
every `interval_s`: one GET of `authz:revocations:version`, and the hash only when that
changed. A revocation made through any replica is therefore enforced by every other
within `interval_s` plus one refresh (0.5 s by default, as
docs/policy/revocations.md#propagation says). A replica's own `revoke` / `unrevoke`
refreshes at once.

When a refresh fails (Redis down or blackholed: each attempt is bounded by the socket
timeouts) the last confirmed set stays in force (docs/operations/store.md#store: only the rules that
need the store fail closed; nobody can add a revocation through an unreachable store either),
while readiness reports the store down so that orchestrators move traffic away. With
`max_age_s` set, a set that has gone unconfirmed for longer fails closed instead. A set
that was never confirmed fails closed: `match` raises `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from authz_server.core.errors import StoreUnavailable
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.state.revocations import RevocationSet
from authz_server.state.store import Revocation

__all__ = [
    "REVOCATIONS",
    "REVOCATIONS_VERSION",
    "RevocationCache",
    "decode_revocations",
    "encode_revocation",
    "guard",
    "reply_map",
    "reply_text",
]

log = logging.getLogger(__name__)

REVOCATIONS = "authz:revocations"
REVOCATIONS_VERSION = "authz:revocations:version"


@contextlib.asynccontextmanager
async def guard(what: str) -> AsyncIterator[None]:
    """Turn every Redis or data failure into `StoreUnavailable` (fail closed)."""
    try:
        yield
    except (RedisError, OSError) as error:
        raise StoreUnavailable(f"redis {what} failed: {type(error).__name__}: {error}") from error
    except (ValueError, KeyError, TypeError) as error:
        raise StoreUnavailable(f"redis {what}: malformed stored data: {error}") from error


class RevocationCache:
    """The last confirmed revocation set, refreshed by `refresh()` and a background task."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        interval_s: float,
        max_age_s: float | None,
        monotonic: Callable[[], float],
        background: bool = True,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"the refresh interval must be positive, got {interval_s}")
        if max_age_s is not None and not max_age_s > interval_s:
            raise ValueError(
                f"revocation max age ({max_age_s}s) must exceed the refresh interval "
                f"({interval_s}s), or every replica would fail closed between refreshes"
            )
        self._redis = client
        self._interval = interval_s
        self._max_age = max_age_s
        self._monotonic = monotonic
        self._background = background
        self._set = RevocationSet(())
        self._version: str | None = None
        self._confirmed_at: float | None = None  # monotonic start of the last good refresh
        self._last_error: str | None = None  # why the last refresh failed, None if it did not
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # the hot path ------------------------------------------------------------------------

    def match(self, spiffe_id: SpiffeId, now_us: int) -> Revocation | None:
        """The cached revocation covering `spiffe_id`; never awaits Redis.

        Raises `StoreUnavailable` when the set was never confirmed, or was last confirmed
        longer than `max_age_s` ago.
        """
        task = self._task
        if task is None or task.done():
            self._ensure_task(delay=0.0)
        if self._confirmed_at is None or (
            self._max_age is not None and self._monotonic() - self._confirmed_at > self._max_age
        ):
            raise StoreUnavailable(self._why_unusable())
        return self._set.match(spiffe_id, now_us)

    def _why_unusable(self) -> str:
        if self._confirmed_at is None:
            what = "revocations were never loaded from redis"
        else:
            age = self._monotonic() - self._confirmed_at
            what = f"revocations unconfirmed for {age:.1f}s (max age {self._max_age}s)"
        return f"{what}: {self._last_error}" if self._last_error else what

    # refreshing --------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read the revocations now; `StoreUnavailable` when Redis cannot be read.

        A failure keeps the last confirmed set (see `match` for when it stops counting).
        """
        async with self._lock:
            started = self._monotonic()
            try:
                async with guard("revocations refresh"):
                    stored = await self._redis.get(REVOCATIONS_VERSION)
                    version = None if stored is None else reply_text(stored)
                    if version != self._version or self._confirmed_at is None:
                        raw = reply_map(await self._redis.hgetall(REVOCATIONS))
                        self._set = RevocationSet(decode_revocations(raw))
                        self._version = version
            except StoreUnavailable as error:
                if self._last_error is None:  # once per outage, not once per interval
                    log.warning("revocations not refreshed, keeping the last set: %s", error)
                self._last_error = str(error)
                raise
            if self._last_error is not None:
                log.info("revocations refreshed again after: %s", self._last_error)
            self._confirmed_at = started
            self._last_error = None

    async def start(self) -> None:
        """Load once (bounded by the socket timeouts), then keep refreshing in the background."""
        if self._closed:
            return
        with contextlib.suppress(StoreUnavailable):  # logged; `match` fails closed meanwhile
            await self.refresh()
        self._ensure_task(delay=self._interval)

    def _ensure_task(self, delay: float) -> None:
        if not self._background or self._closed:
            return
        task = self._task
        if task is not None and not task.done():
            return
        self._task = asyncio.get_running_loop().create_task(
            self._refresh_forever(delay), name="redis-revocations-refresh"
        )

    async def _refresh_forever(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while not self._closed:
            try:
                await self.refresh()
            except StoreUnavailable:
                pass  # logged by refresh(); the next interval tries again
            except Exception:  # a bug must not stop revocations from refreshing
                log.exception("revocations refresh failed unexpectedly")
            # redis-py (8.1) can swallow a cancellation that lands mid-command: `close()`
            # sets `_closed` first, so the loop ends here even then.
            if self._closed:
                return
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        """Stop the background task (for good)."""
        self._closed = True
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        if task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait({task})  # at most one refresh, bounded by the socket timeouts


def reply_text(value: object) -> str:
    """A reply element as text (the client decodes replies; anything else is corrupt)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string reply, got {type(value).__name__}")
    return value


def reply_map(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise TypeError(f"expected a hash reply, got {type(raw).__name__}")
    return {reply_text(k): reply_text(v) for k, v in raw.items()}


def encode_revocation(revocation: Revocation) -> str:
    return json.dumps(
        {
            "reason": revocation.reason,
            "by": revocation.by,
            "created_us": revocation.created_us,
            "expires_us": revocation.expires_us,
        },
        separators=(",", ":"),
    )


def decode_revocations(raw: dict[str, str]) -> Sequence[Revocation]:
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
