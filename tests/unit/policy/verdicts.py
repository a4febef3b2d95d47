"""Evaluating a policy's rules for one POST in the tests of conditions and dry run."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.policy.conditions.base import RequestContext
from authz_server.policy.evaluate import Trace, Verdict, evaluate_rules
from authz_server.policy.model import Policy
from authz_server.state.memory import MemoryStore

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org]\n"
AGENT = "spiffe://example.org/agents/acme/bot"
THURSDAY = datetime.fromisoformat("2026-11-26T10:00:00+01:00")
SATURDAY = datetime.fromisoformat("2026-11-28T10:00:00+01:00")
JSON = {"content-type": "application/json"}


def verdict_of(
    policy: Policy,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    now: datetime = THURSDAY,
    principal: str | None = AGENT,
    path: str = "/v1/transfers",
    trace: Trace | None = None,
) -> Verdict:
    ctx = RequestContext(
        "POST",
        "h",
        path,
        headers={**JSON, **(headers or {})},
        body=body,
        spiffe_id=parse_spiffe_id(principal) if principal else None,
        now=now,
        store=MemoryStore(),
    )
    return asyncio.run(evaluate_rules(policy, ctx, trace))


def summary(verdict: Verdict) -> tuple[bool, str, str | None, bool]:
    return (
        verdict.allowed,
        verdict.reason.value,
        verdict.rule.id if verdict.rule else None,
        verdict.dry_run,
    )


def granted_by(verdict: Verdict) -> str | None:
    return verdict.enforced_rule.id if verdict.enforced_rule else None
