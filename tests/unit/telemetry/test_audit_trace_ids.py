"""Audit records of traced Checks carry `trace_id` and `span_id`; a log mixing traced and
untraced records still verifies (the hash covers the ids) and replays."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authz_server.audit.log import AuditLog
from authz_server.audit.verify import verify_chain
from authz_server.check.pipeline import Pipeline
from authz_server.check.replay import replay_audit
from authz_server.check.service import CheckService
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.telemetry.tracing import Tracing
from tests.conftest import make_check_request

Memory = tuple[Tracing, InMemorySpanExporter]

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
  require_certificate: false
rules:
  - id: orders-read
    methods: [GET]
    paths: ["/v1/orders/{id}"]
    unauthenticated: true
    effect: allow
"""

#: (path, traceparent): sampled, unsampled, none; allows and denies.
CHECKS = [
    ("/v1/orders/1", f"00-{TRACE}-00f067aa0ba902b7-01"),
    ("/v1/orders/2", f"00-{TRACE}-00f067aa0ba902b7-00"),
    ("/v1/admin", f"00-{TRACE}-00f067aa0ba902b7-01"),
    ("/v1/orders/3", None),
]


async def _decide_all(audit: AuditLog) -> None:
    snapshot = Snapshot(load_policy_text(POLICY), TrustBundles.empty())
    service = CheckService(Pipeline(MemoryStore()), SnapshotHolder(snapshot), audit)
    for path, traceparent in CHECKS:
        headers = {"traceparent": traceparent} if traceparent else {}
        request = make_check_request(path=path, headers=headers)
        await service.check_bytes(request.SerializeToString())


@pytest.fixture
def log_file(tmp_path: Path, memory: Memory) -> tuple[Path, list[dict[str, Any]]]:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    asyncio.run(_decide_all(audit))
    audit.close()
    return path, [json.loads(line) for line in path.read_text().splitlines()]


def test_sampled_checks_are_recorded_with_their_ids(
    log_file: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, records = log_file
    traced = [("trace_id" in r, "span_id" in r) for r in records]
    # Sampled parent: ids; unsampled parent: none; no parent: a new, sampled trace.
    assert traced == [(True, True), (False, False), (True, True), (True, True)]
    assert records[0]["trace_id"] == records[2]["trace_id"] == TRACE
    assert records[3]["trace_id"] != TRACE
    assert len({r["span_id"] for r in records if "span_id" in r}) == 3
    assert all(len(r["span_id"]) == 16 for r in records if "span_id" in r)


def test_a_log_with_and_without_ids_verifies(
    log_file: tuple[Path, list[dict[str, Any]]],
) -> None:
    path, _ = log_file
    report = verify_chain([path])
    assert report.problem is None and report.decisions == len(CHECKS)


def test_an_edited_trace_id_breaks_the_chain(
    log_file: tuple[Path, list[dict[str, Any]]],
) -> None:
    """The ids are covered by the record's hash like every other field."""
    path, _ = log_file
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace(TRACE, "f" * 32)
    path.write_text("".join(lines))
    problem = verify_chain([path]).problem
    assert problem is not None and (problem.line, problem.kind) == (1, "edited")


def test_replay_reads_records_with_ids(log_file: tuple[Path, list[dict[str, Any]]]) -> None:
    path, _ = log_file
    report = replay_audit(load_policy_text(POLICY), [path])
    assert (report.replayed, report.unchanged, report.changes) == (len(CHECKS), len(CHECKS), [])
