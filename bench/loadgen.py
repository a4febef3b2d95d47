"""Load from h2load, one process per kind of request, all running at once.

h2load sends one body and one header set per process, so a mix of K request kinds is K
concurrent h2load processes, each with its share of the requests and of the rate.
Latency percentiles come from h2load's per-request `--log-file` (start µs, status,
duration µs), deleted before each run because h2load appends to it; throughput is the
requests done over the span from the first start to the last end in those logs.

h2load only sees HTTP statuses: over gRPC a deny is still HTTP 200 (the decision is in
the CheckResponse), so the driver cross-checks with a real gRPC client and the
server's own decision counter. `--rps` paces each client with a timer; it is the
closest h2load gets to a fixed rate (docs/performance.md#stack-costs: expect micro-bursts).
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["H2LOAD", "LoadResult", "LoadSpec", "Target", "h2load_binary", "run_load"]

H2LOAD = "h2load"
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUSES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def h2load_binary() -> str:
    """h2load's path; raises with the install hint when it is missing."""
    found = shutil.which(H2LOAD)
    if found is None:
        raise RuntimeError("h2load not found: apt-get install -y nghttp2-client")
    return found


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """How much load: `requests` in total, at `rate` req/s in total or as fast as possible."""

    requests: int
    rate: float | None = None
    #: Connections per h2load process.
    clients: int = 1
    #: Concurrent streams per connection (unpaced runs).
    streams: int = 4
    #: Hard limit on the run, seconds.
    timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class Target:
    """One h2load process: the URI, extra argv (headers, body, connect-to)."""

    name: str
    uri: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessCounts:
    """What one h2load process reported."""

    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One run: counts per target and latencies over all targets."""

    per_target: Mapping[str, ProcessCounts]
    seconds: float
    latencies_us: Sequence[int] = field(repr=False)

    @property
    def done(self) -> int:
        return sum(c.done for c in self.per_target.values())

    @property
    def ok_streams(self) -> int:
        """Requests answered with any HTTP status (h2load's `succeeded` counts 2xx/3xx only)."""
        return sum(sum(c.status.values()) for c in self.per_target.values())

    @property
    def rps(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_us:
            return float("nan")
        ordered = sorted(self.latencies_us)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index] / 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies_us) / 1000 if self.latencies_us else float("nan")


def _argv(target: Target, spec: LoadSpec, share: int, log_file: Path, n_targets: int) -> list[str]:
    clients = max(1, spec.clients)
    argv = [h2load_binary(), "-n", str(max(share, clients)), "-c", str(clients), "-t", "1"]
    if spec.rate is not None:
        # Each client is paced on its own timer: split the total rate evenly. Streams
        # stay available so that a slow answer delays the next request, not the rate.
        per_client = spec.rate / n_targets / clients
        argv += ["--rps", f"{max(per_client, 0.1):.3f}"]
    argv += ["-m", str(spec.streams)]
    argv += [f"--log-file={log_file}", *target.args, target.uri]
    return argv


def _parse_output(name: str, text: str) -> ProcessCounts:
    requests = _REQUESTS.search(text)
    statuses = _STATUSES.search(text)
    if requests is None or statuses is None:
        raise RuntimeError(f"h2load for {name}: unexpected output:\n{text[-2000:]}")
    _total, _started, done, succeeded, failed, errored, timeout = map(int, requests.groups())
    status = dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, statuses.groups()), strict=True))
    return ProcessCounts(done, succeeded, failed, errored, timeout, status)


def _read_log(path: Path) -> list[tuple[int, int, int]]:
    rows = []
    for line in path.read_text(encoding="ascii").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return rows


def run_load(targets: Sequence[Target], spec: LoadSpec, workdir: Path) -> LoadResult:
    """Run one h2load per target at once, each with its share; wait at most `spec.timeout`."""
    workdir.mkdir(parents=True, exist_ok=True)
    share = max(1, spec.requests // len(targets))
    processes: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    try:
        for target in targets:
            log_file = workdir / f"h2load-{target.name}.log"
            log_file.unlink(missing_ok=True)  # h2load appends
            argv = _argv(target, spec, share, log_file, len(targets))
            process = subprocess.Popen(  # noqa: S603 — argv is built here
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            processes[target.name] = (process, log_file)
        counts: dict[str, ProcessCounts] = {}
        rows: list[tuple[int, int, int]] = []
        deadline = time.monotonic() + spec.timeout  # one limit for the whole run
        for name, (process, log_file) in processes.items():
            output, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            if process.returncode != 0:
                raise RuntimeError(f"h2load for {name} exited {process.returncode}:\n{output}")
            counts[name] = _parse_output(name, output)
            rows += _read_log(log_file)
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
    answered = [r for r in rows if r[1] > 0]
    if answered:
        seconds = (max(s + d for s, _, d in answered) - min(s for s, _, _ in answered)) / 1e6
    else:
        seconds = 0.0
    return LoadResult(counts, seconds, [d for _, _, d in answered])


def grpc_target(name: str, port: int, body: Path, host: str = "127.0.0.1") -> Target:
    """h2load arguments for unary Checks with a pre-framed CheckRequest body."""
    return Target(
        name,
        f"http://{host}:{port}/envoy.service.auth.v3.Authorization/Check",
        ("-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"),
    )


def http_target(
    name: str,
    port: int,
    *,
    host: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: Path | None = None,
) -> Target:
    """h2load arguments for one HTTP request kind, sent as h2c to loopback `port`.

    The URI carries the virtual host, so `:authority` is what a real client would send;
    `--connect-to` makes h2load connect to loopback instead of resolving it.
    """
    args: list[str] = ["--connect-to", f"127.0.0.1:{port}"]
    for header, value in headers:
        args += ["-H", f"{header}: {value}"]
    if body is not None:
        args += ["-d", str(body)]  # h2load sends POST when it has a body
    return Target(name, f"http://{host}{path}", tuple(args))
