"""What tracing costs a whole Check: `CheckService.check_bytes` over the benchmark mix
with tracing off and on, in CPU-µs per Check (phase T of `make bench`).

    python -m bench.tracing_checks [--rules 200] [--n 3000] [--rounds 3]

The service is assembled as `serve` assembles it (observed memory store with store
spans, metrics, a file audit log) around the benchmark policy, and asked the mix of
`workload.MIX` with real certificates. Tracing on exports over real OTLP/gRPC to a
receiver in this process, with the server's export settings (a queue of 2048 spans,
batches every 100 ms here): spans that do not fit are dropped, as they would be on a
loaded server. Modes:

    off                       no tracer: the default
    on, unsampled parent      the request's traceparent says "not sampled": no span
    on, sampled parent        the request's traceparent says "sampled": as any client can
                              ask when Envoy's tracing is off (its headers are the parent)
    on, no parent             no trace context anywhere: a root span (sampled by default)

`caller` is the CPU time of the thread deciding (what a Check costs the event loop);
`process` adds the export thread and the receiver. Both are the least of `rounds`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz_server.audit.log import AuditLog
from authz_server.check.pipeline import Pipeline
from authz_server.check.service import CheckService
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.identity.bundles import load_pem_bundles
from authz_server.policy.load import load_policy
from authz_server.state.memory import MemoryStore
from authz_server.state.observed import ObservedStore
from authz_server.telemetry import spans
from authz_server.telemetry.metrics import Metrics
from authz_server.telemetry.receiver import OtlpReceiver
from authz_server.telemetry.tracing import TracingConfig, start_tracing
from bench.policies import TRUST_DOMAIN, when_supported, write_policy
from bench.workload import MIX, BenchCerts, check_request, mint_bench_certs

__all__ = ["MODES", "CheckCost", "main", "measure_checks"]

_TRACE = "0af7651916cd43dd8448eb211c80319c"
#: Mode → the request's own traceparent (None: none) and whether a tracer is installed.
MODES: dict[str, tuple[str | None, bool]] = {
    "off": (f"00-{_TRACE}-b7ad6b7169203331-01", False),
    "on, unsampled parent": (f"00-{_TRACE}-b7ad6b7169203331-00", True),
    "on, sampled parent": (f"00-{_TRACE}-b7ad6b7169203331-01", True),
    "on, no parent": (None, True),
}


@dataclass(frozen=True)
class CheckCost:
    mode: str
    caller_us: float
    process_us: float
    #: Checks decided, and spans the receiver got (None: tracing off).
    checks: int
    exported: int | None


def _drive(coroutine: Any) -> Any:
    """Run a coroutine that never really suspends (memory store) without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the Check suspended: it needs a real event loop")


def _least(work: Callable[[int], object], n: int, rounds: int) -> tuple[float, float]:
    """(caller thread CPU µs, process CPU µs) per call of `work(i)`, least over `rounds`."""
    caller, process = [], []
    for _ in range(rounds):
        thread_started, process_started = time.thread_time_ns(), time.process_time_ns()
        for i in range(n):
            work(i)
        caller.append((time.thread_time_ns() - thread_started) / n / 1000)
        process.append((time.process_time_ns() - process_started) / n / 1000)
    return min(caller), min(process)


def _requests(certs: BenchCerts, traceparent: str | None) -> list[bytes]:
    """The serialized mix, each request carrying `traceparent` (None: no trace context)."""
    raw = []
    for call in MIX:
        request = check_request(call, certs)
        if traceparent is not None:
            request.attributes.request.http.headers["traceparent"] = traceparent
        raw.append(request.SerializeToString())
    return raw


def _checking(service: CheckService, raw: list[bytes]) -> Callable[[int], object]:
    return lambda i: _drive(service.check_bytes(raw[i % len(raw)]))


def measure_checks(rules: int, n: int, rounds: int, workdir: Path) -> list[CheckCost]:
    """Every mode of `MODES`, in order."""
    certs = mint_bench_certs(workdir / "certs")
    write_policy(workdir / "policy.yaml", rules, conditions=when_supported())
    policy = load_policy(str(workdir / "policy.yaml"))
    snapshot = Snapshot(policy, load_pem_bundles({TRUST_DOMAIN: certs.ca}))
    metrics = Metrics()
    store = ObservedStore(MemoryStore(), metrics.store_error, span=spans.child)
    audit = AuditLog(str(workdir / "audit.jsonl"))
    service = CheckService(Pipeline(store), SnapshotHolder(snapshot), audit, metrics)
    receiver = OtlpReceiver()
    receiver.start()
    results = []
    try:
        for mode, (traceparent, on) in MODES.items():
            raw = _requests(certs, traceparent)
            tracing = None
            if on:
                tracing = start_tracing(TracingConfig(receiver.endpoint, schedule_delay_ms=100))
            before = len(receiver.spans)
            caller, process = _least(_checking(service, raw), n, rounds)
            if tracing is not None:
                tracing.shutdown(timeout_s=30.0)  # everything queued reaches the receiver
            exported = len(receiver.spans) - before if on else None
            results.append(CheckCost(mode, caller, process, n * rounds, exported))
    finally:
        spans.install(None)
        receiver.stop()
        audit.close()
    return results


def render(results: Sequence[CheckCost]) -> str:
    off = results[0].caller_us
    lines = [
        "tracing cost per Check, whole Check path (least round)",
        f"{'mode':<24}{'caller CPU µs':>15}{'vs off':>9}{'process CPU µs':>16}"
        f"{'spans exported':>16}",
    ]
    for r in results:
        exported = "-" if r.exported is None else f"{r.exported}/{r.checks * 3}"
        lines.append(
            f"{r.mode:<24}{r.caller_us:>15.1f}{r.caller_us - off:>+9.1f}{r.process_us:>16.1f}"
            f"{exported:>16}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tracing_checks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--n", type=int, default=3_000, help="Checks per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode; least is shown")
    args = parser.parse_args(argv)
    if min(args.rules, args.n, args.rounds) < 1:
        parser.error("--rules, --n and --rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        print(render(measure_checks(args.rules, args.n, args.rounds, Path(tmp))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
