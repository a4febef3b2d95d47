"""Bounded load through real Envoy: no errors, the expected denies, one audit record each.

A fixed number of requests from a separate process, capped in time; the latency
percentiles are reported (in the test's properties and output), never asserted.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from authz_server.audit.verify import verify_chain
from tests.e2e import harness
from tests.load.conftest import DENIED, LoadStack, loadgen_results

pytestmark = pytest.mark.e2e

COUNT = 800
CONCURRENCY = 8


def test_bounded_load_every_decision_audited_once(
    load_stack: LoadStack, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """COUNT requests: allowed paths get 200, the denied one 403, and each decision the
    client saw has exactly one audit record; the chain verifies afterwards."""
    before = len(harness.audit_records(load_stack.audit_log))
    out = tmp_path / "requests.jsonl"
    argv = load_stack.loadgen_argv(count=COUNT, concurrency=CONCURRENCY, max_seconds=40, out=out)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    summary, results = loadgen_results(process, out, timeout=60)
    record_property("load_summary", summary)
    print(f"\nbounded load through Envoy: {summary}")

    assert summary["requests"] == COUNT and not summary["timed_out"], summary
    assert summary["errors"] == 0, [r["error"] for r in results if r["error"]][:5]
    for result in results:
        expected = (403, "no_matching_rule") if result["path"] == DENIED else (200, None)
        assert (result["status"], result["reason"]) == expected, result
        assert result["decision_id"], result

    records = harness.audit_records(load_stack.audit_log)[before:]
    decisions = [r for r in records if "decision_id" in r]
    assert len(decisions) == COUNT, "one record per decision: nothing lost, nothing extra"
    per_id = Counter(r["decision_id"] for r in decisions)
    assert set(per_id) == {r["decision_id"] for r in results}
    assert set(per_id.values()) == {1}
    verdicts = {r["decision_id"]: r["decision"] for r in decisions}
    for result in results:
        assert verdicts[result["decision_id"]] == ("allow" if result["status"] == 200 else "deny")
    report = verify_chain([load_stack.audit_log])
    assert report.problem is None, report.problem
