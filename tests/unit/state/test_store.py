"""One behavioural table for every store: approvals, rate limits and revocations.

Each test runs twice, against the memory store and against a real Redis server, with a
hand-driven clock, so both backends are held to exactly the same contract.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.state.fingerprint import action_fingerprint, body_digest
from authz_server.state.memory import MemoryStore
from authz_server.state.redis import RedisStore
from authz_server.state.store import (
    MAX_PENDING_PER_PRINCIPAL,
    ApprovalState,
    ApprovalStatus,
    DecideOutcome,
    PendingAction,
    RateResult,
    Store,
)
from tests.unit.state.conftest import ManualClock

AGENT = "spiffe://example.org/agents/acme/bot"
HUMAN = "spiffe://example.org/humans/release-managers/alice"
TTL = 900.0


def action(
    body: bytes | None = b'{"amount": 10}', ttl: float = TTL, principal: str = AGENT
) -> PendingAction:
    return PendingAction(
        approval_id=action_fingerprint(
            principal, "POST", "pay.internal", "/v1/transfers", "", body
        ),
        principal=principal,
        method="POST",
        host="pay.internal",
        path="/v1/transfers",
        query="",
        body_digest=body_digest(body),
        rule_id="agent-transfers",
        approvers=("spiffe://example.org/humans/release-managers/*",),
        ttl_s=ttl,
    )


# Steps: ("consume", state) | ("approve"/"reject", outcome) | ("advance", seconds)
#        | ("status", record status or None).
APPROVAL_SCRIPTS = [
    pytest.param(
        [("status", None), ("consume", "required"), ("status", "pending"), ("consume", "required")],
        id="first-request-creates-pending",
    ),
    pytest.param(
        [("consume", "required"), ("approve", "done"), ("status", "approved"),
         ("consume", "granted"), ("status", None), ("consume", "required"), ("status", "pending")],
        id="approval-is-single-use-then-pending-again",
    ),
    pytest.param(
        [("consume", "required"), ("reject", "done"), ("consume", "denied"),
         ("advance", TTL - 1), ("consume", "denied"), ("advance", 1),
         ("consume", "required"), ("status", "pending")],
        id="rejected-until-ttl",
    ),
    pytest.param(
        [("consume", "required"), ("advance", 60), ("approve", "done"),
         ("advance", TTL - 0.000001), ("consume", "granted")],
        id="approval-valid-until-just-before-ttl",
    ),
    pytest.param(
        [("consume", "required"), ("approve", "done"), ("advance", TTL), ("consume", "required")],
        id="approval-expires-at-ttl",
    ),
    pytest.param(
        [("consume", "required"), ("advance", TTL), ("status", None), ("approve", "not_found")],
        id="pending-expires-at-ttl",
    ),
    pytest.param([("approve", "not_found"), ("reject", "not_found")], id="unknown-id"),
    pytest.param(
        [("consume", "required"), ("approve", "done"), ("approve", "not_pending"),
         ("reject", "not_pending"), ("consume", "granted")],
        id="decided-once",
    ),
    pytest.param(
        [("consume", "required"), ("reject", "done"), ("approve", "not_pending"),
         ("consume", "denied")],
        id="reject-is-final",
    ),
    pytest.param(
        [("consume", "required"), ("approve", "done"), ("consume", "granted"),
         ("approve", "not_found")],
        id="consumed-approval-cannot-be-approved-again",
    ),
]  # fmt: skip


@pytest.mark.parametrize("script", APPROVAL_SCRIPTS)
async def test_approval_lifecycle(
    store: Store, clock: ManualClock, script: list[tuple[str, object]]
) -> None:
    """Each step of the approval life cycle gives the documented result."""
    pending = action()
    for step, (op, expected) in enumerate(script):
        where = f"step {step}: {op}"
        if op == "consume":
            assert (await store.consume(pending)).state == ApprovalState(str(expected)), where
        elif op == "approve":
            decided = await store.approve(pending.approval_id, HUMAN)
            assert decided.outcome == DecideOutcome(str(expected)), where
        elif op == "reject":
            decided = await store.reject(pending.approval_id, HUMAN)
            assert decided.outcome == DecideOutcome(str(expected)), where
        elif op == "advance":
            assert isinstance(expected, float | int)
            clock.advance(float(expected))
        else:
            record = await store.get_approval(pending.approval_id)
            assert (record.status.value if record else None) == expected, where


async def test_pending_record_describes_the_action(store: Store, clock: ManualClock) -> None:
    """The pending record carries principal, method, host, path, body digest, rule and time."""
    pending = action()
    await store.consume(pending)
    record = await store.get_approval(pending.approval_id)
    assert record is not None
    assert (record.principal, record.method, record.host, record.path) == (
        AGENT,
        "POST",
        "pay.internal",
        "/v1/transfers",
    )
    assert record.body_digest == body_digest(b'{"amount": 10}')
    assert (record.rule_id, record.approvers) == ("agent-transfers", pending.approvers)
    assert record.created_us == clock.at_us
    assert record.expires_us == clock.at_us + 900_000_000
    assert (record.status, record.decided_by) == (ApprovalStatus.PENDING, None)


PREVIEW = '{"fields":{"amount":10,"memo":"<b>café</b>"},"truncated":true}'


@pytest.mark.parametrize(
    "preview", [pytest.param(PREVIEW, id="with-preview"), pytest.param(None, id="no-preview")]
)
async def test_pending_record_keeps_the_body_preview(store: Store, preview: str | None) -> None:
    """The preview is stored with the record, listed and kept through a decision, and is no
    part of the action's identity: the same action with another preview is the same record."""
    pending = dataclasses.replace(action(), preview=preview)
    consumed = await store.consume(pending)
    assert consumed.created is not None and consumed.created.preview == preview
    got = await store.get_approval(pending.approval_id)
    assert got is not None and got.preview == preview
    (listed,) = await store.list_approvals()
    assert (listed.approval_id, listed.preview) == (pending.approval_id, preview)
    other = dataclasses.replace(pending, preview='{"fields":{},"truncated":false}')
    assert other.approval_id == pending.approval_id
    assert (await store.consume(other)).created is None  # the record stays as created
    decided = await store.approve(pending.approval_id, HUMAN)
    assert decided.record is not None and decided.record.preview == preview


