"""Fixtures for the store tests: a hand-driven clock and the same store API on memory and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from authz_server.state.memory import MemoryStore
from authz_server.state.redis import RedisStore
from authz_server.state.store import Store
from authz_server.state.worker_memory import RevocationFile, WorkerMemoryStore
from tests.redis_server import redis_server, redis_url  # noqa: F401 - fixtures

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ManualClock:
    """A clock that moves only when told, in whole microseconds (exact arithmetic)."""

    def __init__(self, at_us: int = 1_800_000_000_000_000) -> None:
        self.at_us = at_us

    def now(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.at_us)

    def advance(self, seconds: float) -> None:
        self.at_us += round(seconds * 1_000_000)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", "worker-memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Store]:
    """The store under test, once per backend; Redis flushed before each test."""
    if request.param == "memory":
        instance: Store = MemoryStore(clock)
    elif request.param == "worker-memory":  # `--workers N` on memory: revocations in a file
        path = request.getfixturevalue("tmp_path") / "revocations.json"
        instance = WorkerMemoryStore(RevocationFile.create(path).path, clock)
    else:
        instance = RedisStore(request.getfixturevalue("redis_url"), clock=clock)
    yield instance
    await instance.close()
