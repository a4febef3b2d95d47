"""Rate limits, approvals and revocations through the real Pipeline over a memory store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.decision import Decision, Reason
from authz_server.core.errors import StoreUnavailable
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.policy.conditions.approval import ApprovalCondition
from authz_server.policy.conditions.rate_limit import RateLimitCondition
from authz_server.policy.evaluate import Trace
from authz_server.policy.load import load_policy_text
from authz_server.state.fingerprint import action_fingerprint
from authz_server.state.memory import MemoryStore
from authz_server.state.store import RateResult, Revocation
from tests.unit.state.conftest import ManualClock

AGENT = "spiffe://example.org/agents/acme/bot"
OTHER = "spiffe://example.org/agents/globex/bot"
HUMAN = "spiffe://example.org/humans/release-managers/alice"
POLICY = """\
version: 1
identity: {trust_domains: [example.org]}
rules:
  - id: publish
    methods: [POST]
    paths: ["/v1/releases/**"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/release-managers/*"], ttl: 15m}
  - id: transfers
    methods: [POST]
    paths: ["/v1/transfers"]
    effect: allow
    when:
      rate_limit: {requests: 2, per: 1m}
  - id: by-tenant
    paths: ["/v1/search"]
    effect: allow
    when:
      rate_limit: {requests: 1, per: 10s, key: "header:x-tenant"}
  - id: shared
    paths: ["/v1/shared"]
    effect: allow
    when:
      rate_limit: {requests: 1, per: 1h, key: rule}
  - id: limited-approval
    methods: [POST]
    paths: ["/v1/deploy"]
    effect: allow
    when:
      rate_limit: {requests: 1, per: 1m}
      approval: {approvers: ["spiffe://example.org/humans/**"]}
  - id: plain
    paths: ["/v1/plain"]
    effect: allow
"""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock)


@pytest.fixture
def decide(store: MemoryStore, clock: ManualClock) -> Iterator[Decide]:
    yield Decide(Pipeline(clock=clock, store=store), load_policy_text(POLICY))


class Decide:
    def __init__(self, pipeline: Pipeline, policy: object) -> None:
        self.pipeline = pipeline
        self.snapshot = Snapshot(policy, TrustBundles.empty())  # type: ignore[arg-type]

    async def __call__(
        self,
        method: str = "POST",
        path: str = "/v1/releases/7",
        *,
        principal: str = AGENT,
        body: bytes | None = b'{"tag":"v7"}',
        headers: dict[str, str] | None = None,
        trace: Trace | None = None,
    ) -> Decision:
        base, _, query = path.partition("?")
        view = RequestView(
            method, "api.internal", base, query, headers or {}, body, principal=principal
        )
        return await self.pipeline.evaluate(view, self.snapshot, trace)


def test_compiled_conditions() -> None:
    """The loader compiles rate limits and approvals into stateful conditions, in order."""
    rules = {r.id: r for r in load_policy_text(POLICY).rules}
    (approval,) = rules["publish"].when.stateful
    assert isinstance(approval, ApprovalCondition)
    assert (approval.rule_id, approval.ttl_s) == ("publish", 900)
    assert [p.text for p in approval.approvers] == [
        "spiffe://example.org/humans/release-managers/*"
    ]
    limit, approve = rules["limited-approval"].when.stateful
    assert isinstance(limit, RateLimitCondition) and isinstance(approve, ApprovalCondition)
    assert (limit.requests, limit.per_s, limit.key_kind) == (1, 60, "principal")
    assert approve.ttl_s == 900  # the default
    header = rules["by-tenant"].when.stateful[0]
    assert isinstance(header, RateLimitCondition) and header.header == "x-tenant"


async def test_approval_round_trip(decide: Decide, store: MemoryStore) -> None:
    """Required with the fingerprint as id, then allowed once naming the approver, then
    required again (replay)."""
    first = await decide()
    expected = action_fingerprint(
        AGENT, "POST", "api.internal", "/v1/releases/7", "", b'{"tag":"v7"}'
    )
    assert (first.reason, first.approval_id, first.http_status) == (
        Reason.APPROVAL_REQUIRED, expected, 403,
    )  # fmt: skip
    assert (await store.approve(expected, HUMAN)).record is not None
    granted = await decide()
    assert (granted.allowed, granted.rule, granted.approval_id, granted.approver) == (
        True, "publish", expected, HUMAN,
    )  # fmt: skip
    replay = await decide()
    assert (replay.reason, replay.approval_id) == (Reason.APPROVAL_REQUIRED, expected)


@pytest.mark.parametrize(
    ("change", "same_action"),
    [
        pytest.param({"body": b'{"tag":"v8"}'}, False, id="other-body"),
        pytest.param({"body": None}, False, id="no-body"),
        pytest.param({"path": "/v1/releases/7?force=1"}, False, id="other-query"),
        pytest.param({"principal": OTHER}, False, id="other-principal"),
        pytest.param({"path": "/v1/releases/8"}, False, id="other-path"),
        pytest.param({"headers": {"x-trace": "1"}}, True, id="headers-do-not-count"),
    ],
)
async def test_approval_covers_one_action(
    decide: Decide, store: MemoryStore, change: dict[str, object], same_action: bool
) -> None:
    """An approval is for one principal, method, host, path, query and body: not another."""
    approval_id = (await decide()).approval_id
    assert approval_id is not None
    await store.approve(approval_id, HUMAN)
    other = await decide(**change)  # type: ignore[arg-type]
    assert other.allowed is same_action
    assert (other.approval_id == approval_id) is same_action


async def test_rejected_is_denied_until_ttl(
    decide: Decide, store: MemoryStore, clock: ManualClock
) -> None:
    """After a reject the action gets approval_denied until ttl, then a fresh request."""
    approval_id = (await decide()).approval_id
    assert approval_id is not None
    await store.reject(approval_id, HUMAN)
    assert (await decide()).reason is Reason.APPROVAL_DENIED
    clock.advance(900)
    assert (await decide()).reason is Reason.APPROVAL_REQUIRED


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({"x-envoy-auth-partial-body": "true"}, b"{", id="partial-body"),
        pytest.param({"content-length": "12"}, None, id="body-not-forwarded"),
        pytest.param({"transfer-encoding": "chunked"}, None, id="chunked-not-forwarded"),
    ],
)
async def test_approval_needs_the_whole_body(
    decide: Decide, store: MemoryStore, headers: dict[str, str], body: bytes | None
) -> None:
    """A body the server cannot see whole is body_unavailable, and nothing is recorded."""
    decision = await decide(headers=headers, body=body)
    assert (decision.reason, decision.approval_id) == (Reason.BODY_UNAVAILABLE, None)
    assert await store.list_approvals() == []


async def test_rate_limit_sliding_window(decide: Decide, clock: ManualClock) -> None:
    """Two per minute per principal: the third is 429 with retry-after until a slot frees."""
    reasons = [(await decide(path="/v1/transfers")).reason for _ in range(3)]
    assert reasons == [Reason.ALLOWED_BY_RULE, Reason.ALLOWED_BY_RULE, Reason.RATE_LIMITED]
    clock.advance(30)
    limited = await decide(path="/v1/transfers")
    assert (limited.http_status, limited.retry_after) == (429, 30)
    assert (await decide(path="/v1/transfers", principal=OTHER)).allowed  # its own counter
    clock.advance(30)
    assert (await decide(path="/v1/transfers")).allowed


@pytest.mark.parametrize(
    ("first", "second", "allowed"),
    [
        pytest.param({"x-tenant": "a"}, {"x-tenant": "a"}, False, id="same-tenant"),
        pytest.param({"x-tenant": "a"}, {"x-tenant": "b"}, True, id="other-tenant"),
        pytest.param({"x-tenant": "a"}, {}, False, id="missing-header"),
    ],
)
async def test_rate_limit_by_header(
    decide: Decide, first: dict[str, str], second: dict[str, str], allowed: bool
) -> None:
    """`key: header:NAME` counts per header value; a request without it is refused."""
    assert (await decide("GET", "/v1/search", headers=first)).allowed
    decision = await decide("GET", "/v1/search", headers=second)
    assert decision.allowed is allowed
    if not second:
        assert decision.reason is Reason.CONDITION_FAILED


async def test_rate_limit_by_rule_is_shared(decide: Decide) -> None:
    """`key: rule` is one counter for every caller of the rule."""
    assert (await decide("GET", "/v1/shared")).allowed
    assert (await decide("GET", "/v1/shared", principal=OTHER)).reason is Reason.RATE_LIMITED


async def test_rate_limited_request_keeps_its_approval(decide: Decide, store: MemoryStore) -> None:
    """The rate limit runs first: a request refused for its rate does not spend the approval."""
    approval_id = (await decide(path="/v1/deploy")).approval_id  # uses the one slot
    assert approval_id is not None
    await store.approve(approval_id, HUMAN)
    assert (await decide(path="/v1/deploy")).reason is Reason.RATE_LIMITED
    record = await store.get_approval(approval_id)
    assert record is not None and record.status.value == "approved"


async def test_revocation_in_store_denies(decide: Decide, store: MemoryStore) -> None:
    """An admin revocation denies `revoked` (403) before any rule; unrevoke lifts it."""
    await store.revoke("spiffe://example.org/agents/acme/*", 600, "leaked key", HUMAN)
    decision = await decide("GET", "/v1/plain")
    assert (decision.reason, decision.http_status, decision.principal) == (
        Reason.REVOKED, 403, AGENT,
    )  # fmt: skip
    assert (await decide("GET", "/v1/plain", principal=OTHER)).allowed
    await store.unrevoke("spiffe://example.org/agents/acme/*")
    assert (await decide("GET", "/v1/plain")).allowed


class BrokenStore(MemoryStore):
    """A memory store whose rate counters, approvals or revocations fail."""

    def __init__(self, clock: ManualClock, broken: str) -> None:
        super().__init__(clock)
        self.broken = broken

    async def hit(self, key: str, limit: int, period_s: float) -> RateResult:
        if self.broken == "hit":
            raise StoreUnavailable("redis rate limit failed: ConnectionError")
        return await super().hit(key, limit, period_s)

    async def revoked(self, spiffe_id: SpiffeId) -> Revocation | None:
        if self.broken == "revoked":
            raise StoreUnavailable("revocations unknown")
        return await super().revoked(spiffe_id)


@pytest.mark.parametrize(
    ("broken", "path", "reason"),
    [
        pytest.param("hit", "/v1/transfers", Reason.INTERNAL_ERROR, id="rate-limited-rule-fails"),
        pytest.param("hit", "/v1/plain", Reason.ALLOWED_BY_RULE, id="plain-rule-still-allows"),
        pytest.param("revoked", "/v1/plain", Reason.INTERNAL_ERROR, id="unknown-revocations"),
    ],
)
async def test_store_failure_fails_closed(
    clock: ManualClock, broken: str, path: str, reason: Reason
) -> None:
    """A failing store denies internal_error (503) where it is needed, and only there."""
    decide = Decide(
        Pipeline(clock=clock, store=BrokenStore(clock, broken)), load_policy_text(POLICY)
    )
    decision = await decide("POST", path)
    assert decision.reason is reason
    if reason is Reason.INTERNAL_ERROR:
        assert decision.http_status == 503


OPEN_RELEASES = """\
  - id: releases-open
    paths: ["/v1/releases/**"]
    effect: allow
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param("", (False, Reason.NO_MATCHING_RULE, None), id="alone-grants-nothing"),
        pytest.param(
            OPEN_RELEASES, (True, Reason.ALLOWED_BY_RULE, "releases-open"), id="beside-a-grant"
        ),
    ],
)
async def test_dry_run_approval_is_never_evaluated(
    clock: ManualClock,
    store: MemoryStore,
    extra: str,
    expected: tuple[bool, Reason, str | None],
) -> None:
    """A dry-run rule's approval neither grants nor creates, asks for or consumes one."""
    text = POLICY.replace("  - id: publish\n", "  - id: publish\n    mode: dry_run\n") + extra
    decide = Decide(Pipeline(clock=clock, store=store), load_policy_text(text))
    trace = Trace()
    decision = await decide(trace=trace)
    assert (decision.allowed, decision.reason, decision.rule) == expected
    assert (decision.dry_run, decision.approval_id) == (False, None)
    (step,) = [s for s in trace.steps if s["rule"] == "publish"]
    assert [c["outcome"] for c in step["conditions"]] == ["not_evaluated"]  # type: ignore[attr-defined]
    assert await store.list_approvals() == []