async def test_decision_records_approver_and_restarts_ttl(store: Store, clock: ManualClock) -> None:
    """Approving stamps who and when, and the approval holds for ttl from that moment."""
    pending = action()
    await store.consume(pending)
    clock.advance(100)
    decided = await store.approve(pending.approval_id, HUMAN)
    assert decided.record is not None
    assert decided.record.decided_by == HUMAN
    assert decided.record.decided_us == clock.at_us
    assert decided.record.expires_us == clock.at_us + 900_000_000


async def test_another_body_is_another_approval(store: Store) -> None:
    """Approving one body does not approve the same call with another body."""
    first, second = action(b'{"amount": 10}'), action(b'{"amount": 10000}')
    assert first.approval_id != second.approval_id
    await store.consume(first)
    await store.approve(first.approval_id, HUMAN)
    assert (await store.consume(second)).state is ApprovalState.REQUIRED
    assert (await store.consume(first)).state is ApprovalState.GRANTED


async def test_list_approvals_shows_live_records_newest_first(
    store: Store, clock: ManualClock
) -> None:
    """Listing shows pending and decided records, newest first, never expired or consumed ones."""
    old, rejected, used, fresh = (action(f"{i}".encode()) for i in range(4))
    for pending in (old, rejected, used):
        await store.consume(pending)
        clock.advance(1)
    await store.reject(rejected.approval_id, HUMAN)
    await store.approve(used.approval_id, HUMAN)
    await store.consume(used)
    clock.advance(TTL - 3.5)  # `old` (created at 0) expires at TTL; the rest later
    await store.consume(fresh)
    listed = [(r.approval_id, r.status) for r in await store.list_approvals()]
    assert listed == [
        (fresh.approval_id, ApprovalStatus.PENDING),
        (rejected.approval_id, ApprovalStatus.REJECTED),
        (old.approval_id, ApprovalStatus.PENDING),
    ]
    clock.advance(0.5)
    last = (await store.list_approvals())[-1]
    assert last.approval_id == rejected.approval_id


