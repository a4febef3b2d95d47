"""One offline decision for `check`, `test`, `replay` and the admin `Explain`: the
principal taken as verified, on empty state of its own. A rate limit admits, an approval
is `approval_required`, and the four agree."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import pytest

from authz_server.admin.service import Explanation, pipeline_explain
from authz_server.audit.format import audit_record
from authz_server.check.offline import OfflineRequest, decide_offline, offline_snapshot
from authz_server.check.replay import replay_audit
from authz_server.check.snapshot import Snapshot
from authz_server.cli import main as cli
from authz_server.core.decision import Decision, Reason
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.load import load_policy
from authz_server.state.fingerprint import action_fingerprint
from authz_server.tools.policy_tests import run_tests

AGENT = "spiffe://example.org/agents/acme/bot"
AT = "2026-11-26T10:00:00+01:00"
POLICY = """\
version: 1
identity: {trust_domains: [example.org], require_certificate: true}
rules:
  - id: publish
    methods: [POST]
    paths: ["/v1/releases/**"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/*"]}
  - id: transfers
    methods: [POST]
    paths: ["/v1/transfers"]
    effect: allow
    when:
      rate_limit: {requests: 1, per: 1h}
"""

#: (path, decision, reason, rule): what every offline path must say, twice in a row.
CASES = [
    pytest.param("/v1/releases/7", "deny", "approval_required", "publish", id="approval"),
    pytest.param("/v1/transfers", "allow", "allowed_by_rule", "transfers", id="rate-limit"),
]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def _view(path: str) -> RequestView:
    return OfflineRequest(path, "POST", AGENT).view()


def _check(policy: Path, path: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str, str]:
    argv = ["check", "--policy", str(policy), "--principal", AGENT, "--method", "POST"]
    cli.main([*argv, "--path", path, "--at", AT])
    out = json.loads(capsys.readouterr().out)
    return out["decision"], out["reason"], out["rule"]


def _explain(policy: Path, path: str) -> tuple[Decision, list[dict[str, object]]]:
    snapshot = Snapshot(load_policy(policy), TrustBundles.empty())
    explain = pipeline_explain(lambda: snapshot)

    async def run() -> Explanation:
        return await explain(_view(path), datetime.fromisoformat(AT))

    result = asyncio.run(run())
    return result.decision, result.trace


@pytest.mark.parametrize(("path", "decision", "reason", "rule"), CASES)
def test_check_and_explain_agree_and_keep_no_state(
    policy_file: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
    decision: str,
    reason: str,
    rule: str,
) -> None:
    """`check` and Explain give the same answer, and the same again the second time: a
    limit of one per hour admits every offline decision, no approval is ever granted."""
    for _ in range(2):
        assert _check(policy_file, path, capsys) == (decision, reason, rule)
        explained, _ = _explain(policy_file, path)
        assert (explained.verdict, explained.reason.value, explained.rule) == (
            decision,
            reason,
            rule,
        )


def test_explain_evaluates_the_approval_and_names_its_id(policy_file: Path) -> None:
    """Explain says what the server would: approval_required, with the action's id."""
    decision, trace = _explain(policy_file, "/v1/releases/7")
    expected = action_fingerprint(AGENT, "POST", "", "/v1/releases/7", "", None)
    assert (decision.reason, decision.approval_id) == (Reason.APPROVAL_REQUIRED, expected)
    (step,) = [s for s in trace if s["rule"] == "publish"]
    assert step["conditions"] == [
        {
            "condition": "approval",
            "outcome": "fails",
            "reason": "approval_required",
            "detail": "awaiting approval",
            "approval_id": expected,
        }
    ]


@pytest.mark.parametrize(("path", "decision", "reason", "rule"), CASES)
def test_policy_tests_decide_alike(
    policy_file: Path, path: str, decision: str, reason: str, rule: str
) -> None:
    """`authz-server test` expects what `check` prints, for every case, every time."""
    case = (
        f"  - name: {path}\n    request: {{principal: '{AGENT}', method: POST, path: {path},"
        f" at: '{AT}'}}\n    expect: {{decision: {decision}, reason: {reason}, rule: {rule}}}\n"
    )
    tests = policy_file.parent / "offline_test.yaml"
    tests.write_text("policy: policy.yaml\ncases:\n" + case + case)
    lines: list[str] = []
    assert run_tests([str(tests)], lines.append) == 0, lines
    assert lines == ["2 passed, 0 failed"]


@pytest.mark.parametrize(("path", "decision", "reason", "rule"), CASES)
def test_replay_decides_alike(
    policy_file: Path, path: str, decision: str, reason: str, rule: str
) -> None:
    """A recorded decision that the offline rule reproduces replays unchanged, twice."""
    policy = load_policy(policy_file)
    recorded = Decision(
        decision == "allow",
        Reason(reason),
        rule=rule,
        principal=AGENT,
        at=datetime.fromisoformat(AT).timestamp(),
    )
    record = audit_record(recorded, _view(path), policy_version=policy.version, latency_us=1)
    log = policy_file.parent / "audit.jsonl"
    log.write_text((json.dumps(record) + "\n") * 2)
    report = replay_audit(policy, [log])
    assert (report.replayed, report.unchanged, report.changes, report.uncertain) == (2, 2, [], [])


def test_offline_identity_takes_the_principal_as_verified(policy_file: Path) -> None:
    """`require_certificate` does not apply offline: there is no certificate to check."""
    snapshot = offline_snapshot(load_policy(policy_file))
    decision = asyncio.run(decide_offline(snapshot, _view("/v1/transfers")))
    assert (decision.allowed, decision.principal) == (True, AGENT)
