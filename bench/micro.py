"""In-process cost of each step of one Check, in microseconds: where the time goes.

    python -m bench.micro [--rules 200] [--n 20000] [--profile]

It assembles what `server.start_server` assembles (pipeline with the observed memory
store, metrics, a file audit log) without the gRPC server, then times every step of
`CheckService.check_bytes` over the benchmark request mix (`workload.MIX`), and the
whole of it. The load benchmark (`bench.run`) says how much each µs is worth: on this
stack every 10 µs of Python per Check costs 10-15% of throughput (docs/performance.md#stack-costs).
Numbers are the least of five rounds of thread CPU time; compare runs side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2

from authz_server.audit.log import AuditLog, audit_record
from authz_server.check.pipeline import Pipeline
from authz_server.check.response import render_check_response, render_response_bytes
from authz_server.check.service import CheckService
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.core.decision import Decision, Reason
from authz_server.core.request import view_from_check_request
from authz_server.identity.bundles import load_pem_bundles
from authz_server.identity.x509 import CertificateVerifier
from authz_server.policy.conditions.base import RequestContext
from authz_server.policy.evaluate import evaluate_rules
from authz_server.policy.load import load_policy
from authz_server.state.memory import MemoryStore
from authz_server.state.observed import ObservedStore
from authz_server.telemetry.metrics import Metrics
from bench.policies import TRUST_DOMAIN, when_supported, write_policy
from bench.workload import MIX, BenchCerts, check_request, mint_bench_certs

__all__ = ["Assembly", "assemble", "main", "measure"]


def _per_call_us(step: Callable[[int], object], n: int, rounds: int = 5) -> float:
    """Least over `rounds` of the mean CPU-µs per call of `step(i)` for i in range(n).

    Thread CPU time, not wall time: another process taking the core does not count, and
    the least of a few rounds is the figure least disturbed by a shared machine.
    """
    results = []
    for _ in range(rounds):
        started = time.thread_time_ns()
        for i in range(n):
            step(i)
        results.append((time.thread_time_ns() - started) / n / 1000)
    return min(results)


def _drive(coroutine: Any) -> Any:
    """Run a coroutine that never really suspends (memory store) without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the step suspended: it needs a real event loop")


@dataclass
class Assembly:
    """The Check service as `server.start_server` assembles it, without the gRPC server,
    and the benchmark mix as serialized CheckRequests."""

    service: CheckService
    pipeline: Pipeline
    snapshot: Snapshot
    store: ObservedStore
    metrics: Metrics
    audit: AuditLog
    certs: BenchCerts
    raw: list[bytes]

    def check(self, i: int) -> bytes:
        """The whole Check of request `i` of the mix (round robin)."""
        result: bytes = _drive(self.service.check_bytes(self.raw[i % len(self.raw)]))
        return result


def assemble(rules: int, workdir: Path) -> Assembly:
    """Pipeline with the observed memory store, metrics, a file audit log; `rules` rules."""
    certs = mint_bench_certs(workdir / "certs")
    policy_path = workdir / "policy.yaml"
    write_policy(policy_path, rules, conditions=when_supported())
    policy = load_policy(str(policy_path))
    snapshot = Snapshot(policy, load_pem_bundles({TRUST_DOMAIN: certs.ca}))
    metrics = Metrics()
    store = ObservedStore(MemoryStore(), metrics.store_error)
    pipeline = Pipeline(verifier=CertificateVerifier(), store=store)
    audit = AuditLog(str(workdir / "audit.jsonl"))
    service = CheckService(pipeline, SnapshotHolder(snapshot), audit, metrics)
    raw = [check_request(call, certs).SerializeToString() for call in MIX]
    return Assembly(service, pipeline, snapshot, store, metrics, audit, certs, raw)


def measure(rules: int, n: int, workdir: Path, *, profile: bool = False) -> dict[str, float]:
    """µs per call of each step of a Check over the benchmark mix."""
    assembly = assemble(rules, workdir)
    service, pipeline, snapshot = assembly.service, assembly.pipeline, assembly.snapshot
    store, metrics, audit, raw = assembly.store, assembly.metrics, assembly.audit, assembly.raw
    policy = snapshot.policy
    k = len(raw)
    requests = [external_auth_pb2.CheckRequest.FromString(r) for r in raw]
    views = [view_from_check_request(r) for r in requests]
    decisions = [_drive(pipeline.evaluate(v, snapshot)) for v in views]
    for call, decision in zip(MIX, decisions, strict=True):
        if decision.reason.value != call.reason:
            raise RuntimeError(f"{call.name}: {decision.reason} != {call.reason}")
    spiffe = [
        pipeline._identity.resolve(v, policy.identity, snapshot.bundles, _now()) for v in views
    ]
    contexts = [
        RequestContext(
            v.method,
            v.host,
            v.path,
            query=v.query,
            headers=v.headers,
            body=v.body,
            spiffe_id=s.identity.spiffe_id if s.identity else None,
            now=_now(),
            store=store,
        )
        for v, s in zip(views, spiffe, strict=True)
    ]
    now = _now()
    steps: dict[str, Callable[[int], object]] = {
        "parse CheckRequest": lambda i: external_auth_pb2.CheckRequest.FromString(raw[i % k]),
        "request view": lambda i: view_from_check_request(requests[i % k]),
        "identity (cert cache hit)": lambda i: pipeline._identity.resolve(
            views[i % k], policy.identity, snapshot.bundles, now
        ),
        "revocation lookup": lambda i: _drive(store.revoked(spiffe[i % k].identity.spiffe_id)),  # type: ignore[union-attr]
        "index lookup": lambda i: policy.index.candidates(
            contexts[i % k].method, contexts[i % k].host, contexts[i % k].path
        ),
        "rules (index + conditions)": lambda i: _drive(evaluate_rules(policy, contexts[i % k])),
        "Decision()": lambda i: Decision(True, Reason.ALLOWED_BY_RULE, rule="r", principal="p"),
        "pipeline.evaluate": lambda i: _drive(pipeline.evaluate(views[i % k], snapshot)),
        "render + serialize": lambda i: render_check_response(
            decisions[i % k], views[i % k].headers.keys()
        ).SerializeToString(),
        "render (template)": lambda i: render_response_bytes(
            decisions[i % k], views[i % k].headers
        ),
        "audit_record()": lambda i: audit_record(
            decisions[i % k], views[i % k], policy_version=policy.version, latency_us=42
        ),
        "audit record + write": lambda i: audit.record(
            audit_record(
                decisions[i % k], views[i % k], policy_version=policy.version, latency_us=42
            )
        ),
        "metrics observe": lambda i: metrics.observe(decisions[i % k], 0.0001),
        "check_bytes (whole)": assembly.check,
    }
    results: dict[str, float] = {}
    for name, step in steps.items():
        step(0)  # warm caches (certificate cache, bound metrics)
        results[name] = _per_call_us(step, n)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(n):
            _drive(service.check_bytes(raw[i % k]))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    audit.close()
    return results


def _now() -> datetime:
    return datetime.now(UTC)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.micro", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--n", type=int, default=20_000, help="calls per round (5 rounds)")
    parser.add_argument("--profile", action="store_true", help="cProfile the whole Check too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-micro-") as tmp:
        results = measure(args.rules, args.n, Path(tmp), profile=args.profile)
    width = max(map(len, results))
    for name, us in results.items():
        print(f"{name:<{width}}  {us:8.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
