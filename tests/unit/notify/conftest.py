"""Fixtures for the notifier tests: a hand-driven clock, stores on memory and real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authz_server.state.memory import MemoryStore
from authz_server.state.redis import RedisStore
from authz_server.state.store import Store
from tests.redis_server import redis_server, redis_url  # noqa: F401 - fixtures
from tests.unit.notify.receiver import SECRET
from tests.unit.state.conftest import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", "redis"])
async def any_store(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Store]:
    """The store under test, once per backend; Redis flushed before each test."""
    if request.param == "memory":
        instance: Store = MemoryStore(clock)
    else:
        instance = RedisStore(request.getfixturevalue("redis_url"), clock=clock)
    yield instance
    await instance.close()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "notify-secret"
    path.write_bytes(SECRET + b"\n")
    return path
