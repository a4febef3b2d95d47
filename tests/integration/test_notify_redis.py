"""Approval notifications with several replicas on one real redis-server: every event is
sent once, whichever replicas see it; with Redis unreachable it is still sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.decision import Reason
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.notify.notifier import Notifier
from authz_server.state.events import ApprovalEvent, EventType
from authz_server.state.redis import RedisStore
from authz_server.telemetry.metrics import Metrics
from authz_server.tools.stack import free_port
from tests.unit.notify.notify_support import count, notifier, until
from tests.unit.notify.receiver import SECRET, Receiver, documented_receiver, receiver
from tests.unit.notify.support import AGENT, BODY, HUMAN, action, endpoint, policy, record
from tests.unit.state.conftest import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    async with receiver() as running:
        yield running


class Replica:
    """One replica's store and notifier, sharing Redis with the others."""

    def __init__(self, url: str, clock: ManualClock, hook: Receiver, secret: Path) -> None:
        self.store = RedisStore(url, clock=clock, refresh_in_background=False)
        self.metrics = Metrics()
        self.policy = policy(endpoint(hook.url, str(secret), name="hook"))
        self.notifier: Notifier = notifier(self.policy, self.store, clock, self.metrics)

    def count(self, outcome: str) -> float:
        return count(self.metrics, "hook", outcome)


@pytest.fixture
async def replicas(
    redis_url: str, clock: ManualClock, hook: Receiver, secret_file: Path
) -> AsyncIterator[list[Replica]]:
    started = [Replica(redis_url, clock, hook, secret_file) for _ in range(2)]
    for replica in started:
        await replica.store.refresh()  # revocations loaded: Checks may proceed
        await replica.notifier.start()
    yield started
    for replica in started:
        await replica.notifier.close()
        await replica.store.close()


async def test_a_pending_check_is_announced_once(
    replicas: list[Replica], clock: ManualClock, hook: Receiver
) -> None:
    first, second = replicas
    view = RequestView(
        "POST", "pay.internal", "/v1/transfers", "", {"content-type": "application/json"},
        BODY, principal=AGENT,
    )  # fmt: skip
    snapshot = Snapshot(first.policy, TrustBundles.empty())
    decisions = await asyncio.gather(
        *(
            Pipeline(clock=clock, store=replica.store).evaluate(view, snapshot)
            for replica in (first, second)
            for _ in range(5)
        )
    )
    assert {d.reason for d in decisions} == {Reason.APPROVAL_REQUIRED}
    (got,) = await hook.wait_for(1)
    assert got.json()["type"] == "pending"
    assert documented_receiver()["verify"](SECRET, got.headers, got.body, clock.now().timestamp())
    assert first.count("sent") + second.count("sent") == 1


async def test_both_replicas_see_the_expiry_one_announces_it(
    replicas: list[Replica], clock: ManualClock, hook: Receiver
) -> None:
    first, second = replicas
    created = (await first.store.consume(action())).created
    assert created is not None
    for replica in replicas:
        assert await replica.notifier.sweep() == 0
    clock.advance(900)
    swept = await asyncio.gather(*(r.notifier.sweep() for r in replicas))
    assert swept == [1, 1]  # both noticed it...
    await until(lambda: first.count("duplicate") + second.count("duplicate") == 1)
    (got,) = await hook.wait_for(1)  # ...one sent it
    assert got.json()["type"] == "expired"
    assert first.count("sent") + second.count("sent") == 1


async def test_the_same_event_from_both_replicas_is_sent_once(
    replicas: list[Replica], hook: Receiver
) -> None:
    first, second = replicas
    created = (await first.store.consume(action())).created
    assert created is not None
    decided = await first.store.approve(created.approval_id, HUMAN)
    assert decided.record is not None
    event = ApprovalEvent(EventType.APPROVED, decided.record)
    for _ in range(10):
        first.notifier.emit(event)
        second.notifier.emit(event)
    await until(lambda: first.count("duplicate") + second.count("duplicate") == 19)
    (got,) = await hook.wait_for(1)
    assert got.json()["event_id"] == event.event_id


async def test_an_unreachable_store_still_sends(
    clock: ManualClock, hook: Receiver, secret_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the claim cannot be asked, the event goes out anyway (receivers deduplicate)."""
    down = RedisStore(f"redis://127.0.0.1:{free_port()}/0", clock=clock, timeout_s=0.2)
    metrics = Metrics()
    sender = notifier(
        policy(endpoint(hook.url, str(secret_file), name="hook")), down, clock, metrics
    )
    await sender.start()
    try:
        sender.emit(ApprovalEvent(EventType.PENDING, record(clock.at_us)))
        (got,) = await hook.wait_for(1)
    finally:
        await sender.close()
        await down.close()
    assert got.json()["type"] == "pending"
    assert count(metrics, "hook", "sent") == 1
    assert "sending it anyway" in caplog.text
