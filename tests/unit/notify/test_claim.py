"""`Store.claim_once`, on the memory store and a real redis-server: one winner per key."""

from __future__ import annotations

import asyncio
import math

import pytest
import redis.asyncio as aioredis

from authz_server.state.memory import MemoryStore
from authz_server.state.redis import RedisStore
from authz_server.state.store import ApprovalState, Store
from tests.unit.notify.support import action
from tests.unit.state.conftest import ManualClock


async def test_first_claim_wins(any_store: Store) -> None:
    assert await any_store.claim_once("a:1:pending", 60) is True
    assert await any_store.claim_once("a:1:pending", 60) is False
    assert await any_store.claim_once("a:1:outcome", 60) is True


async def test_concurrent_claims_have_one_winner(any_store: Store) -> None:
    results = await asyncio.gather(*(any_store.claim_once("race", 60) for _ in range(50)))
    assert sorted(results) == [False] * 49 + [True]


async def test_two_stores_on_one_redis_share_claims(redis_url: str) -> None:
    first, second = RedisStore(redis_url), RedisStore(redis_url)
    try:
        results = await asyncio.gather(
            *(store.claim_once("shared", 60) for store in (first, second) for _ in range(10))
        )
        assert results.count(True) == 1
    finally:
        await first.close()
        await second.close()


async def test_memory_claim_ends_with_its_ttl(clock: ManualClock) -> None:
    store = MemoryStore(clock)
    assert await store.claim_once("k", 10) is True
    clock.advance(9.999999)
    assert await store.claim_once("k", 10) is False
    clock.advance(0.000001)
    assert await store.claim_once("k", 10) is True


async def test_redis_claim_key_expires(redis_url: str) -> None:
    """The key is hashed under authz:claim: and expires after the ttl (Redis's clock)."""
    store = RedisStore(redis_url)
    control = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await store.claim_once("k", 2.5) is True
        (key,) = await control.keys("authz:claim:*")
        assert len(key) == len("authz:claim:") + 64
        assert 0 < await control.pttl(key) <= 2500
    finally:
        await control.aclose()
        await store.close()


@pytest.mark.parametrize(
    ("key", "ttl"),
    [("", 1.0), ("k", 0.0), ("k", -1.0), ("k", math.inf), ("k", math.nan)],
    ids=["empty-key", "zero-ttl", "negative-ttl", "infinite-ttl", "nan-ttl"],
)
async def test_bad_claims_are_refused(any_store: Store, key: str, ttl: float) -> None:
    with pytest.raises(ValueError):
        await any_store.claim_once(key, ttl)


async def test_consume_reports_the_record_it_created(any_store: Store) -> None:
    """Only the consume that creates a pending record returns it (one `pending` event)."""
    first = await any_store.consume(action())
    assert first.state is ApprovalState.REQUIRED and first.created is not None
    assert first.created.approval_id == action().approval_id
    assert await any_store.get_approval(action().approval_id) == first.created
    again = await any_store.consume(action())
    assert again.state is ApprovalState.REQUIRED and again.created is None
