"""The Redis store against a real redis-server: replicas, outages and key hygiene."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import redis.asyncio as aioredis

from authz_server.errors import StoreUnavailable
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
    """A revocation made on one replica is enforced by another after one refresh interval."""
    ticker = Ticker()
    writer = RedisStore(redis_url)
    reader = RedisStore(redis_url, refresh_interval_s=0.5, monotonic=ticker)
    agent = parse_spiffe_id(AGENT)
    try:
        assert await reader.revoked(agent) is None  # loads the (empty) set
        await writer.revoke("spiffe://example.org/agents/**", 600, "incident 42", HUMAN)
        ticker.t += 0.499
        assert await reader.revoked(agent) is None  # still inside the refresh interval
        ticker.t += 0.001
        found = await reader.revoked(agent)
        assert found is not None and found.reason == "incident 42"
        await writer.unrevoke("spiffe://example.org/agents/**")
        ticker.t += 0.5
        assert await reader.revoked(agent) is None
    finally:
        await writer.close()
        await reader.close()


async def test_outage_fails_closed_and_recovers(own_redis: RedisServer) -> None:
    """With Redis down every operation raises StoreUnavailable; after a restart all work again."""
    ticker = Ticker()
    store = RedisStore(own_redis.url, revocation_max_age_s=2.0, monotonic=ticker)
    agent = parse_spiffe_id(AGENT)
    try:
        await store.revoke(AGENT, 600, "leaked", HUMAN)
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
        ):
            with pytest.raises(StoreUnavailable, match="redis"):
                await operation

        # Revocations: the last confirmed set serves a short blip, then fails closed.
        ticker.t += 1.0
        assert await store.revoked(agent) is not None
        ticker.t += 1.5
        with pytest.raises(StoreUnavailable):
            await store.revoked(agent)
        with pytest.raises(StoreUnavailable):  # no retry within the interval, still closed
            await store.revoked(parse_spiffe_id(HUMAN))

        own_redis.restart()  # no persistence: the restarted server is empty
        await store.ping()
        assert (await store.consume(ACTION)).state is ApprovalState.REQUIRED
        assert (await store.hit("k", 1, 1.0)).allowed
        ticker.t += 0.5
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


async def test_outage_keeps_the_last_confirmed_revocations_by_default(own_redis: RedisServer) -> None:
    """By default an outage keeps enforcing the last confirmed revocations instead of
    denying every request (SPEC §9: only rules that need the store fail closed)."""
    ticker = Ticker()
    store = RedisStore(own_redis.url, monotonic=ticker)
    agent = parse_spiffe_id(AGENT)
    try:
        await store.revoke(AGENT, 600, "leaked", HUMAN)
        assert await store.revoked(agent) is not None
        own_redis.kill()
        ticker.t += 3600.0
        assert await store.revoked(agent) is not None  # still revoked
        assert await store.revoked(parse_spiffe_id(HUMAN)) is None  # others keep working
        with pytest.raises(StoreUnavailable):
            await store.ping()  # readiness reports the outage
    finally:
        own_redis.restart()
        await store.close()
