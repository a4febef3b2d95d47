"""`authz-server serve --workers N` as a benchmark process (phase W).

Phase W asks how throughput scales with worker processes on the memory store (no Redis:
the benchmark policy has no approvals or rate limits). The server runs exactly as an
operator runs it, through the CLI: one process for N = 1, a supervisor and N workers
sharing the Check port through SO_REUSEPORT otherwise. What the other phases read from
`bench.serve`'s stats file comes from the workers themselves here:

- decisions: the sum of `authz_decisions_total` over every worker's `/metrics` (each
  worker prints its metrics port once it serves);
- CPU: utime + stime of every worker (`/proc/PID/stat`), found as the supervisor's
  children; the supervisor itself only sleeps and is not counted.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from authz_server.tools import stack
from bench.policies import TRUST_DOMAIN
from bench.procs import StartError, cpu_seconds, rss_kb

__all__ = ["WorkerServer", "start_worker_server"]

_ROOT = Path(__file__).resolve().parent.parent
_METRICS_PORT = re.compile(r"authz-server: metrics and probes on port (\d+)")
_DECISIONS = re.compile(r"^authz_decisions_total\{[^}]*\} (\S+)$", re.MULTILINE)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass
class WorkerServer:
    """One `serve [--workers N]` process tree; duck-types `procs.BenchProcess`."""

    name: str
    workers: int
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    audit_log: Path | None = None
    metrics_ports: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return [self.pid] if self.workers == 1 else _children(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float) -> None:
        """Every worker printed its metrics port and the shared port answers SERVING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartError(f"{self.name} exited early:\n{self.log_tail()}")
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            ports = [int(p) for p in _METRICS_PORT.findall(text)]
            if len(ports) == self.workers and len(self.worker_pids()) == self.workers:
                self.metrics_ports = ports
                try:
                    if stack._grpc_serving(f"{stack.LOOPBACK}:{self.port}"):
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise StartError(f"{self.name}: not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def decisions(self) -> int:
        total = 0.0
        for port in self.metrics_ports:
            url = f"http://{stack.LOOPBACK}:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                text = reply.read().decode("utf-8")
            total += sum(float(v) for v in _DECISIONS.findall(text))
        return int(total)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.worker_pids())

    def rss_kb(self) -> int:
        return sum(rss_kb(pid) for pid in self.worker_pids())

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def start_worker_server(
    name: str,
    workers: int,
    workdir: Path,
    *,
    policy: Path,
    bundle: Path,
    audit_log: Path | None,
    timeout: float = 120.0,
) -> WorkerServer:
    """Start `python -m authz_server serve` with `workers` processes on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = stack.free_port()
    argv = [sys.executable, "-m", "authz_server", "serve", "--policy", str(policy)]
    argv += ["--listen", f"{stack.LOOPBACK}:{port}", "--metrics-listen", f"{stack.LOOPBACK}:0"]
    argv += ["--trust-bundle", f"{TRUST_DOMAIN}={bundle}", "--admin-listen", "off"]
    argv += ["--reload-interval", "0", "--log-level", "WARNING"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    if audit_log is not None:
        argv += ["--audit-log", str(audit_log)]
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 — argv is built here, never from input
            argv,
            cwd=_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = WorkerServer(name, workers, process, log_path, port, audit_log)
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server