@pytest.mark.parametrize("limit", [pytest.param(1, id="one"), pytest.param(3, id="three"),
                                   pytest.param(10, id="more-than-live")])  # fmt: skip
async def test_list_approvals_limit_keeps_the_newest(
    store: Store, clock: ManualClock, limit: int
) -> None:
    """`limit` cuts the listing to the newest records, skipping expired ones on the way."""
    actions = [action(f"{i}".encode()) for i in range(6)]
    for pending in actions:
        await store.consume(pending)
        clock.advance(10)
    # The two oldest expire; each older one is created again, newest of all.
    clock.advance(TTL - 45)
    await store.consume(actions[0])
    newest_first = [actions[0], *reversed(actions[2:])]
    listed = [r.approval_id for r in await store.list_approvals(limit)]
    assert listed == [a.approval_id for a in newest_first[:limit]]


CAP = 3


@pytest.fixture(params=["memory", "redis"])
async def capped(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Store]:
    """A store allowing each principal CAP pending approvals, once per backend."""
    if request.param == "memory":
        instance: Store = MemoryStore(clock, max_pending=CAP)
    else:
        url = request.getfixturevalue("redis_url")
        instance = RedisStore(url, clock=clock, max_pending=CAP)
    yield instance
    await instance.close()


async def test_pending_cap_refuses_new_records_and_keeps_old_ones(
    capped: Store, clock: ManualClock
) -> None:
    """Past the cap a new action gets LIMITED (retry when the earliest pending one expires)
    and no record; the existing ones, and other principals, work as before."""
    waiting = [action(f"{i}".encode()) for i in range(CAP)]
    for pending in waiting:
        assert (await capped.consume(pending)).state is ApprovalState.REQUIRED
        clock.advance(10)
    extra = action(b"extra")
    refused = await capped.consume(extra)
    assert refused.state is ApprovalState.LIMITED
    assert refused.retry_after_s == TTL - 10 * CAP
    assert await capped.get_approval(extra.approval_id) is None
    assert len(await capped.list_approvals()) == CAP
    assert (await capped.consume(waiting[1])).state is ApprovalState.REQUIRED
    other = action(b"extra", principal=HUMAN)
    assert (await capped.consume(other)).state is ApprovalState.REQUIRED
    await capped.approve(waiting[1].approval_id, HUMAN)  # no longer pending: a slot frees
    assert (await capped.consume(extra)).state is ApprovalState.REQUIRED
    assert (await capped.consume(waiting[1])).state is ApprovalState.GRANTED  # still usable
    assert (await capped.consume(action(b"one more"))).state is ApprovalState.LIMITED


@pytest.mark.parametrize(
    ("free", "then"),
    [
        pytest.param("nothing", ApprovalState.LIMITED, id="full"),
        pytest.param("approve", ApprovalState.REQUIRED, id="approved-frees-a-slot"),
        pytest.param("reject", ApprovalState.REQUIRED, id="rejected-frees-a-slot"),
        pytest.param("expire", ApprovalState.REQUIRED, id="expired-frees-a-slot"),
        pytest.param("almost-expire", ApprovalState.LIMITED, id="still-pending-at-ttl-minus-1us"),
    ],
)
async def test_what_frees_a_pending_slot(
    capped: Store, clock: ManualClock, free: str, then: ApprovalState
) -> None:
    """Only a record that stops being pending (decided or expired) makes room for another."""
    waiting = [action(f"{i}".encode()) for i in range(CAP)]
    for pending in waiting:
        await capped.consume(pending)
    if free == "approve":
        await capped.approve(waiting[0].approval_id, HUMAN)
    elif free == "reject":
        await capped.reject(waiting[0].approval_id, HUMAN)
    elif free == "expire":
        clock.advance(TTL)
    elif free == "almost-expire":
        clock.advance(TTL - 0.000001)
    assert (await capped.consume(action(b"next"))).state is then


