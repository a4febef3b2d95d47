"""The Redis store against a real redis-server: replicas, outages and key hygiene."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time

import pytest
import redis.asyncio as aioredis

from authz_server.core.errors import StoreUnavailable
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.state.fingerprint import action_fingerprint
from authz_server.state.redis import RedisStore
from authz_server.state.store import ApprovalState, PendingAction
from tests.redis_server import RedisServer

AGENT = "spiffe://example.org/agents/acme/bot"
HUMAN = "spiffe://example.org/humans/alice"

ACTION = PendingAction(
    approval_id=action_fingerprint(AGENT, "POST", "pay.internal", "/v1/transfers", "", b"{}"),
    principal=AGENT,
    method="POST",
    host="pay.internal",
    path="/v1/transfers",
    query="",
    body_digest=None,
    rule_id="agent-transfers",
    approvers=("spiffe://example.org/humans/*",),
    ttl_s=900,
)

# A replica in its own process: 25 concurrent consumers, released together by the test.
WORKER = """
import asyncio, json, sys
import redis.asyncio as aioredis
from authz_server.state.redis import RedisStore
from authz_server.state.store import PendingAction

async def main(url, action):
    store = RedisStore(url)
    control = aioredis.Redis.from_url(url)
    await store.ping()
    await control.rpush("test:ready", "1")
    await control.blpop(["test:go"], timeout=30)
    states = await asyncio.gather(*(store.consume(action) for _ in range(25)))
    print(json.dumps([s.state.value for s in states]))
    await store.close()
    await control.aclose()

