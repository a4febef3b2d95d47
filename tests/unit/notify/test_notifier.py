"""The notifier against a real HTTP receiver on 127.0.0.1: delivery, signatures checked
with the documented receiver snippet, retries, drops, formats, claims and the expiry sweep."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from authz_server.state.events import NULL_EVENTS, ApprovalEvent, EventType
from authz_server.state.memory import MemoryStore
from authz_server.telemetry.metrics import Metrics
from tests.unit.notify.notify_support import count, notifier, until
from tests.unit.notify.receiver import SECRET, dead_url, documented_receiver, receiver
from tests.unit.notify.support import HUMAN, action, endpoint, policy
from tests.unit.state.conftest import ManualClock


async def _pending(store: MemoryStore) -> ApprovalEvent:
    consumed = await store.consume(action())
    assert consumed.created is not None
    return ApprovalEvent(EventType.PENDING, consumed.created)


async def test_delivered_signed_and_verified_by_the_documented_receiver(
    clock: ManualClock, secret_file: Path
) -> None:
    store, metrics = MemoryStore(clock), Metrics()
    async with receiver() as hook:
        sender = notifier(policy(endpoint(hook.url, str(secret_file))), store, clock, metrics)
        await sender.start()
        try:
            event = await _pending(store)
            sender.emit(event)
            (got,) = await hook.wait_for(1)
        finally:
            await sender.close()
    body = got.json()
    assert body["type"] == "pending" and body["approval_id"] == event.record.approval_id
    assert body["rule"]["description"] == "Agents move money only with a human's approval"
    assert body["console_url"] == (
        f"https://console.example.org/authz/approvals/{event.record.approval_id}"
    )
    assert got.headers["X-Authz-Event-Id"] == event.event_id
    now = clock.now().timestamp()
    verify = documented_receiver()["verify"]
    assert verify(SECRET, got.headers, got.body, now) is True
    assert verify(SECRET, got.headers, got.body.replace(b"pending", b"approved"), now) is False
    assert verify(b"a-forger-guessing-the-key", got.headers, got.body, now) is False
    assert verify(SECRET, got.headers, got.body, now + 3600) is False  # a replay an hour later
    assert count(metrics, "127.0.0.1:" + hook.url.split(":")[2].split("/")[0], "sent") == 1


async def test_retries_until_the_receiver_answers(clock: ManualClock, secret_file: Path) -> None:
    """The receiver fails twice, then takes it: three attempts, two counted retries."""
    store, metrics = MemoryStore(clock), Metrics()
    async with receiver() as hook:
        hook.statuses = [500, 503]
        sender = notifier(
            policy(endpoint(hook.url, str(secret_file), name="hook")), store, clock, metrics
        )
        await sender.start()
        try:
            sender.emit(await _pending(store))
            (got,) = await hook.wait_for(1)
        finally:
            await sender.close()
    assert hook.attempts == 3
    assert (count(metrics, "hook", "retry"), count(metrics, "hook", "sent")) == (2, 1)
    assert documented_receiver()["verify"](SECRET, got.headers, got.body, clock.now().timestamp())


async def test_a_refusal_is_not_retried(clock: ManualClock, secret_file: Path) -> None:
    store, metrics = MemoryStore(clock), Metrics()
    async with receiver() as hook:
        hook.statuses = [401]
        sender = notifier(
            policy(endpoint(hook.url, str(secret_file), name="hook")), store, clock, metrics
        )
        await sender.start()
        try:
            sender.emit(await _pending(store))
            await until(lambda: count(metrics, "hook", "failed") == 1)
        finally:
            await sender.close()
    assert hook.attempts == 1 and count(metrics, "hook", "retry") == 0


async def test_a_dead_receiver_is_given_up_after_max_attempts(
    clock: ManualClock, secret_file: Path
) -> None:
    store, metrics = MemoryStore(clock), Metrics()
    sender = notifier(
        policy(endpoint(dead_url(), str(secret_file), name="dead")), store, clock, metrics
    )
    await sender.start()
    try:
        sender.emit(await _pending(store))
        await until(lambda: count(metrics, "dead", "failed") == 1)
    finally:
        await sender.close()
    assert (count(metrics, "dead", "retry"), count(metrics, "dead", "sent")) == (2, 0)


async def test_a_full_queue_drops_and_counts_at_once(clock: ManualClock, secret_file: Path) -> None:
    """emit never waits for room: with a queue of 2, the 3rd to 10th events of one
    uninterrupted burst are dropped and counted before the loop runs anything else."""
    store, metrics = MemoryStore(clock), Metrics()
    sender = notifier(
        policy(endpoint(dead_url(), str(secret_file), name="dead")),
        store, clock, metrics, queue_size=2,
    )  # fmt: skip
    await sender.start()
    try:
        pending = await _pending(store)
        for i in range(10):
            record = dataclasses.replace(pending.record, created_us=pending.record.created_us + i)
            sender.emit(ApprovalEvent(EventType.PENDING, record))  # no await in between
        assert count(metrics, "dead", "queue_full") == 8
    finally:
        await sender.close()


async def test_slack_format(clock: ManualClock) -> None:
    store, metrics = MemoryStore(clock), Metrics()
    async with receiver() as hook:
        sender = notifier(policy(endpoint(hook.url, format="slack")), store, clock, metrics)
        await sender.start()
        try:
            event = await _pending(store)
            sender.emit(event)
            (got,) = await hook.wait_for(1)
        finally:
            await sender.close()
    body = got.json()
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("Approval requested: POST pay.internal/v1/transfers")
    assert f"/approvals/{event.record.approval_id}|Review>" in body["text"]
    assert "X-Authz-Signature" not in got.headers  # no secret_file: unsigned


async def test_endpoints_get_only_their_events_and_a_bad_secret_costs_only_its_own(
    clock: ManualClock, secret_file: Path, tmp_path: Path
) -> None:
    store, metrics = MemoryStore(clock), Metrics()
    async with receiver() as hook, receiver() as decisions:
        sender = notifier(
            policy(
                endpoint(hook.url, str(secret_file), name="all"),
                endpoint(decisions.url, str(secret_file), name="decisions",
                         events="[approved, rejected]"),
                endpoint(hook.url, str(tmp_path / "missing"), name="broken"),
            ),
            store, clock, metrics,
        )  # fmt: skip
        await sender.start()
        try:
            pending = await _pending(store)
            sender.emit(pending)
            await hook.wait_for(1)
            decided = await store.reject(pending.record.approval_id, HUMAN)
            assert decided.record is not None
            sender.emit(ApprovalEvent(EventType.REJECTED, decided.record))
            (got,) = await decisions.wait_for(1)
            await hook.wait_for(2)
        finally:
            await sender.close()
    assert [r.json()["type"] for r in hook.received] == ["pending", "rejected"]
    assert got.json()["type"] == "rejected" and got.json()["decided_by"] == HUMAN
    assert count(metrics, "broken", "no_secret") == 2


async def test_an_event_claimed_elsewhere_is_not_sent(
    clock: ManualClock, secret_file: Path
) -> None:
    store, metrics = MemoryStore(clock), Metrics()
    async with receiver() as hook:
        sender = notifier(
            policy(endpoint(hook.url, str(secret_file), name="hook")), store, clock, metrics
        )
        await sender.start()
        try:
            event = await _pending(store)
            assert await store.claim_once(event.event_id, 60)  # another replica got there first
            sender.emit(event)
            await until(lambda: count(metrics, "hook", "duplicate") == 1)
        finally:
            await sender.close()
    assert hook.received == []


async def test_expiry_is_announced_once_and_never_after_a_decision(
    clock: ManualClock, secret_file: Path
) -> None:
    """The sweep announces a pending record whose ttl passed undecided, once. A decided
    record is never announced as expired: forgotten when a sweep lists it decided, and
    refused by the shared claim when it was decided and used up between two sweeps."""
    store, metrics = MemoryStore(clock), Metrics()
    async with receiver() as hook:
        sender = notifier(
            policy(endpoint(hook.url, str(secret_file), name="hook")), store, clock, metrics
        )
        await sender.start()
        try:
            created = [
                (await store.consume(action(path=path))).created
                for path in ("/v1/undecided", "/v1/seen", "/v1/unseen")
            ]
            undecided, seen, unseen = created
            assert undecided and seen and unseen
            assert await sender.sweep() == 0  # all three watched, all live
            for record in (seen, unseen):
                decided = await store.approve(record.approval_id, HUMAN)
                assert decided.record is not None
                sender.emit(ApprovalEvent(EventType.APPROVED, decided.record))
                await hook.wait_for(1 if record is seen else 2)
                if record is seen:
                    assert await sender.sweep() == 0  # listed approved: forgotten
            # `unseen` was approved and used up before any sweep could list it decided.
            assert (await store.consume(action(path="/v1/unseen"))).approver == HUMAN
            clock.advance(900)
            assert await sender.sweep() == 2  # undecided and unseen are gone
            await until(lambda: count(metrics, "hook", "duplicate") == 1)  # unseen: claimed
            await hook.wait_for(3)
            assert await sender.sweep() == 0
        finally:
            await sender.close()
    assert sorted((r.json()["type"], r.json()["path"]) for r in hook.received) == [
        ("approved", "/v1/seen"), ("approved", "/v1/unseen"), ("expired", "/v1/undecided"),
    ]  # fmt: skip


async def test_a_reload_applies_from_the_next_event(clock: ManualClock, secret_file: Path) -> None:
    store, metrics = MemoryStore(clock), Metrics()
    async with receiver() as first, receiver() as second:
        current = [policy(endpoint(first.url, str(secret_file), name="first"))]
        sender = notifier(lambda: current[0], store, clock, metrics)
        await sender.start()
        try:
            sender.emit(await _pending(store))
            await first.wait_for(1)
            current[0] = policy(endpoint(second.url, str(secret_file), name="second"))
            pending = await store.consume(action(path="/v1/next"))
            assert pending.created is not None
            sender.emit(ApprovalEvent(EventType.PENDING, pending.created))
            (got,) = await second.wait_for(1)
        finally:
            await sender.close()
    assert got.json()["path"] == "/v1/next" and len(first.received) == 1


async def test_start_attaches_and_close_detaches(clock: ManualClock, secret_file: Path) -> None:
    """start() makes the notifier the store's sink; after close() the store is back to
    the null sink and a late emit is a no-op, not an error."""
    store = MemoryStore(clock)
    sender = notifier(policy(endpoint(dead_url(), str(secret_file))), store, clock, Metrics())
    assert store.events is NULL_EVENTS
    await sender.start()
    assert store.events is sender
    await sender.close()
    assert store.events is NULL_EVENTS
    sender.emit(await _pending(store))
