"""Where events come from: the approval condition (a Check that creates a pending record)
and the admin operations (approve / reject), and why neither ever waits for delivery."""

from __future__ import annotations

import inspect
from pathlib import Path

import grpc
import pytest

from authz_server.admin.auth import Caller, Refused
from authz_server.admin.operations import AdminOperations
from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.decision import Decision, Reason
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.patterns import compile_principal_pattern
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.notify.notifier import Notifier
from authz_server.policy.load import load_policy_text
from authz_server.policy.model import Policy
from authz_server.state.events import ApprovalEvent, BodyPreview, EventType
from authz_server.state.memory import MemoryStore
from authz_server.telemetry.metrics import Metrics
from tests.unit.notify.notify_support import count, notifier, until
from tests.unit.notify.receiver import dead_url, receiver
from tests.unit.notify.support import AGENT, BODY, HUMAN, POLICY, endpoint, policy
from tests.unit.state.conftest import ManualClock

HEADERS = {"content-type": "application/json", "authorization": "Bearer SECRET-TOKEN"}


class Recorded:
    """An `ApprovalEvents` sink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[ApprovalEvent] = []

    def emit(self, event: ApprovalEvent) -> None:
        self.events.append(event)


async def _check(
    store: MemoryStore, clock: ManualClock, loaded: Policy, body: bytes = BODY
) -> Decision:
    view = RequestView("POST", "pay.internal", "/v1/transfers", "", HEADERS, body, principal=AGENT)
    pipeline = Pipeline(clock=clock, store=store)
    return await pipeline.evaluate(view, Snapshot(loaded, TrustBundles.empty()))


async def test_the_check_that_creates_a_record_announces_it(clock: ManualClock) -> None:
    store, sink = MemoryStore(clock), Recorded()
    store.events = sink
    loaded = policy()
    first = await _check(store, clock, loaded)
    assert first.reason is Reason.APPROVAL_REQUIRED
    (event,) = sink.events
    assert (event.type, event.record.approval_id) == (EventType.PENDING, first.approval_id)
    assert event.preview is not None
    assert dict(event.preview.fields) == {"amount": 250, "destination.country": "DE"}
    again = await _check(store, clock, loaded)
    assert again.reason is Reason.APPROVAL_REQUIRED and len(sink.events) == 1  # no new record
    await _check(store, clock, loaded, body=b'{"amount": 9}')  # another action, another record
    assert [e.record.approval_id for e in sink.events][1] != first.approval_id


async def test_the_created_record_keeps_the_preview_the_event_carries(
    clock: ManualClock,
) -> None:
    """The console shows what the notification showed: the record the Check creates holds
    the same redacted preview (the iban and the Bearer token never reach it)."""
    store, sink = MemoryStore(clock), Recorded()
    store.events = sink
    decision = await _check(store, clock, policy())
    assert decision.approval_id is not None
    (event,) = sink.events
    record = await store.get_approval(decision.approval_id)
    assert record is not None and record.preview is not None
    assert event.preview is not None and record.preview == event.preview.to_json()
    stored = BodyPreview.from_json(record.preview)
    assert stored is not None
    assert (dict(stored.fields), stored.truncated) == (
        {"amount": 250, "destination.country": "DE"},
        False,
    )
    assert "iban" not in record.preview and "SECRET" not in record.preview


async def test_no_preview_fields_no_stored_preview(clock: ManualClock) -> None:
    """Without `preview_fields` the record has no preview, and the approval id is the same:
    the preview is display data, not part of the action."""
    store = MemoryStore(clock)
    plain = load_policy_text(
        POLICY.format(endpoints="      []").replace(
            "        preview_fields: [amount, destination.country]\n", ""
        )
    )
    decision = await _check(store, clock, plain)
    with_preview = await _check(MemoryStore(clock), clock, policy())
    assert decision.approval_id is not None
    assert decision.approval_id == with_preview.approval_id
    record = await store.get_approval(decision.approval_id)
    assert record is not None and record.preview is None


async def test_a_check_does_not_wait_for_the_receiver(
    clock: ManualClock, secret_file: Path
) -> None:
    """emit() is not a coroutine, and the Check's decision is complete while the receiver
    still holds back every request: the notification goes out afterwards."""
    assert not inspect.iscoroutinefunction(Notifier.emit)
    store, metrics = MemoryStore(clock), Metrics()
    async with receiver() as hook:
        hook.gate.clear()  # the receiver answers nothing until the gate opens
        sender = notifier(policy(endpoint(hook.url, str(secret_file))), store, clock, metrics)
        await sender.start()
        try:
            decision = await _check(store, clock, policy())
            assert decision.reason is Reason.APPROVAL_REQUIRED
            assert hook.attempts == 0 and hook.received == []
            hook.gate.set()
            (got,) = await hook.wait_for(1)
        finally:
            await sender.close()
    body = got.json()
    assert body["approval_id"] == decision.approval_id
    assert body["preview"] == {
        "fields": {"amount": 250, "destination.country": "DE"},
        "truncated": False,
    }
    assert b"SECRET-TOKEN" not in got.body and b"iban" not in got.body


async def test_a_dead_receiver_changes_no_decision(clock: ManualClock, secret_file: Path) -> None:
    store, metrics = MemoryStore(clock), Metrics()
    loaded = policy(endpoint(dead_url(), str(secret_file), name="dead"))
    sender = notifier(loaded, store, clock, metrics)
    await sender.start()
    try:
        first = await _check(store, clock, loaded)
        assert first.reason is Reason.APPROVAL_REQUIRED
        assert first.approval_id is not None
        await store.approve(first.approval_id, HUMAN)
        assert (await _check(store, clock, loaded)).allowed
        await until(lambda: count(metrics, "dead", "failed") == 1)
    finally:
        await sender.close()


def _operations(store: MemoryStore) -> AdminOperations:
    approvers = (compile_principal_pattern("spiffe://example.org/humans/*"),)
    return AdminOperations(store, lambda rule_id: approvers)


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
async def test_a_decision_is_announced(clock: ManualClock, approve: bool) -> None:
    store, sink = MemoryStore(clock), Recorded()
    store.events = sink
    first = await _check(store, clock, policy())
    assert first.approval_id is not None
    sink.events.clear()
    human = Caller(parse_spiffe_id(HUMAN))
    await _operations(store).decide(human, first.approval_id, approve=approve)
    (event,) = sink.events
    expected = EventType.APPROVED if approve else EventType.REJECTED
    assert (event.type, event.record.decided_by) == (expected, HUMAN)
    assert event.preview is None
    with pytest.raises(Refused) as refused:  # decided already: nothing new to announce
        await _operations(store).decide(human, first.approval_id, approve=not approve)
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert len(sink.events) == 1


async def test_a_refused_decision_is_not_announced(clock: ManualClock) -> None:
    store, sink = MemoryStore(clock), Recorded()
    store.events = sink
    first = await _check(store, clock, policy())
    assert first.approval_id is not None
    sink.events.clear()
    requester = Caller(parse_spiffe_id(AGENT))
    with pytest.raises(Refused):
        await _operations(store).decide(requester, first.approval_id, approve=True)
    with pytest.raises(Refused):
        await _operations(store).decide(requester, "0" * 64, approve=False)
    assert sink.events == []
