"""`make bench`: authz-server against its ceiling and against Envoy's own RBAC
(docs/performance.md#method).

    python -m bench.run [--reps 3] [--phases ABCDWETI] [--quick] [--uvloop] [--out FILE.json]

Phases, each alternating its variants (the order rotates every repetition) and reporting
the median over repetitions; every ratio is the median of per-repetition ratios, so each
ratio compares two runs taken moments apart:

A  server efficiency: authz-server with a 200-rule policy (many hosts and paths,
   principal wildcards, conditions once the loader has them, every request carrying
   `source.certificate`, verified with a warm cache) against the do-nothing server on
   the same grpc.aio stack (`noop_server.py`): h2load straight at the gRPC port.
B  scale in rules: the same request mix against 10, 1,000 and 10,000 rules.
C  through real Envoy: no authorization, Envoy's RBAC filter with the equivalent check
   (`envoy_rbac.py`), ext_authz → authz-server, ext_authz → do-nothing; at 1,000 req/s,
   with the server's own Check latency (p50/p99/p99.9 from its per-request records).
D  memory: RSS with 10,000 rules loaded, and after 100,000 Checks.
W  workers: `serve` with 1 and with 2 worker processes on the memory store (the CLI,
   SO_REUSEPORT), direct and through Envoy (authz cluster `max_concurrent_streams` low
   enough that Envoy opens several connections): req/s, server CPU-µs per decision,
   and the scaling ratio (2 workers / 1 worker).
E  the HTTP path: phase A's authz-server asked the same mix as AuthZEN evaluations over
   HTTP/1.1, beside the gRPC Check on that same process (`authzen.py`): req/s, p50/p99.
T  tracing: the whole Check path in process (`tracing_checks.py`), off and on (unsampled
   parent, sampled parent, no parent) with spans exported over OTLP/gRPC to a receiver:
   CPU-µs per Check; every span of every traced Check is counted at the receiver.
I  instructions: the whole Check in process under valgrind's callgrind
   (`instructions.py`), the one figure a busy machine cannot move.

Method notes. Load comes from h2load in separate processes, one per request kind of
`workload.MIX` (h2load sends one body per process), pre-framed gRPC bodies for A/B and
h2c to Envoy for C (`envoy_noauthz.yaml` explains the two-listener mTLS hop h2load needs,
since it cannot present client certificates). Each measurement is an unpaced run
(throughput; CPU-µs per request from /proc/PID/stat, the steadier figure on a shared
machine) and a paced run (p50/p99 at a fixed rate; h2load's `--rps` paces per client on
a timer). Counts are proven, not assumed (`phases.py`): h2load's, Envoy's /stats, the
server's decision counter and a real gRPC client must agree, or the run fails. Audit
logging is on (to a file), as in production. Loopback only; every run is bounded in
requests and time. Read ratios, not absolute numbers, and only from an idle machine.

The mix is five fixed requests (three identities, so three certificates): the
certificate cache is warm after the first requests, as in production; a cache keyed
on whole requests would hit every time here and seldom in production, so such a cache
must not be judged by this benchmark without varying the paths first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from bench import authzen
from bench.envoy import BenchEnvoy, start_bench_envoy
from bench.instructions import count_instructions
from bench.machine import machine_info
from bench.phases import Bench, Sizes
from bench.policies import RuleSpec, when_supported, write_policy
from bench.procs import BenchProcess, start_bench_server
from bench.report import render_table, targets
from bench.tracing_checks import measure_checks
from bench.workers import WorkerServer, start_worker_server
from bench.workload import mint_bench_certs

__all__ = ["BenchConfig", "main", "run_bench"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchConfig:
    workdir: Path = ROOT / "bench-results" / "work"
    out: Path = ROOT / "bench-results" / "results.json"
    reps: int = 3
    phases: str = "ABCDWETI"
    a_rules: int = 200
    b_rules: tuple[int, ...] = (10, 1_000, 10_000)
    d_rules: int = 10_000
    d_checks: int = 100_000
    #: Direct gRPC (A, B): requests per unpaced run, per paced run, and the paced rate.
    direct: Sizes = field(default_factory=lambda: Sizes(unpaced=10_000, paced=3_000, rate=500))
    #: Through Envoy (C).
    envoy: Sizes = field(default_factory=lambda: Sizes(unpaced=10_000, paced=5_000, rate=1_000))
    #: Phase W: worker counts, and many connections so that SO_REUSEPORT spreads them.
    w_workers: tuple[int, ...] = (1, 2)
    w_direct: Sizes = field(
        default_factory=lambda: Sizes(unpaced=12_000, paced=0, rate=0, streams=2, clients=8)
    )
    w_envoy: Sizes = field(
        default_factory=lambda: Sizes(unpaced=8_000, paced=0, rate=0, streams=2, clients=4)
    )
    #: The authz cluster's `max_concurrent_streams` in phase W (C uses 16).
    w_max_streams: int = 4
    warmup: int = 1_000
    #: Phase T: Checks per round and rounds per mode.
    t_checks: int = 3_000
    t_rounds: int = 3
    #: Phase I: Checks counted under callgrind.
    i_checks: int = 1_000
    #: None: add `when` conditions when the loader accepts them.
    conditions: bool | None = None
    audit: bool = True
    uvloop: bool = False


QUICK = BenchConfig(
    reps=1,
    b_rules=(10, 1_000),
    d_rules=1_000,
    d_checks=2_000,
    direct=Sizes(unpaced=500, paced=200, rate=400),
    envoy=Sizes(unpaced=500, paced=200, rate=400),
    w_direct=Sizes(unpaced=800, paced=0, rate=0, streams=2, clients=8),
    w_envoy=Sizes(unpaced=400, paced=0, rate=0, streams=2, clients=4),
    warmup=100,
    t_checks=200,
    t_rounds=1,
    i_checks=100,
)


@dataclass
class _Run:
    config: BenchConfig
    bench: Bench
    rules: dict[int, list[RuleSpec]] = field(default_factory=dict)
    servers: dict[str, BenchProcess] = field(default_factory=dict)
    workers: list[WorkerServer] = field(default_factory=list)
    envoys: list[BenchEnvoy] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)

    def server(self, name: str, rules: int | None) -> BenchProcess:
        """Start (once) the do-nothing server (`rules` None) or authz-server with `rules`."""
        if name in self.servers:
            return self.servers[name]
        c, workdir = self.config, self.config.workdir
        if rules is None:
            process = start_bench_server("noop", name, workdir, uvloop=c.uvloop)
        else:
            policy = self.policy(rules)
            process = start_bench_server(
                "authz",
                name,
                workdir,
                policy=policy,
                bundle=self.bench.certs.ca,
                audit_log=workdir / f"{name}.audit.jsonl" if c.audit else None,
                uvloop=c.uvloop,
            )
            if rules == c.d_rules:
                self.memory["rss_mb_loaded"] = process.rss_kb() / 1024
        self.servers[name] = process
        self.bench.cross_check(process, noop=rules is None)
        self.bench.warm(self.bench.grpc_targets(process.port), c.warmup)
        return process

    def policy(self, rules: int) -> Path:
        """The generated policy with `rules` rules (written once)."""
        path = self.config.workdir / f"policy-{rules}.yaml"
        if rules not in self.rules:
            self.rules[rules] = write_policy(path, rules, conditions=bool(self.config.conditions))
        return path

    def stop(self, *names: str) -> None:
        for name in names or tuple(self.servers):
            if (process := self.servers.pop(name, None)) is not None:
                process.stop()

    def alternate(
        self, variants: Mapping[str, Callable[[], dict[str, float]]]
    ) -> dict[str, list[dict[str, float]]]:
        """Every variant once per repetition, starting one later each time."""
        names = list(variants)
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for rep in range(self.config.reps):
            for i in range(len(names)):
                name = names[(rep + i) % len(names)]
                runs[name].append(variants[name]())
        return runs


def _phase_a(run: _Run) -> dict[str, Any]:
    c = run.config
    noop, authz = run.server("noop", None), run.server(f"authz-{c.a_rules}", c.a_rules)
    return {
        "runs": run.alternate(
            {
                "noop": lambda: run.bench.direct("A noop", noop, c.direct),
                "authz": lambda: run.bench.direct(f"A authz-{c.a_rules}", authz, c.direct),
            }
        ),
        "cert_cache": authz.stats().get("cert_cache"),
    }


def _phase_b(run: _Run) -> dict[str, Any]:
    c = run.config
    servers = {n: run.server(f"authz-{n}", n) for n in c.b_rules}
    variants = {
        str(n): partial(run.bench.direct, f"B {n} rules", s, c.direct) for n, s in servers.items()
    }
    result = {"runs": run.alternate(variants)}
    run.stop(*(f"authz-{n}" for n in c.b_rules if n != c.d_rules))
    return result


def _phase_c(run: _Run) -> dict[str, Any]:
    c, bench = run.config, run.bench
    noop, authz = run.server("noop", None), run.server(f"authz-{c.a_rules}", c.a_rules)
    variants_to_start = {  # name: (template, authz port)
        "noauthz": ("noauthz", None),
        "rbac": ("rbac", None),
        "ext_authz_authz": ("ext_authz", authz.port),
        "ext_authz_noop": ("ext_authz", noop.port),
    }
    envoys: dict[str, BenchEnvoy] = {}
    for name, (template, port) in variants_to_start.items():
        envoys[name] = envoy = start_bench_envoy(
            f"envoy-{name}",
            template,
            c.workdir,
            cert_dir=bench.certs.dir,
            authz_port=port,
            rules=run.rules[c.a_rules],
        )
        run.envoys.append(envoy)  # stopped at the end even if a later one fails to start
        bench.warm(bench.http_targets(envoy.edge_port), c.warmup)
    servers = {"ext_authz_authz": authz, "ext_authz_noop": noop}
    denies = {"rbac", "ext_authz_authz"}
    variants = {
        name: partial(
            bench.through_envoy,
            f"C {name}",
            envoy,
            c.envoy,
            server=servers.get(name),
            denies=name in denies,
        )
        for name, envoy in envoys.items()
    }
    result = {"runs": run.alternate(variants)}
    for envoy in envoys.values():
        envoy.stop()
    return result


def _phase_d(run: _Run) -> dict[str, Any]:
    c = run.config
    server = run.server(f"authz-{c.d_rules}", c.d_rules)
    made = run.bench.top_up(server, c.d_checks, c.direct)
    stats = server.stats()
    run.bench._check(f"{server.name}: audit records", stats["decisions"], stats["audit_records"])
    return {
        "rules": c.d_rules,
        "rss_mb_loaded": run.memory["rss_mb_loaded"],
        "checks": made,
        "rss_mb_after_checks": server.rss_kb() / 1024,
        "cert_cache": stats.get("cert_cache"),
    }


def _phase_w(run: _Run) -> dict[str, Any]:
    c, bench = run.config, run.bench
    variants: dict[str, Callable[[], dict[str, float]]] = {}
    for n in c.w_workers:
        name = f"workers-{n}"
        server = start_worker_server(
            name,
            n,
            c.workdir,
            policy=run.policy(c.a_rules),
            bundle=bench.certs.ca,
            audit_log=c.workdir / f"{name}.audit.jsonl" if c.audit else None,
        )
        run.workers.append(server)  # stopped at the end even if a later step fails
        bench.cross_check(server, noop=False)
        bench.warm(bench.grpc_targets(server.port), c.warmup)
        envoy = start_bench_envoy(
            f"envoy-{name}",
            "ext_authz",
            c.workdir,
            cert_dir=bench.certs.dir,
            authz_port=server.port,
            rules=run.rules[c.a_rules],
            max_streams=c.w_max_streams,
        )
        run.envoys.append(envoy)
        bench.warm(bench.http_targets(envoy.edge_port), c.warmup)
        variants[f"direct-{n}"] = partial(
            bench.direct, f"W direct {n} workers", server, c.w_direct, latency=False
        )
        variants[f"envoy-{n}"] = partial(
            bench.through_envoy,
            f"W envoy {n} workers",
            envoy,
            c.w_envoy,
            server=server,
            denies=True,
            latency=False,
        )
    result = {"workers": list(c.w_workers), "runs": run.alternate(variants)}
    for server in run.workers:
        server.stop()
    return result


def _phase_e(run: _Run) -> dict[str, Any]:
    c, bench = run.config, run.bench
    server = run.server(f"authz-{c.a_rules}", c.a_rules)
    port = authzen.authzen_port(server)
    targets = authzen.authzen_targets(port, authzen.write_bodies(c.workdir))
    authzen.cross_check(bench, server, port)
    authzen.warm(bench, targets, c.warmup)
    variants: dict[str, Callable[[], dict[str, float]]] = {
        "grpc": partial(bench.direct, "E grpc", server, c.direct),
        "authzen": partial(authzen.measure, bench, "E authzen", server, targets, c.direct),
    }
    return {"runs": run.alternate(variants)}


def _phase_t(run: _Run) -> dict[str, Any]:
    c = run.config
    costs = measure_checks(c.a_rules, c.t_checks, c.t_rounds, c.workdir / "tracing")
    for cost in costs:
        if cost.exported is not None:  # a Check span and its identity and rules children
            spans = 0 if "unsampled" in cost.mode else 3 * cost.checks
            run.bench._check(f"T {cost.mode}: spans at the receiver", spans, cost.exported)
    return {"modes": [asdict(cost) for cost in costs]}


def _phase_i(run: _Run) -> dict[str, Any]:
    c = run.config
    return asdict(count_instructions(c.a_rules, c.i_checks))


_PHASES = {
    "A": _phase_a,
    "B": _phase_b,
    "C": _phase_c,
    "D": _phase_d,
    "W": _phase_w,
    "E": _phase_e,
    "T": _phase_t,
    "I": _phase_i,
}


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the selected phases; return the result document (also written to `config.out`)."""
    if config.conditions is None:
        config = replace(config, conditions=when_supported())
    shutil.rmtree(config.workdir, ignore_errors=True)
    config.workdir.mkdir(parents=True)
    started = time.time()
    bench = Bench(config.workdir, mint_bench_certs(config.workdir / "certs"))
    run = _Run(config, bench)
    document: dict[str, Any] = {"machine": machine_info(), "config": _config_json(config)}
    try:
        document["phases"] = {p: _PHASES[p](run) for p in config.phases}
    finally:
        run.stop()
        for envoy in run.envoys:
            envoy.stop()
        for server in run.workers:
            server.stop()
    document["seconds"] = round(time.time() - started, 1)
    document["machine"]["loadavg_after"] = machine_info()["loadavg"]
    document["summary"] = targets(document["phases"], config)
    document["count_checks"] = {
        "total": len(bench.checks),
        "failed": [asdict(c) for c in bench.checks if not c.ok],
        "all": [asdict(c) for c in bench.checks],
    }
    document["ok"] = bench.ok
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return document


