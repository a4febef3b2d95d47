"""`serve --workers N`: N processes sharing the Check port through SO_REUSEPORT.

One Python process decides on one core; the kernel spreads new connections over the
workers. Each worker is a complete server (`server.serve`): it loads the policy, watches
the files, opens its own connection to the shared store after it starts, and drains on
SIGTERM. A decision must not depend on which worker Envoy's connection landed on:
- with `--store redis://…`, approvals, rate counters and revocations live in Redis;
- with the memory store (the default), only a policy without approvals or rate limits is
  served (`shared_state.require_shareable`, at start and on every reload). Revocations,
  the one state such a policy reads, are shared through a file in a private directory
  that this supervisor creates and removes (`state.worker_memory`): a revocation made
  through any worker's admin API reaches every worker within `worker_memory.POLL_S`.

What is per worker:
- `/metrics`, `/healthz`, `/readyz`: worker i listens on the metrics port + i (only one
  process can own a port that is scraped: sharing it would hand each scrape to a random
  worker). Point liveness and readiness probes at the base port (worker 0) and scrape all
  N ports. Port 0 gives each worker an ephemeral port.
- the audit log: one hash chain per process, so `--audit-log FILE` becomes
  `FILE.worker<i>`, each verifiable on its own; `-` (stdout) interleaves N chains (each
  record names its chain through its hashes; verify per worker from a file instead).
- the admin API shares its port like the Check port (any worker may serve a call: the
  state behind it is the shared store, or the shared revocation file).

The supervisor (this process) starts the workers, forwards SIGTERM/SIGINT (drain) and
SIGHUP (reload), and restarts a worker that dies, at most `MAX_RESTARTS` times a minute;
past that it stops the others and exits 1, so that the orchestrator sees the failure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from authz_server.core.errors import ConfigError, StoreUnavailable
from authz_server.policy.load import load_policy
from authz_server.runtime.settings import Settings
from authz_server.runtime.shared_state import require_shareable
from authz_server.state.worker_memory import RevocationFile
from authz_server.transport.listen import check_listen

__all__ = ["MAX_RESTARTS", "run_workers", "worker_settings"]

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
_RESTART_WINDOW_S = 60.0
_POLL_S = 0.2


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings worker `index` runs with: its metrics port, its audit file."""
    metrics = settings.metrics_listen
    if metrics is not None:
        host, _, port = metrics.rpartition(":")
        if int(port) != 0:
            metrics = f"{host}:{int(port) + index}"
    audit = settings.audit_log
    if audit is not None and audit != "-":
        audit = f"{audit}.worker{index}"
    return dataclasses.replace(
        settings, workers=1, worker=index, metrics_listen=metrics, audit_log=audit
    )


def _encode(settings: Settings) -> str:
    return json.dumps(dataclasses.asdict(settings))


def _decode(text: str) -> Settings:
    data = json.loads(text)
    data["allowed_callers"] = tuple(data["allowed_callers"])
    return Settings(**data)


def _worker_main(argv: list[str]) -> int:
    """Entry point of one worker process: `python -m authz_server.runtime.workers SETTINGS_JSON`."""
    import asyncio

    from authz_server.runtime.server import serve

    settings = _decode(argv[0])
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker{settings.worker} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(serve(settings))


def run_workers(settings: Settings) -> int:
    """Supervise `settings.workers` workers until SIGTERM/SIGINT; 0 after a clean drain."""
    settings.validate()
    if settings.workers < 2:
        raise ConfigError("run_workers needs --workers 2 or more")
    if settings.metrics_listen is not None:
        base = int(settings.metrics_listen.rpartition(":")[2])
        if base and base + settings.workers - 1 > 65535:
            raise ConfigError("--metrics-listen: port + workers - 1 exceeds 65535")
    # A bad policy fails here, once, before any worker starts; so does one that keeps
    # state the workers could not share, and a port in use.
    require_shareable(load_policy(settings.policy), settings)
    check_listen("--listen", settings.listen, reuse_port=True)
    if settings.admin_enabled and settings.admin_listen is not None:
        check_listen("--admin-listen", settings.admin_listen, reuse_port=True)
    if settings.authzen_listen is not None:  # shared by every worker
        check_listen("--authzen-listen", settings.authzen_listen, reuse_port=True)
    if settings.console_listen is not None:  # worker 0's alone
        check_listen("--console-listen", settings.console_listen)
    if settings.store != "memory":
        return _supervise(settings)
    private: str | None = None
    try:
        private = tempfile.mkdtemp(prefix="authz-workers-")  # mode 0700: this user only
        revocations = RevocationFile.create(Path(private) / "revocations.json")
    except (OSError, StoreUnavailable) as error:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
        raise ConfigError(
            f"--workers {settings.workers} on the memory store shares revocations through a "
            f"file in the temporary directory (TMPDIR, default /tmp), which failed: {error}"
        ) from None
    try:
        shared = dataclasses.replace(settings, revocations_file=str(revocations.path))
        return _supervise(shared)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _supervise(settings: Settings) -> int:
    """Start the workers, forward signals, restart the dead; the exit status."""
    stopping = False

    def start(index: int) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "authz_server.runtime.workers"]
        process = subprocess.Popen([*argv, _encode(worker_settings(settings, index))])  # noqa: S603
        log.info("worker %d started (pid %s)", index, process.pid)
        return process

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    workers: dict[int, subprocess.Popen[bytes]] = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    print(f"authz-server: starting {settings.workers} workers on {settings.listen}", flush=True)
    for index in range(settings.workers):
        workers[index] = start(index)
    restarts: list[float] = []
    status = 0
    while not stopping:
        time.sleep(_POLL_S)
        for index, process in list(workers.items()):
            if process.poll() is None or stopping:
                continue
            log.error("worker %d exited with %s", index, process.returncode)
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < _RESTART_WINDOW_S] + [now]
            if len(restarts) > MAX_RESTARTS:
                log.error("workers keep dying (%d restarts in a minute): stopping", MAX_RESTARTS)
                stopping, status = True, 1
                break
            workers[index] = start(index)
    deadline = time.monotonic() + settings.grace_seconds + 5.0
    for process in workers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for index, process in workers.items():
        try:
            code = process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not drain in time: killing it", index)
            process.kill()
            code = process.wait(5.0)
        if code not in (0, -signal.SIGTERM) and status == 0:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