asyncio.run(main(sys.argv[1], PendingAction(**json.loads(sys.argv[2]))))
"""


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_one_grant_across_two_processes(redis_url: str) -> None:
    """50 consumers in two processes race for one approval: exactly one is granted."""
    store = RedisStore(redis_url)
    control = aioredis.Redis.from_url(redis_url)
    try:
        assert (await store.consume(ACTION)).state is ApprovalState.REQUIRED
        assert (await store.approve(ACTION.approval_id, HUMAN)).record is not None
        fields = {**ACTION.__class__.__dataclass_fields__}
        payload = json.dumps({name: getattr(ACTION, name) for name in fields})
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, redis_url, payload],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        for _ in workers:
            assert await control.blpop(["test:ready"], timeout=30) is not None
        await control.rpush("test:go", "1", "1")
        states: list[str] = []
        for worker in workers:
            out, err = await asyncio.to_thread(worker.communicate, timeout=60)
            assert worker.returncode == 0, err.decode()
            states += json.loads(out)
        assert len(states) == 50
        assert states.count("granted") == 1
        assert states.count("required") == 49
    finally:
        await store.close()
        await control.aclose()


async def test_revocation_reaches_another_replica(redis_url: str) -> None:
    """A revocation made on one replica is enforced by another at its next refresh."""
    writer = RedisStore(redis_url)
    reader = RedisStore(redis_url, refresh_in_background=False)
    agent = parse_spiffe_id(AGENT)
    try:
        await reader.refresh()  # loads the (empty) set
        assert await reader.revoked(agent) is None
        await writer.revoke("spiffe://example.org/agents/**", 600, "incident 42", HUMAN)
        assert await reader.revoked(agent) is None  # the cache, until the next refresh
        await reader.refresh()
        found = await reader.revoked(agent)
        assert found is not None and found.reason == "incident 42"
        await writer.unrevoke("spiffe://example.org/agents/**")
        await reader.refresh()
        assert await reader.revoked(agent) is None
    finally:
        await writer.close()
        await reader.close()


async def test_background_refresh_enforces_within_a_second(redis_url: str) -> None:
    """With the background refresh (what the server runs), another replica's revocation
    is enforced within one second, and lifting it too."""
    writer = RedisStore(redis_url)
    reader = RedisStore(redis_url)
    agent = parse_spiffe_id(AGENT)
    try:
        await reader.start()
        assert await reader.revoked(agent) is None
        await writer.revoke(AGENT, 600, "leaked", HUMAN)
        await asyncio.sleep(1.0)  # the bound under test, not a measurement
        assert await reader.revoked(agent) is not None
        await writer.unrevoke(AGENT)
        await asyncio.sleep(1.0)
        assert await reader.revoked(agent) is None
    finally:
        await writer.close()
        await reader.close()


async def test_never_loaded_revocations_fail_closed(own_redis: RedisServer) -> None:
    """Until the set was read from Redis once, `revoked` raises instead of guessing."""
    own_redis.kill()
    store = RedisStore(own_redis.url, refresh_in_background=False)
    try:
        with pytest.raises(StoreUnavailable, match="never loaded"):
            await store.revoked(parse_spiffe_id(AGENT))
        await store.start()  # Redis down: start() logs and returns, still closed
        with pytest.raises(StoreUnavailable, match="never loaded"):
            await store.revoked(parse_spiffe_id(AGENT))
        own_redis.start()
        await store.refresh()
        assert await store.revoked(parse_spiffe_id(AGENT)) is None
    finally:
        await store.close()


async def test_revoked_never_waits_for_a_blackholed_redis(own_redis: RedisServer) -> None:
    """With Redis frozen (SIGSTOP) and a refresh stuck on it, `revoked` answers from memory
    at once; the refresh is still waiting when it does."""
    store = RedisStore(own_redis.url)
    agent, human = parse_spiffe_id(AGENT), parse_spiffe_id(HUMAN)
    try:
        await store.start()
        await store.revoke(AGENT, 600, "leaked", HUMAN)
        own_redis.pause()
        stuck = asyncio.create_task(store.refresh())
        await asyncio.sleep(0.05)  # let it send its GET to the frozen server
        started = time.monotonic()
        found = await store.revoked(agent)
        other = await store.revoked(human)
        elapsed = time.monotonic() - started
        assert found is not None and other is None
        assert elapsed < 0.25, f"revoked() took {elapsed:.3f}s with Redis frozen"
        assert not stuck.done()  # the refresh really was blocked meanwhile
    finally:
        own_redis.resume()
        with contextlib.suppress(StoreUnavailable):
            await stuck
        await store.close()


async def test_outage_fails_closed_and_recovers(own_redis: RedisServer) -> None:
    """With Redis down every operation raises StoreUnavailable; after a restart all work again."""
    ticker = Ticker()
    store = RedisStore(
        own_redis.url, revocation_max_age_s=2.0, monotonic=ticker, refresh_in_background=False
    )
    agent = parse_spiffe_id(AGENT)
    try:
        await store.revoke(AGENT, 600, "leaked", HUMAN)  # refreshes: confirmed at t=0
        assert await store.revoked(agent) is not None
        own_redis.kill()

        for operation in (
            store.ping(),
            store.consume(ACTION),
            store.approve(ACTION.approval_id, HUMAN),
            store.list_approvals(),
            store.hit("k", 1, 1.0),
            store.revoke(AGENT, 60, "again", HUMAN),
            store.unrevoke(AGENT),
            store.list_revocations(),
            store.refresh(),
        ):
            with pytest.raises(StoreUnavailable, match="redis"):
                await operation

        # Revocations: the last confirmed set serves a short blip, then fails closed.
        ticker.t += 1.0
        with pytest.raises(StoreUnavailable):
            await store.refresh()
        assert await store.revoked(agent) is not None
        ticker.t += 1.5
        with pytest.raises(StoreUnavailable, match=r"unconfirmed for 2\.5s"):
            await store.revoked(agent)
        with pytest.raises(StoreUnavailable):  # everyone, not only the revoked
            await store.revoked(parse_spiffe_id(HUMAN))

        own_redis.restart()  # no persistence: the restarted server is empty
        await store.ping()
        assert (await store.consume(ACTION)).state is ApprovalState.REQUIRED
        assert (await store.hit("k", 1, 1.0)).allowed
        await store.refresh()
        assert await store.revoked(agent) is None
    finally:
        await store.close()


async def test_keys_are_namespaced(redis_url: str) -> None:
    """Everything the store writes lives under `authz:`, with rate keys hashed."""
    store = RedisStore(redis_url)
    control = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await store.consume(ACTION)
        await store.hit("header:x-tenant:" + "x" * 5000, 5, 60)
        await store.revoke(AGENT, 60, "r", HUMAN)
        keys = sorted(await control.keys("*"))
        assert keys and all(key.startswith("authz:") for key in keys)
        assert max(len(key) for key in keys) < 100
        assert await control.ttl(f"authz:approval:{ACTION.approval_id}") > 0
    finally:
        await store.close()
        await control.aclose()


async def test_outage_keeps_the_last_confirmed_revocations_by_default(
    own_redis: RedisServer,
) -> None:
    """By default an outage keeps enforcing the last confirmed revocations instead of
    denying every request (docs/operations/store.md#store: only rules that need the store fail
    closed)."""
    ticker = Ticker()
    store = RedisStore(own_redis.url, monotonic=ticker, refresh_in_background=False)
    agent = parse_spiffe_id(AGENT)
    try:
        await store.revoke(AGENT, 600, "leaked", HUMAN)
        assert await store.revoked(agent) is not None
        own_redis.kill()
        ticker.t += 3600.0
        with pytest.raises(StoreUnavailable):
            await store.refresh()
        assert await store.revoked(agent) is not None  # still revoked
        assert await store.revoked(parse_spiffe_id(HUMAN)) is None  # others keep working
        with pytest.raises(StoreUnavailable):
            await store.ping()  # readiness reports the outage
    finally:
        own_redis.restart()
        await store.close()


@pytest.mark.parametrize(
    ("max_age", "message"),
    [
        pytest.param(0.5, "must exceed the refresh interval", id="equal-to-interval"),
        pytest.param(0.1, "must exceed the refresh interval", id="below-interval"),
    ],
)
def test_max_age_must_exceed_the_refresh_interval(max_age: float, message: str) -> None:
    """A max age within one refresh interval would fail closed between healthy refreshes."""
    with pytest.raises(ValueError, match=message):
        RedisStore("redis://127.0.0.1:1/0", refresh_interval_s=0.5, revocation_max_age_s=max_age)
