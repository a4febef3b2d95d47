"""`authz-server replay` re-decides the audit records of AuthZEN decisions (`api: authzen`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from authz_server.authzen.caller import Caller
from authz_server.authzen.model import ItemProblem, parse_evaluation
from authz_server.check.replay import replay_audit
from authz_server.policy.load import load_policy_text
from tests.unit.authzen.support import Rig, make_rig

POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
authzen:
  trusted_peps: ["spiffe://example.org/gateways/*"]
rules:
  - id: read
    methods: [GET]
    paths: ["/ok/**"]
    principals: ["spiffe://example.org/ns/**"]
    effect: allow
"""
GATEWAY = "spiffe://example.org/gateways/edge"
ALICE = "spiffe://example.org/ns/a/sa/alice"


def _record(tmp_path: Path) -> Path:
    """An audit log of AuthZEN decisions asked by the gateway, about alice and itself."""
    rig = make_rig(POLICY)
    asyncio.run(_decide(rig))
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rig.audit.records))
    assert {r["api"] for r in rig.audit.records} == {"authzen"}
    return log


async def _decide(rig: Rig) -> None:
    service, snapshot = rig.handler.service, rig.holder.snapshot
    assert snapshot is not None
    for subject, path in ((ALICE, "/ok/1"), (ALICE, "/no"), (GATEWAY, "/ok/2")):
        evaluation = parse_evaluation(
            {
                "subject": {"type": "spiffe", "id": subject},
                "action": {"name": "GET"},
                "resource": {"type": "http", "id": path},
            }
        )
        await service.decide(evaluation, Caller(GATEWAY), snapshot, "")
    await service.decide(ItemProblem("bad item"), Caller(GATEWAY), snapshot, "")


def test_same_policy_same_decisions(tmp_path: Path) -> None:
    log = _record(tmp_path)
    report = replay_audit(load_policy_text(POLICY), [log])
    assert (report.replayed, report.unchanged, report.changes, report.uncertain) == (3, 3, [], [])
    assert report.skipped == {"no request recorded (malformed or non-HTTP Check)": 1}


def test_a_pep_no_longer_trusted_is_a_certain_change(tmp_path: Path) -> None:
    log = _record(tmp_path)
    untrusted = POLICY.replace(
        '  trusted_peps: ["spiffe://example.org/gateways/*"]', "  trusted_peps: []"
    )
    report = replay_audit(load_policy_text(untrusted), [log])
    assert report.replayed == 3 and report.uncertain == []
    # Both of alice's records change (an allow and a deny, now subject_not_caller);
    # the gateway asking about itself does not.
    assert [(c.record["principal"], c.record["path"]) for c in report.changes] == [
        (ALICE, "/ok/1"), (ALICE, "/no"),
    ]  # fmt: skip
    allowed, denied = report.changes
    assert (allowed.old.decision, allowed.new.decision, allowed.new.reason) == (
        "allow", "deny", "subject_not_caller",
    )  # fmt: skip
    assert (denied.old.reason, denied.new.reason) == ("no_matching_rule", "subject_not_caller")