def _config_json(config: BenchConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, help="repetitions per variant (default 3)")
    parser.add_argument("--phases", default=None, help="subset of ABCDWETI (default all)")
    parser.add_argument("--quick", action="store_true", help="tiny counts: proves the harness")
    parser.add_argument(
        "--out", type=Path, help="result JSON; the table goes beside it as .md (bench-results/)"
    )
    parser.add_argument("--workdir", type=Path, help="scratch, logs (bench-results/work)")
    parser.add_argument("--uvloop", action="store_true", help="run both servers on uvloop")
    parser.add_argument("--no-audit", action="store_true", help="authz-server without audit log")
    parser.add_argument(
        "--conditions",
        choices=["auto", "on", "off"],
        default="auto",
        help="`when` conditions in the policies (auto: if the loader accepts them)",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else BenchConfig()
    changes: dict[str, Any] = {"uvloop": args.uvloop, "audit": not args.no_audit}
    changes["conditions"] = {"auto": None, "on": True, "off": False}[args.conditions]
    for name in ("reps", "phases", "out", "workdir"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    config = replace(config, **changes)
    document = run_bench(config)
    table = render_table(document)
    print(table)
    config.out.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    for failed in document["count_checks"]["failed"]:
        print(
            f"COUNT MISMATCH: {failed['what']}: "
            f"expected {failed['expected']}, saw {failed['seen']}",
            file=sys.stderr,
        )
    print(f"results: {config.out} and {config.out.with_suffix('.md')}")
    return 0 if document["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