async def test_default_pending_cap(store: Store) -> None:
    """By default one principal may have MAX_PENDING_PER_PRINCIPAL (100) pending approvals."""
    assert MAX_PENDING_PER_PRINCIPAL == 100
    states = [
        (await store.consume(action(f"{i}".encode()))).state
        for i in range(MAX_PENDING_PER_PRINCIPAL + 1)
    ]
    assert states.count(ApprovalState.REQUIRED) == MAX_PENDING_PER_PRINCIPAL
    assert states[-1] is ApprovalState.LIMITED


def test_pending_cap_must_be_positive() -> None:
    """A cap below one would refuse every approval: a configuration error."""
    with pytest.raises(ValueError, match="max_pending"):
        MemoryStore(max_pending=0)
    with pytest.raises(ValueError, match="max_pending"):
        RedisStore("redis://127.0.0.1:1/0", max_pending=0)


async def test_concurrent_consumers_get_one_grant(store: Store) -> None:
    """Of 50 concurrent consumers of one granted approval exactly one is granted."""
    pending = action()
    await store.consume(pending)
    await store.approve(pending.approval_id, HUMAN)
    results = await asyncio.gather(*(store.consume(pending) for _ in range(50)))
    states = [r.state for r in results]
    assert states.count(ApprovalState.GRANTED) == 1
    assert states.count(ApprovalState.REQUIRED) == 49
    assert [r.approver for r in results if r.approver] == [HUMAN]


def test_pending_action_rejects_bad_ttl() -> None:
    """An approval ttl must be a positive, finite number of seconds."""
    for ttl in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="approval ttl"):
            action(ttl=ttl)


# Rate limit: 2 per 10 s. Steps: (seconds to advance first, key, allowed, retry_after_s).
RATE_SCRIPTS = [
    pytest.param(
        [(0, "k", True, 0.0), (0, "k", True, 0.0), (0, "k", False, 10.0)],
        id="limit-reached",
    ),
    pytest.param(
        [(0, "k", True, 0.0), (0, "k", True, 0.0), (9.999999, "k", False, 0.000001),
         (0.000001, "k", True, 0.0), (0, "k", True, 0.0), (0, "k", False, 10.0)],
        id="window-edge-exact",
    ),
    pytest.param(
        [(0, "k", True, 0.0), (5, "k", True, 0.0), (5, "k", True, 0.0), (0, "k", False, 5.0),
         (4.999999, "k", False, 0.000001), (0.000001, "k", True, 0.0)],
        id="window-slides",
    ),
    pytest.param(
        [(0, "k", True, 0.0), (0, "k", True, 0.0), (1, "k", False, 9.0), (1, "k", False, 8.0),
         (8, "k", True, 0.0)],
        id="denied-hits-do-not-count",
    ),
    pytest.param(
        [(0, "a", True, 0.0), (0, "a", True, 0.0), (0, "b", True, 0.0), (0, "a", False, 10.0)],
        id="keys-are-independent",
    ),
]  # fmt: skip


@pytest.mark.parametrize("script", RATE_SCRIPTS)
async def test_rate_limit_sliding_window(
    store: Store, clock: ManualClock, script: list[tuple[float, str, bool, float]]
) -> None:
    """At most 2 hits are allowed in any 10 s window, to the microsecond."""
    for step, (advance, key, allowed, retry_after) in enumerate(script):
        clock.advance(advance)
        result = await store.hit(key, 2, 10.0)
        assert result == RateResult(allowed, retry_after), f"step {step}"


async def test_rate_limit_rejects_nonsense_limits(store: Store) -> None:
    """A limit below one or a non-positive period is a programming error."""
    with pytest.raises(ValueError, match="rate limit"):
        await store.hit("k", 0, 10)
    with pytest.raises(ValueError, match="rate limit"):
        await store.hit("k", 1, 0)


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [pytest.param(0.000001, 1, id="rounds-up"), pytest.param(5.0, 5, id="whole"),
     pytest.param(5.2, 6, id="fraction")],
)  # fmt: skip
def test_retry_after_header_value(retry_after_s: float, header: int) -> None:
    """The retry-after header is whole seconds, rounded up, never zero on a deny."""
    assert RateResult(False, retry_after_s).retry_after == header


