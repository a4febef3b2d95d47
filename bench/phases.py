"""One measurement, and the proof that it measured what it says.

`Bench.direct()` loads a gRPC server straight from h2load; `Bench.through_envoy()` sends
HTTP through an Envoy variant. Each is one unpaced run (throughput, CPU-µs per request
from /proc) and one paced run (p50/p99 at a fixed rate). Around every run the counters
of each part are read and compared with what h2load says it sent:

- the server's own decision counter moved by exactly the requests h2load completed;
- every request got an HTTP status, and the status each kind of request must get
  (through Envoy: 200 when the policy allows, 403 when it denies; direct gRPC: 200);
- Envoy's edge and front listeners, its ext_authz or RBAC filters saw the same number.

A mismatch is recorded (`Bench.checks`) and fails the run; it never silently shifts a
number. Before any load, each server answers every request kind once to a real gRPC
client, so the decisions themselves (not just HTTP statuses) are known to be right.

The server's own Check latency (handler entry to response built: what
`authz_check_duration_seconds` observes) comes from the per-request record the server
writes anyway: each audit line's `latency_us`. The lines appended during a paced run
are exactly that run's Checks (their count is checked too), so p50/p99/p99.9 are exact,
not interpolated from histogram buckets.
"""

from __future__ import annotations

import json
import math
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from envoy.service.auth.v3 import external_auth_pb2

from bench.envoy import BenchEnvoy, counter_delta
from bench.loadgen import LoadResult, LoadSpec, Target, grpc_target, http_target, run_load
from bench.procs import BenchProcess, cpu_seconds
from bench.workload import MIX, BenchCerts, Call, check_request, framed

__all__ = ["Bench", "CountCheck", "Server", "percentile"]

_CHECK = "/envoy.service.auth.v3.Authorization/Check"


class Server(Protocol):
    """What a measurement needs of a server process (`BenchProcess`, `WorkerServer`)."""

    name: str
    port: int
    audit_log: Path | None

    def decisions(self) -> int: ...

    def cpu_seconds(self) -> float: ...


