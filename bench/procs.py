"""Benchmark server processes, and what /proc says about any process.

CPU time comes from `/proc/PID/stat` (utime + stime of every thread, in clock ticks):
CPU-µs per request is steadier than requests per second on a shared machine. RSS comes
from `/proc/PID/status` (`VmRSS`). Every wait is bounded, and a process that does not
become ready is stopped before the error is raised, never orphaned.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz_server.tools.stack import LOOPBACK
from bench.policies import TRUST_DOMAIN

__all__ = ["BenchProcess", "cpu_seconds", "rss_kb", "start_bench_server"]

_TICKS = os.sysconf("SC_CLK_TCK")
_ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds `pid` has used, all threads included."""
    raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name may contain spaces: fields are counted after its closing ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_kb(pid: int) -> int:
    """Resident set size of `pid` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class StartError(RuntimeError):
    """A benchmark process exited or was not ready in time; the message has its log tail."""


@dataclass
class BenchProcess:
    """One `python -m bench.serve` process and its stats side channel."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stats_path: Path
    port: int = 0
    #: The server's audit log (its per-request `latency_us`), if it writes one.
    audit_log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _read(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.stats_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartError(f"{self.name} exited early:\n{self.log_tail()}")
            if (stats := self._read()) is not None:
                self.port = int(stats["port"])
                return
            time.sleep(0.05)
        raise StartError(f"{self.name}: not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """Fresh counters: signal the process, wait for the next stats file."""
        before = (self._read() or {}).get("seq", 0)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self._read()
            if stats is not None and stats.get("seq", 0) > before:
                return stats
            if self.process.poll() is not None:
                raise StartError(f"{self.name} died:\n{self.log_tail()}")
            time.sleep(0.01)
        raise TimeoutError(f"{self.name}: no stats within {timeout:.0f}s")

    def decisions(self) -> int:
        return int(self.stats()["decisions"])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def start_bench_server(
    kind: str,
    name: str,
    workdir: Path,
    *,
    policy: Path | None = None,
    bundle: Path | None = None,
    audit_log: Path | None = None,
    uvloop: bool = False,
    timeout: float = 120.0,
) -> BenchProcess:
    """Start `python -m bench.serve KIND` on a free loopback port; return once it is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    stats_path = workdir / f"{name}.stats.json"
    stats_path.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bench.serve", kind, "--listen", f"{LOOPBACK}:0"]
    argv += ["--stats", str(stats_path)]
    if policy is not None:
        argv += ["--policy", str(policy)]
    if bundle is not None:
        argv += ["--trust-bundle", f"{TRUST_DOMAIN}={bundle}"]
    if audit_log is not None:
        argv += ["--audit-log", str(audit_log)]
    if kind == "authz":  # phase E loads its AuthZEN listener; idle otherwise
        argv += ["--authzen-listen", f"{LOOPBACK}:0"]
    if uvloop:
        argv.append("--uvloop")
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
    bench_process = BenchProcess(name, process, log_path, stats_path, audit_log=audit_log)
    try:
        bench_process.wait_ready(timeout)
    except BaseException:
        bench_process.stop()
        raise
    return bench_process
