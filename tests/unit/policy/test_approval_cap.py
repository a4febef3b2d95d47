"""The per-principal cap on pending approvals, through the real Pipeline
(docs/policy/approvals.md)."""

from __future__ import annotations

from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.decision import Reason
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.state.store import ApprovalStatus
from tests.unit.state.conftest import ManualClock

AGENT = "spiffe://example.org/agents/acme/bot"
OTHER = "spiffe://example.org/agents/globex/bot"
HUMAN = "spiffe://example.org/humans/alice"
POLICY = """\
version: 1
identity: {trust_domains: [example.org]}
rules:
  - id: publish
    methods: [POST]
    paths: ["/v1/releases/*"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/*"], ttl: 10m}
"""
CAP = 2


def _view(release: int, principal: str = AGENT) -> RequestView:
    return RequestView(
        "POST", "api.internal", f"/v1/releases/{release}", "", {}, b"{}", principal=principal
    )


async def test_flooding_agent_gets_rate_limited_without_new_records() -> None:
    """Past its cap an agent's new actions are denied rate_limited with retry-after and no
    approval id, nothing new reaches the approvers, and its waiting actions stay usable."""
    clock = ManualClock()
    store = MemoryStore(clock, max_pending=CAP)
    pipeline = Pipeline(clock=clock, store=store)
    snapshot = Snapshot(load_policy_text(POLICY), TrustBundles.empty())

    first = await pipeline.evaluate(_view(1), snapshot, None)
    clock.advance(60)
    await pipeline.evaluate(_view(2), snapshot, None)
    flood = await pipeline.evaluate(_view(3), snapshot, None)
    assert (first.reason, flood.reason) == (Reason.APPROVAL_REQUIRED, Reason.RATE_LIMITED)
    assert (flood.approval_id, flood.retry_after) == (None, 540)  # first expires at 10 min
    assert len(await store.list_approvals()) == CAP

    other = await pipeline.evaluate(_view(3, OTHER), snapshot, None)
    assert other.reason is Reason.APPROVAL_REQUIRED  # the cap is per principal

    assert first.approval_id is not None
    approved = await store.approve(first.approval_id, HUMAN)
    assert approved.record is not None and approved.record.status is ApprovalStatus.APPROVED
    granted = await pipeline.evaluate(_view(1), snapshot, None)
    assert (granted.allowed, granted.approver) == (True, HUMAN)
    again = await pipeline.evaluate(_view(3), snapshot, None)
    assert again.reason is Reason.APPROVAL_REQUIRED  # deciding one freed a slot