def percentile(values: list[int], q: float) -> float:
    """The nearest-rank `q`th percentile of `values` (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(len(ordered) * q / 100)
    return float(ordered[min(len(ordered), max(rank, 1)) - 1])


def _size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


def _latencies_since(path: Path, offset: int) -> list[int]:
    """`latency_us` of every audit record written after byte `offset` (chain markers
    carry none)."""
    with path.open("rb") as audit:
        audit.seek(offset)
        lines = audit.read().splitlines()
    found = []
    for line in lines:
        record = json.loads(line)
        if "latency_us" in record:
            found.append(int(record["latency_us"]))
    return found


@dataclass(frozen=True, slots=True)
class CountCheck:
    """One comparison of counts; `ok` is False when the parts disagree."""

    what: str
    expected: int
    seen: int

    @property
    def ok(self) -> bool:
        return self.expected == self.seen


@dataclass
class Sizes:
    """Requests per run and rates; `run.py` fills these from its flags."""

    unpaced: int
    paced: int
    rate: float
    streams: int = 4
    clients: int = 1
    timeout: float = 300.0


@dataclass
class Bench:
    workdir: Path
    certs: BenchCerts
    checks: list[CountCheck] = field(default_factory=list)
    _bodies: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.workdir / "bodies").mkdir(parents=True, exist_ok=True)
        for call in MIX:
            path = self.workdir / "bodies" / f"{call.name}.grpc"
            path.write_bytes(framed(check_request(call, self.certs).SerializeToString()))
            self._bodies[call.name] = path
        self._json_body = self.workdir / "bodies" / "post.json"
        self._json_body.write_text('{"amount": 10, "currency": "EUR"}', encoding="ascii")

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def _check(self, what: str, expected: int, seen: int) -> None:
        self.checks.append(CountCheck(what, expected, seen))

    # --- targets -------------------------------------------------------------------

    def grpc_targets(self, port: int) -> list[Target]:
        return [grpc_target(c.name, port, self._bodies[c.name]) for c in MIX]

    def http_targets(self, port: int) -> list[Target]:
        return [
            http_target(
                c.name,
                port,
                host=c.host,
                path=c.path,
                headers=[("x-bench-as", c.identity), *c.headers],
                body=self._json_body if c.method == "POST" else None,
            )
            for c in MIX
        ]

    # --- correctness before load ---------------------------------------------------

    def cross_check(self, server: Server, *, noop: bool) -> None:
        """Every request kind once through a real gRPC client: the decision must be right."""
        before = server.decisions()
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_CHECK)
            for call in MIX:
                raw = check(check_request(call, self.certs).SerializeToString(), timeout=10)
                got = _decision(external_auth_pb2.CheckResponse.FromString(raw))
                expected = _expected(call, noop)
                what = f"{server.name}: {call.name} decision ({expected}; got {got})"
                self._check(what, 1, int(got == expected))
        self._check(
            f"{server.name}: decisions for the gRPC cross-check",
            len(MIX),
            server.decisions() - before,
        )

    def warm(self, targets: list[Target], requests: int) -> None:
        if requests > 0:
            run_load(targets, LoadSpec(requests=requests, streams=4), self.workdir / "warm")

    # --- measurements --------------------------------------------------------------

    def direct(
        self, label: str, server: Server, sizes: Sizes, *, latency: bool = True
    ) -> dict[str, float]:
        """h2load → server: throughput and CPU unpaced, latency at `sizes.rate`."""
        targets = self.grpc_targets(server.port)
        result: dict[str, float] = {}
        for paced in (False, True) if latency else (False,):
            spec = _spec(sizes, paced)
            decisions, cpu = server.decisions(), server.cpu_seconds()
            loadgen = _children_cpu()
            load = run_load(targets, spec, self.workdir / "load")
            cpu = server.cpu_seconds() - cpu
            loadgen = _children_cpu() - loadgen
            tag = f"{label} ({'paced' if paced else 'unpaced'})"
            self._check_load(tag, load, spec, len(targets), expect_deny=set())
            self._check(f"{tag}: server decisions", load.done, server.decisions() - decisions)
            _record(result, load, paced, {"server_cpu_us": cpu, "loadgen_cpu_us": loadgen})
        return result

    def through_envoy(
        self,
        label: str,
        envoy: BenchEnvoy,
        sizes: Sizes,
        *,
        server: Server | None = None,
        denies: bool,
        latency: bool = True,
    ) -> dict[str, float]:
        """h2load → Envoy edge → mTLS → Envoy front (the variant) [→ server]."""
        targets = self.http_targets(envoy.edge_port)
        expect_deny = {c.name for c in MIX if not c.allowed} if denies else set()
        result: dict[str, float] = {}
        for paced in (False, True) if latency else (False,):
            spec = _spec(sizes, paced)
            counters = envoy.counters()
            decisions = server.decisions() if server else 0
            audit = server.audit_log if server is not None and paced else None
            audit_offset = _size(audit)
            cpu_server = server.cpu_seconds() if server else 0.0
            cpu_envoy = cpu_seconds(envoy.pid)
            load = run_load(targets, spec, self.workdir / "load")
            cpus = {"envoy_cpu_us": cpu_seconds(envoy.pid) - cpu_envoy}
            if server:
                cpus["server_cpu_us"] = server.cpu_seconds() - cpu_server
            tag = f"{label} ({'paced' if paced else 'unpaced'})"
            self._check_load(tag, load, spec, len(targets), expect_deny=expect_deny)
            self._check_envoy(tag, load, counter_delta(counters, envoy.counters()), expect_deny)
            if server:
                self._check(f"{tag}: server decisions", load.done, server.decisions() - decisions)
            if audit is not None:
                self._server_latency(tag, result, _latencies_since(audit, audit_offset), load)
            _record(result, load, paced, cpus)
        return result

    def _server_latency(
        self, tag: str, result: dict[str, float], latencies: list[int], load: LoadResult
    ) -> None:
        """p50/p99/p99.9 of the server's own Check latency over one run's Checks."""
        self._check(f"{tag}: audit records with latency", load.done, len(latencies))
        result.update(
            server_p50_us=percentile(latencies, 50),
            server_p99_us=percentile(latencies, 99),
            server_p999_us=percentile(latencies, 99.9),
        )

    def top_up(self, server: BenchProcess, total: int, sizes: Sizes) -> int:
        """Send unpaced Checks until `server` has made `total` decisions; return the count."""
        targets = self.grpc_targets(server.port)
        for _ in range(1000):  # bounded: each pass sends at least one request per kind
            made = server.decisions()
            if made >= total:
                return made
            spec = LoadSpec(requests=min(total - made, 50_000), streams=sizes.streams)
            load = run_load(targets, spec, self.workdir / "load")
            self._check(
                f"{server.name} top-up: server decisions", load.done, server.decisions() - made
            )
        return server.decisions()

    # --- count checks --------------------------------------------------------------

    def _check_load(
        self, tag: str, load: LoadResult, spec: LoadSpec, n: int, *, expect_deny: set[str]
    ) -> None:
        share = max(1, spec.requests // n)
        self._check(f"{tag}: h2load requests done", max(share, spec.clients) * n, load.done)
        self._check(f"{tag}: requests answered", load.done, load.ok_streams)
        for name, counts in load.per_target.items():
            status = "4xx" if name in expect_deny else "2xx"
            self._check(f"{tag}: {name} answered {status}", counts.done, counts.status[status])

    def _check_envoy(
        self, tag: str, load: LoadResult, delta: dict[str, int], expect_deny: set[str]
    ) -> None:
        done = load.done
        self._check(
            f"{tag}: envoy edge requests", done, delta.get("http.bench_edge.downstream_rq_total", 0)
        )
        self._check(
            f"{tag}: envoy front requests",
            done,
            delta.get("http.bench_front.downstream_rq_total", 0),
        )
        denied = sum(c.done for name, c in load.per_target.items() if name in expect_deny)
        if any(k.startswith("http.bench_front.ext_authz.") for k in delta):
            ext = "http.bench_front.ext_authz."
            self._check(f"{tag}: ext_authz ok", done - denied, delta.get(ext + "ok", 0))
            self._check(f"{tag}: ext_authz denied", denied, delta.get(ext + "denied", 0))
            self._check(f"{tag}: ext_authz errors", 0, delta.get(ext + "error", 0))
        if any(".rbac." in k for k in delta):
            rbac = "http.bench_front.rbac."
            judged = delta.get(rbac + "deny.allowed", 0) + delta.get(rbac + "deny.denied", 0)
            self._check(f"{tag}: rbac judged", done, judged)
            total_denied = delta.get(rbac + "deny.denied", 0) + delta.get(rbac + "allow.denied", 0)
            self._check(f"{tag}: rbac denied", denied, total_denied)


def _children_cpu() -> float:
    """CPU seconds of the finished children (the h2load processes `run_load` waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _spec(sizes: Sizes, paced: bool) -> LoadSpec:
    if paced:
        return LoadSpec(requests=sizes.paced, rate=sizes.rate, timeout=sizes.timeout)
    return LoadSpec(
        requests=sizes.unpaced, streams=sizes.streams, clients=sizes.clients, timeout=sizes.timeout
    )


def _record(
    result: dict[str, float], load: LoadResult, paced: bool, cpus: dict[str, float]
) -> None:
    if paced:
        result.update(p50_ms=load.p50_ms, p99_ms=load.p99_ms, paced_rps=load.rps)
        return
    result.update(rps=load.rps, unpaced_p50_ms=load.p50_ms, unpaced_p99_ms=load.p99_ms)
    for name, seconds in cpus.items():
        result[name] = seconds * 1e6 / load.done if load.done else float("nan")


def _expected(call: Call, noop: bool) -> str:
    return "allow" if noop else ("allow" if call.allowed else f"deny:{call.reason}")


def _decision(response: Any) -> str:
    if response.status.code == 0:
        return "allow"
    try:
        reason = json.loads(response.denied_response.body).get("reason", "?")
    except ValueError:
        reason = "?"
    return f"deny:{reason}"
