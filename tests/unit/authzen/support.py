"""A handler over the real pipeline, a memory audit and real metrics, for the unit tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from authz_server.audit.log import MemoryAudit
from authz_server.authzen.caller import CallerAuthenticator
from authz_server.authzen.decide import AuthzenService
from authz_server.authzen.handlers import AuthzenHandler, Reply
from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.telemetry.metrics import Metrics

JSON = "application/json"


@dataclass
class Rig:
    handler: AuthzenHandler
    audit: MemoryAudit
    metrics: Metrics
    store: MemoryStore
    holder: SnapshotHolder

    async def evaluation(self, document: Any, content_type: str | None = JSON) -> Reply:
        return await self.handler.evaluation(_bytes(document), content_type, None, "rid")

    async def evaluations(self, document: Any, content_type: str | None = JSON) -> Reply:
        return await self.handler.evaluations(_bytes(document), content_type, None, "rid")

    def decisions(self, decision: str, reason: str, rule: str = "") -> float:
        value = self.metrics.registry.get_sample_value(
            "authz_decisions_total",
            {"decision": decision, "reason": reason, "rule": rule, "dry_run": "false"},
        )
        return value or 0.0


def _bytes(document: Any) -> bytes:
    return document if isinstance(document, bytes) else json.dumps(document).encode()


def make_rig(policy: str, *, authenticated: bool = False) -> Rig:
    """`authenticated`: callers need a client certificate (none is given here: 401)."""
    audit, metrics, store = MemoryAudit(), Metrics(), MemoryStore()
    holder = SnapshotHolder(Snapshot(load_policy_text(policy), TrustBundles.empty()))
    service = AuthzenService(Pipeline(store=store), holder, audit, metrics)
    handler = AuthzenHandler(service, CallerAuthenticator() if authenticated else None)
    return Rig(handler, audit, metrics, store, holder)
