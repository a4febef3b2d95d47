"""Revocations shared by the workers of `--workers N` on the memory store, through a file.

Two `WorkerMemoryStore`s on one file stand for two worker processes: what one revokes
the other enforces after its next poll (`refresh`), concurrent writers never lose a
change, and a file that cannot be read fails closed. The table of behaviours every
store shares runs against this store too (`conftest.store`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from authz_server.core.errors import StoreUnavailable
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.state import open_store
from authz_server.state.worker_memory import RevocationFile, WorkerMemoryStore
from tests.unit.state.conftest import ManualClock

AGENT = "spiffe://example.org/agents/acme/bot"
HUMAN = "spiffe://example.org/humans/alice"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return RevocationFile.create(tmp_path / "revocations.json").path


def _pair(path: Path, clock: ManualClock) -> tuple[WorkerMemoryStore, WorkerMemoryStore]:
    return WorkerMemoryStore(path, clock), WorkerMemoryStore(path, clock)


async def test_a_revocation_on_one_worker_is_enforced_by_the_other(
    path: Path, clock: ManualClock
) -> None:
    """Revoked on A: A enforces it at once, B after its next poll; unrevoked likewise."""
    a, b = _pair(path, clock)
    agent = parse_spiffe_id(AGENT)
    await a.revoke(AGENT, 60, "leaked key", HUMAN)
    assert await a.revoked(agent) is not None
    b.refresh()
    found = await b.revoked(agent)
    assert found is not None and (found.reason, found.by) == ("leaked key", HUMAN)
    assert [r.pattern for r in await b.list_revocations()] == [AGENT]
    assert await b.unrevoke(AGENT) is True
    a.refresh()
    assert await a.revoked(agent) is None


async def test_the_poller_picks_up_changes(path: Path, clock: ManualClock) -> None:
    """Once started, a store re-reads the file by itself (every POLL_S)."""
    a, b = _pair(path, clock)
    await b.start()
    try:
        await a.revoke(AGENT, 60, "incident", HUMAN)
        for _ in range(100):  # a bound, not a measurement
            if await b.revoked(parse_spiffe_id(AGENT)) is not None:
                break
            await asyncio.sleep(0.02)
        assert await b.revoked(parse_spiffe_id(AGENT)) is not None
    finally:
        await b.close()


async def test_concurrent_writers_lose_nothing(path: Path, clock: ManualClock) -> None:
    """Twenty revocations written at once from two stores: all twenty are stored."""
    a, b = _pair(path, clock)
    patterns = [f"spiffe://example.org/agents/n{i}" for i in range(20)]
    await asyncio.gather(
        *((a if i % 2 else b).revoke(p, 60, "bulk", HUMAN) for i, p in enumerate(patterns))
    )
    a.refresh()
    assert sorted(r.pattern for r in await a.list_revocations()) == sorted(patterns)


async def test_expired_revocations_are_dropped_on_write(path: Path, clock: ManualClock) -> None:
    """The file keeps only what is in force once someone writes again."""
    a = WorkerMemoryStore(path, clock)
    await a.revoke(AGENT, 10, "short", HUMAN)
    clock.advance(10)
    await a.revoke("spiffe://example.org/other", 60, "long", HUMAN)
    assert [r.pattern for r in RevocationFile(path).read()] == ["spiffe://example.org/other"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_text("{not json"), id="corrupt"),
        pytest.param(lambda p: p.write_text('{"format": 99, "revocations": []}'), id="format"),
        pytest.param(lambda p: p.write_text('{"format": 1, "revocations": [{}]}'), id="fields"),
        pytest.param(
            lambda p: p.write_text(
                '{"format": 1, "revocations": [{"pattern": "nope", "reason": "r", "by": "b", '
                '"created_us": 0, "expires_us": 99999999999999999}]}'
            ),
            id="bad-pattern",
        ),
        pytest.param(lambda p: p.unlink(), id="missing"),
    ],
)
async def test_an_unreadable_file_fails_closed(
    path: Path, clock: ManualClock, damage: object
) -> None:
    """Revocations unknown: `revoked` and `ping` raise until the file reads again."""
    store = WorkerMemoryStore(path, clock)
    await store.revoke(AGENT, 60, "incident", HUMAN)
    damage(path)  # type: ignore[operator]
    store.refresh()
    with pytest.raises(StoreUnavailable, match="revocation"):
        await store.revoked(parse_spiffe_id("spiffe://example.org/anyone"))
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.revoke(AGENT, 60, "again", HUMAN)
    RevocationFile.create(path)
    store.refresh()
    await store.ping()
    assert await store.revoked(parse_spiffe_id(AGENT)) is None


async def test_open_store_with_a_revocations_file(path: Path) -> None:
    """`open_store("memory", revocations_file=…)` is what each worker opens."""
    store = open_store("memory", revocations_file=str(path))
    assert isinstance(store, WorkerMemoryStore)
    assert store.shared is False  # approvals and rates stay private to the worker
    await store.close()
