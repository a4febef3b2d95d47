"""Medians, ratios, targets, and the one Markdown table `make bench` prints.

Ratios are `variant / baseline` per repetition, then the median over repetitions, so a
ratio always compares runs taken moments apart. Baselines: A the do-nothing server;
B the 10-rule policy; C ext_authz → do-nothing (the target's reference; the no-authz and
RBAC rows show what an ext_authz hop costs at all); W one worker (direct and through
Envoy separately). Throughput ratios below 1 and latency or CPU ratios above 1 are worse.
Each target is printed with a pass or MISS marker. Phase T (tracing) has no target: its
rows say what a traced Check costs beside an untraced one. Nor has phase I: an instruction
count is compared between two trees, before and after a change.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import BenchConfig

__all__ = ["render_table", "targets"]

_BASELINE = {"A": "noop", "C": "ext_authz_noop", "E": "grpc"}
_LABELS = {
    "noop": "do-nothing server",
    "authz": "authz-server",
    "noauthz": "Envoy, no authorization",
    "rbac": "Envoy RBAC filter",
    "ext_authz_authz": "ext_authz → authz-server",
    "ext_authz_noop": "ext_authz → do-nothing",
    "grpc": "Check over gRPC (h2c)",
    "authzen": "AuthZEN over HTTP/1.1",
}
_METRICS = ("rps", "cpu_us", "server_cpu_us", "loadgen_cpu_us", "p50_ms", "p99_ms")
#: OPA-Envoy's published figures for its Check handler at 1,000 req/s (median, p99; µs).
OPA_ENVOY_CHECK_US = (350.0, 3000.0)
Runs = Mapping[str, Sequence[Mapping[str, float]]]


def _cpu(run: Mapping[str, float]) -> float:
    return run.get("server_cpu_us", 0.0) + run.get("envoy_cpu_us", 0.0)


def _metric(run: Mapping[str, float], name: str) -> float:
    return _cpu(run) if name == "cpu_us" else run.get(name, math.nan)


def _server_latency(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Median over repetitions of the server-side p50/p99/p99.9 (µs)."""
    keys = ("server_p50_us", "server_p99_us", "server_p999_us")
    return {k: _median([r.get(k, math.nan) for r in runs]) for k in keys}


def _median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def summarize(runs: Runs, baseline: str) -> dict[str, Any]:
    """Per variant: median of each metric and median per-repetition ratio to `baseline`."""
    out: dict[str, Any] = {}
    for name, reps in runs.items():
        row: dict[str, Any] = {m: _median([_metric(r, m) for r in reps]) for m in _METRICS}
        ratios = {}
        for m in _METRICS:
            pairs = zip(reps, runs[baseline], strict=False)
            ratios[m] = _median(
                [_metric(r, m) / b for r, base in pairs if (b := _metric(base, m)) > 0]
            )
        row["ratio"] = ratios
        out[name] = row
    return out


def _target(name: str, value: float, limit: float, higher_is_better: bool) -> dict[str, Any]:
    met = value >= limit if higher_is_better else value <= limit
    return {
        "name": name,
        "value": round(value, 3),
        "target": limit,
        "higher_is_better": higher_is_better,
        "met": bool(met),
    }


