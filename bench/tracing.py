"""What tracing costs one Check, in microseconds: off, on, and on with a dead collector.

    python -m bench.tracing [--n 20000] [--rounds 5]

The unit of work is what the Check path does for tracing: open the Check span with a
parent in the gRPC metadata (a `traceparent`, as Envoy sends it) and the request's
headers, two child spans (identity, rules), the decision's attributes, and the ids for
the audit record. Modes:

    off                 no tracer installed (the default of the server)
    on, not sampled     a tracer, but the parent says "not sampled"
    on, live collector  spans exported over OTLP/gRPC to a receiver in this process
    on, dead collector  the collector's port refuses connections: the queue fills and
                        spans are dropped; the Check path must not notice

`caller CPU` is the CPU time of the thread doing the work (what a Check pays);
`process CPU` adds the export thread and the receiver (what the machine pays). Both are
the least of `rounds` rounds, per unit. Compare modes within one run.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from authz_server.core.decision import Decision, Reason
from authz_server.telemetry import spans
from authz_server.telemetry.receiver import OtlpReceiver
from authz_server.telemetry.spans import check_span, current_ids
from authz_server.telemetry.tracing import Tracing, TracingConfig, start_tracing

__all__ = ["Result", "main", "measure"]

SAMPLED = [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
NOT_SAMPLED = [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")]
HEADERS = {":path": "/v1/orders/1", "user-agent": "bench", "x-request-id": "1234"}
DECISION = Decision(
    True,
    Reason.ALLOWED_BY_RULE,
    rule="orders-read",
    principal="spiffe://example.org/ns/shop/sa/frontend",
    identity_source="peer",
)


@dataclass(frozen=True)
class Result:
    mode: str
    caller_us: float
    process_us: float
    exported: int | None


def unit(metadata: list[tuple[str, str]]) -> None:
    """One Check's worth of tracing calls."""
    with check_span(lambda: metadata, HEADERS) as span:
        with span.child("identity"):
            pass
        with span.child("rules"):
            pass
        span.set_decision(DECISION, "policy-v1")
        current_ids()


def _least_per_unit(work: Callable[[], None], n: int, rounds: int) -> tuple[float, float]:
    """(caller thread CPU µs, process CPU µs) per call, least over `rounds`."""
    caller, process = [], []
    for _ in range(rounds):
        thread_started, process_started = time.thread_time_ns(), time.process_time_ns()
        for _ in range(n):
            work()
        caller.append((time.thread_time_ns() - thread_started) / n / 1000)
        process.append((time.process_time_ns() - process_started) / n / 1000)
    return min(caller), min(process)


@contextmanager
def _refused_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _traced(endpoint: str) -> Tracing:
    return start_tracing(TracingConfig(endpoint, schedule_delay_ms=100))


def measure(n: int, rounds: int) -> list[Result]:
    """Every mode, in order."""
    results = []
    spans.install(None)
    caller, process = _least_per_unit(lambda: unit(SAMPLED), n, rounds)
    results.append(Result("off", caller, process, None))

    receiver = OtlpReceiver()
    receiver.start()
    try:
        tracing = _traced(receiver.endpoint)
        caller, process = _least_per_unit(lambda: unit(NOT_SAMPLED), n, rounds)
        results.append(Result("on, not sampled", caller, process, None))
        caller, process = _least_per_unit(lambda: unit(SAMPLED), n, rounds)
        tracing.shutdown(timeout_s=30.0)
        results.append(Result("on, live collector", caller, process, len(receiver.spans)))
    finally:
        receiver.stop()

    with _refused_port() as port:
        tracing = _traced(f"http://127.0.0.1:{port}")
        try:
            caller, process = _least_per_unit(lambda: unit(SAMPLED), n, rounds)
        finally:
            tracing.shutdown(timeout_s=0.5)
        results.append(Result("on, dead collector", caller, process, 0))
    return results


def render(results: list[Result], n: int, rounds: int) -> str:
    lines = [
        f"tracing cost per Check ({n} Checks x {rounds} rounds, least round)",
        f"{'mode':<22}{'caller CPU µs':>15}{'process CPU µs':>16}{'spans exported':>16}",
    ]
    for r in results:
        exported = "-" if r.exported is None else str(r.exported)
        lines.append(f"{r.mode:<22}{r.caller_us:>15.2f}{r.process_us:>16.2f}{exported:>16}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="Checks per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode; least is shown")
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be at least 1")
    print(render(measure(args.n, args.rounds), args.n, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
