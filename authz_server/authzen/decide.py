"""One AuthZEN evaluation decided by the Check path's engine, audited and counted like a Check.

    evaluation → mapping.to_view → Pipeline.evaluate(view, snapshot) → Decision
               → metrics (the Check's observer) → audit record (`api: authzen`)
               → the AuthZEN Decision object (`render.py`)

The snapshot is read once per HTTP request, so every item of a batch is judged against the
same policy and bundles. An item that cannot be mapped is a deny with its reason
(`malformed_request`, `unsupported_request`), audited as well. Anything unexpected is a
fail-closed `internal_error` deny, logged with its traceback, as on the Check path.
Items of a batch run one after another, in order: approvals and rate limits are counted
in the order the caller gave, and the short-circuiting semantics need that order anyway.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from authz_server.audit.log import AuditLog, audit_record
from authz_server.authzen.caller import Caller
from authz_server.authzen.mapping import MappingProblem, to_view
from authz_server.authzen.model import Evaluation, ItemProblem, Semantic
from authz_server.authzen.render import decision_object
from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.core.decision import Decision, Reason
from authz_server.core.errors import StoreUnavailable
from authz_server.core.request import RequestView
from authz_server.telemetry.metrics import NULL_OBSERVER, DecisionObserver

__all__ = ["API", "AuthzenService", "Decided"]

log = logging.getLogger(__name__)

#: The audit record's `api` of every AuthZEN decision.
API = "authzen"


@dataclass(frozen=True, slots=True)
class Decided:
    """One evaluation's outcome: the decision and the Decision object the caller gets."""

    decision: Decision
    payload: dict[str, Any]

    @property
    def granted(self) -> bool:
        """What the caller is told (`decision`): the enforced outcome, as Envoy enforces it."""
        return bool(self.payload["decision"])


class AuthzenService:
    """The AuthZEN side of the engine: the same pipeline, snapshot, audit and metrics."""

    def __init__(
        self,
        pipeline: Pipeline,
        state: SnapshotHolder,
        audit: AuditLog,
        observer: DecisionObserver = NULL_OBSERVER,
    ) -> None:
        self.pipeline = pipeline
        self.state = state
        self.audit = audit
        self.observer = observer
        self.decisions = 0

    def snapshot(self) -> Snapshot | None:
        """The snapshot in force; None while not ready or the audit sink is down (closed)."""
        return self.state.snapshot if self.audit.healthy else None

    def not_ready(self) -> str | None:
        """Why no decision can be made now, or None."""
        if not self.audit.healthy:
            return self.audit.problem() or "audit log unavailable"
        if self.state.snapshot is None:
            return "no policy and trust bundles in force yet"
        return None

    async def decide_all(
        self,
        items: tuple[Evaluation | ItemProblem, ...],
        semantic: Semantic,
        caller: Caller,
        snapshot: Snapshot,
        request_id: str,
    ) -> list[Decided]:
        """Each item in order, stopping as `semantic` says (the stopping one included)."""
        results: list[Decided] = []
        for item in items:
            decided = await self.decide(item, caller, snapshot, request_id)
            results.append(decided)
            if semantic is Semantic.DENY_ON_FIRST_DENY and not decided.granted:
                break
            if semantic is Semantic.PERMIT_ON_FIRST_PERMIT and decided.granted:
                break
        return results

    async def decide(
        self,
        item: Evaluation | ItemProblem,
        caller: Caller,
        snapshot: Snapshot,
        request_id: str,
    ) -> Decided:
        started = time.perf_counter_ns()
        view: RequestView | None = None
        problem: MappingProblem | None = None
        try:
            if isinstance(item, ItemProblem):
                problem = MappingProblem(Reason.MALFORMED_REQUEST, item.message)
            else:
                mapped = to_view(item, caller.vouched_by, request_id)
                if isinstance(mapped, MappingProblem):
                    problem = mapped
                else:
                    view = mapped
            if problem is not None:
                decision = Decision(False, problem.reason)
            else:
                assert view is not None
                decision = await self.pipeline.evaluate(view, snapshot)
        except Exception:
            log.exception("AuthZEN evaluation failed; denying (internal_error)")
            decision, problem = Decision(False, Reason.INTERNAL_ERROR), None
        self.decisions += 1
        elapsed_ns = time.perf_counter_ns() - started
        self.observer.observe(decision, elapsed_ns / 1e9)
        try:
            self.audit.record(
                audit_record(
                    decision,
                    view,
                    policy_version=snapshot.policy.version,
                    latency_us=elapsed_ns // 1000,
                    api=API,
                )
            )
        except Exception:
            log.exception("audit record for decision %s failed", decision.decision_id)
        expires_us = await self._approval_expiry(decision)
        return Decided(decision, decision_object(decision, problem, expires_us))

    async def _approval_expiry(self, decision: Decision) -> int | None:
        """When a pending approval stops waiting for a human (epoch µs), if the store says."""
        if decision.reason is not Reason.APPROVAL_REQUIRED or decision.approval_id is None:
            return None
        try:
            record = await self.pipeline.store.get_approval(decision.approval_id)
        except StoreUnavailable as error:
            log.warning("approval %s: expiry unknown: %s", decision.approval_id, error)
            return None
        return record.expires_us if record is not None else None