def targets(phases: Mapping[str, Any], config: BenchConfig) -> dict[str, Any]:
    """The summary: medians and ratios per phase, and each issue target met or not."""
    summary: dict[str, Any] = {"targets": []}
    goals = summary["targets"]
    if "A" in phases:
        a = summary["A"] = summarize(phases["A"]["runs"], "noop")
        goals.append(_target("A throughput vs do-nothing", a["authz"]["ratio"]["rps"], 0.70, True))
    if "B" in phases:
        base = str(min(config.b_rules))
        b = summary["B"] = summarize(phases["B"]["runs"], base)
        top = str(max(config.b_rules))
        goals.append(
            _target(f"B throughput {top} vs {base} rules", b[top]["ratio"]["rps"], 0.95, True)
        )
    if "C" in phases:
        c = summary["C"] = summarize(phases["C"]["runs"], "ext_authz_noop")
        ratio = c["ext_authz_authz"]["ratio"]
        goals.append(_target("C p50 vs ext_authz → do-nothing", ratio["p50_ms"], 1.4, False))
        server = summary["C_server"] = _server_latency(phases["C"]["runs"]["ext_authz_authz"])
        goals.append(_target("C server-side Check p50 µs", server["server_p50_us"], 150, False))
        goals.append(_target("C server-side Check p99 µs", server["server_p99_us"], 1000, False))
    if "E" in phases:  # the HTTP path's figures beside the gRPC path's; no target
        summary["E"] = summarize(phases["E"]["runs"], "grpc")
    if "T" in phases:
        summary["T"] = list(phases["T"]["modes"])
    if "I" in phases:  # a count to compare between trees; no target
        summary["I"] = dict(phases["I"])
    if "D" in phases:
        d = summary["D"] = dict(phases["D"])
        goals.append(_target(f"D RSS MB with {d['rules']} rules", d["rss_mb_loaded"], 150, False))
    if "W" in phases:
        w = summary["W"] = _workers(phases["W"])
        top = max(phases["W"]["workers"])
        if top > 1:
            scaling = w[f"direct-{top}"]["ratio"]["rps"]
            goals.append(_target(f"W direct req/s, {top} workers vs 1", scaling, 1.4, True))
    return summary


def _workers(phase: Mapping[str, Any]) -> dict[str, Any]:
    """Direct and through-Envoy variants, each compared with its own one-worker run."""
    runs = phase["runs"]
    out: dict[str, Any] = {}
    for path in ("direct", "envoy"):
        mine = {name: reps for name, reps in runs.items() if name.startswith(path + "-")}
        out.update(summarize(mine, f"{path}-1"))
    return out


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _reached(phases: Mapping[str, Any]) -> str:
    """The range of rates the paced runs achieved: h2load cannot always hold its rate."""
    rates = [
        run["paced_rps"]
        for phase in phases.values()
        if isinstance(phase, Mapping) and "runs" in phase
        for runs in phase["runs"].values()
        for run in runs
        if "paced_rps" in run
    ]
    return f"{min(rates):,.0f} to {max(rates):,.0f} req/s" if rates else "n/a"


def _server_lines(server: Mapping[str, float], rate: float) -> list[str]:
    """The server's own Check latency beside OPA-Envoy's published Check-handler figures."""
    opa_p50, opa_p99 = OPA_ENVOY_CHECK_US
    return [
        f"Server-side Check latency (handler entry to response, the interval "
        f"`authz_check_duration_seconds` observes; per-request `latency_us` of the audit "
        f"records) through Envoy at {rate:,.0f} req/s:",
        "",
        "| server | p50 µs | p99 µs | p99.9 µs |",
        "|---|---:|---:|---:|",
        f"| authz-server | {_fmt(server['server_p50_us'], 0)} | "
        f"{_fmt(server['server_p99_us'], 0)} | {_fmt(server['server_p999_us'], 0)} |",
        f"| OPA-Envoy (published, same rate) | {opa_p50:,.0f} | {opa_p99:,.0f} | n/a |",
    ]