REVOKED = [
    pytest.param("spiffe://example.org/agents/acme/bot", AGENT, True, id="exact"),
    pytest.param("spiffe://example.org/agents/acme/bot", AGENT + "2", False, id="exact-other"),
    pytest.param("spiffe://example.org/agents/*/bot", AGENT, True, id="star"),
    pytest.param("spiffe://example.org/agents/**", AGENT, True, id="rest"),
    pytest.param("spiffe://example.org/agents/{tenant}/*", AGENT, True, id="capture"),
    pytest.param("spiffe://example.com/agents/**", AGENT, False, id="other-trust-domain"),
]


@pytest.mark.parametrize(("pattern", "spiffe_id", "revoked"), REVOKED)
async def test_revoked_matches_patterns(
    store: Store, pattern: str, spiffe_id: str, revoked: bool
) -> None:
    """A revocation covers exactly the identities its pattern matches."""
    await store.revoke(pattern, 60, "compromised", HUMAN)
    found = await store.revoked(parse_spiffe_id(spiffe_id))
    assert (found is not None) == revoked
    if found is not None:
        assert (found.pattern, found.reason, found.by) == (pattern, "compromised", HUMAN)


async def test_revocation_expires_and_can_be_lifted(store: Store, clock: ManualClock) -> None:
    """A revocation holds until its ttl, and unrevoke lifts it at once."""
    agent = parse_spiffe_id(AGENT)
    await store.revoke(AGENT, 60, "leaked key", HUMAN)
    clock.advance(59.999999)
    assert await store.revoked(agent) is not None
    clock.advance(0.000001)
    assert await store.revoked(agent) is None
    await store.revoke("spiffe://example.org/agents/**", 60, "incident", HUMAN)
    assert await store.revoked(agent) is not None
    assert await store.unrevoke("spiffe://example.org/agents/**") is True
    assert await store.revoked(agent) is None
    assert await store.unrevoke("spiffe://example.org/agents/**") is False


async def test_list_revocations(store: Store, clock: ManualClock) -> None:
    """Listing shows revocations in force, sorted by pattern; revoking again replaces one."""
    await store.revoke("spiffe://example.org/b", 10, "first", HUMAN)
    await store.revoke("spiffe://example.org/a", 100, "second", HUMAN)
    await store.revoke("spiffe://example.org/b", 200, "replaced", HUMAN)
    await store.revoke("spiffe://example.org/c", 5, "short", HUMAN)
    clock.advance(5)
    listed = await store.list_revocations()
    assert [(r.pattern, r.reason) for r in listed] == [
        ("spiffe://example.org/a", "second"),
        ("spiffe://example.org/b", "replaced"),
    ]
    assert listed[1].expires_us == clock.at_us - 5_000_000 + 200_000_000


@pytest.mark.parametrize(
    ("pattern", "ttl", "reason", "message"),
    [
        pytest.param("spiffe://Example.org/x", 60, "r", "trust domain", id="bad-pattern"),
        pytest.param("https://example.org/x", 60, "r", "spiffe://", id="not-spiffe"),
        pytest.param(AGENT, 0, "r", "ttl", id="zero-ttl"),
        pytest.param(AGENT, float("nan"), "r", "ttl", id="nan-ttl"),
        pytest.param(AGENT, 60, "  ", "reason", id="blank-reason"),
        pytest.param(AGENT, 60, "x" * 1025, "reason", id="long-reason"),
    ],
)
async def test_revoke_validates_input(
    store: Store, pattern: str, ttl: float, reason: str, message: str
) -> None:
    """A bad pattern, ttl or reason is refused before anything is stored."""
    with pytest.raises(ValueError, match=message):
        await store.revoke(pattern, ttl, reason, HUMAN)
    assert await store.list_revocations() == []


async def test_ping_and_sharing(store: Store) -> None:
    """A reachable store answers ping; only the Redis store is shared between processes."""
    await store.ping()
    assert store.shared is isinstance(store, RedisStore)
    assert store.shared is not isinstance(store, MemoryStore)