def _worker_lines(rows: Mapping[str, Any]) -> list[str]:
    """Phase W: each variant against one worker on the same path."""
    lines = [
        "Workers on the memory store (`serve --workers N`, SO_REUSEPORT), unpaced; "
        "efficiency = req/s ratio / workers; cores = req/s times the CPU per request of the server "
        "and of h2load (direct), which share the machine:",
        "",
        "| path | workers | req/s | server CPU µs/decision | req/s vs 1 worker | efficiency "
        "| server cores | h2load cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        path, _, count = name.partition("-")
        ratio = row["ratio"]["rps"]
        server_cores = row["rps"] * row["server_cpu_us"] / 1e6
        loadgen_cores = row["rps"] * row["loadgen_cpu_us"] / 1e6
        lines.append(
            f"| {'direct gRPC' if path == 'direct' else 'through Envoy'} | {count} | "
            f"{_fmt(row['rps'], 0)} | {_fmt(row['server_cpu_us'], 0)} | {_fmt(ratio)} | "
            f"{_fmt(ratio / int(count))} | {_fmt(server_cores)} | {_fmt(loadgen_cores)} |"
        )
    return lines


def _tracing_lines(modes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Phase T: CPU per Check with tracing off and on, in process."""
    off = modes[0]["caller_us"]
    lines = [
        "Tracing, the whole Check path in process (least of the rounds; spans over OTLP/gRPC "
        "to a receiver in the benchmark's process):",
        "",
        "| tracing | CPU µs/Check | vs off | with export CPU µs/Check | spans exported |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in modes:
        exported = "" if row["exported"] is None else f"{row['exported']:,}"
        lines.append(
            f"| {row['mode']} | {_fmt(row['caller_us'], 1)} | {row['caller_us'] - off:+.1f} | "
            f"{_fmt(row['process_us'], 1)} | {exported} |"
        )
    return lines


def render_table(document: Mapping[str, Any]) -> str:
    """One Markdown table of every variant with its ratios, the targets, and the machine."""
    summary, config, m = document["summary"], document["config"], document["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb']:,} MB, Linux {m['kernel']}, "
        f"Python {m['python']}, grpcio {m['grpcio']}, protobuf {m['protobuf']}, {m['envoy']}; "
        f"load average {m['loadavg']} → {m.get('loadavg_after')}; "
        f"{config['reps']} repetitions, medians; uvloop {config['uvloop']}, "
        f"audit {config['audit']}, conditions {config['conditions']}.",
        "",
        "| phase | variant | req/s | CPU µs/req | p50 ms | p99 ms "
        "| vs | req/s ratio | CPU ratio | p50 ratio | p99 ratio |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    rates = {
        "A": config["direct"]["rate"],
        "B": config["direct"]["rate"],
        "C": config["envoy"]["rate"],
    }
    for phase in ("A", "B", "C", "E"):
        if phase not in summary:
            continue
        rows = summary[phase]
        baseline = _BASELINE.get(phase) or str(min(config["b_rules"]))
        for name, row in rows.items():
            label = _LABELS.get(name, f"{int(name):,} rules" if name.isdigit() else name)
            if phase == "A" and name == "authz":
                label += f" ({config['a_rules']} rules)"
            r = row["ratio"]
            vs = _LABELS.get(
                baseline, f"{int(baseline):,} rules" if baseline.isdigit() else baseline
            )
            lines.append(
                f"| {phase} | {label} | {_fmt(row['rps'], 0)} | {_fmt(row['cpu_us'], 0)} | "
                f"{_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} | {vs} | {_fmt(r['rps'])} | "
                f"{_fmt(r['cpu_us'])} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} |"
            )
    if "D" in summary:
        d = summary["D"]
        lines.append(
            f"| D | RSS: {d['rules']:,} rules loaded / after {d['checks']:,} Checks | "
            f"{_fmt(d['rss_mb_loaded'], 1)} MB | {_fmt(d['rss_mb_after_checks'], 1)} MB "
            "| | | | | | | |"
        )
    reached = _reached(document.get("phases", {}))
    lines += [
        "",
        f"p50/p99 at a fixed rate: {rates['A']:,.0f} req/s direct (A, B, E), "
        f"{rates['C']:,.0f} req/s through Envoy (C) (paced runs reached {reached}); "
        "req/s and CPU from unpaced runs (C's CPU is Envoy + server).",
    ]
    if "C_server" in summary:
        lines += ["", *_server_lines(summary["C_server"], rates["C"])]
    if "W" in summary:
        lines += ["", *_worker_lines(summary["W"])]
    if "T" in summary:
        lines += ["", *_tracing_lines(summary["T"])]
    if "I" in summary:
        i = summary["I"]
        lines += [
            "",
            f"Instructions per Check (callgrind, whole Check in process, {i['rules']} rules, "
            f"{i['checks']:,} Checks): {i['per_check']:,}.",
        ]
    lines += ["", "| target | measured | goal | |", "|---|---:|---:|---|"]
    for goal in summary["targets"]:
        sign = "≥" if goal["higher_is_better"] else "≤"
        lines.append(
            f"| {goal['name']} | {_fmt(goal['value'])} | {sign} {goal['target']} | "
            f"{'✓ pass' if goal['met'] else '✗ MISS'} |"
        )
    checks = document["count_checks"]
    lines.append("")
    lines.append(
        f"Count checks (h2load = Envoy /stats = server decisions): "
        f"{checks['total'] - len(checks['failed'])}/{checks['total']} agree."
    )
    return "\n".join(lines)
