"""Serving: start the parts `wiring.wire` built, in order, run, and stop them in reverse.

    start_server(settings)  wire (policy, bundles, store, pipeline, TLS: errors here stop
                            the start with nothing bound), start tracing
                            (`--otlp-endpoint`), bind the Check listener, start the
                            probe/metrics listener, the store, the approval notifier,
                            the Check server, the admin API (`admin.py`), the approval
                            console and the AuthZEN API (`listeners.py`), the reloader,
                            the Workload API source, the audit flusher and the sampling of
                            the store's gauges. A failure on the way stops what was started,
                            in reverse.
    serve(settings)         run until SIGTERM/SIGINT, reload on SIGHUP, then drain

The store is the Check path's (revocations, rate limits, approvals), the admin API's and
the console's; its failures are counted (`authz_store_errors_total`) and `/readyz` pings
it. A store that cannot be reached does not stop the server: only the rules that need it
fail closed. With `--workers N` (`workers.py`) each worker process runs all of this on its
own, the Check, admin and AuthZEN ports shared through SO_REUSEPORT; the console runs in
worker 0 only.

Health is SERVING only while `LiveState` is ready (policy loaded; bundles present where
needed, see `reload.readiness_problem`) and the server is not draining. On SIGTERM
health turns NOT_SERVING at once, in-flight Checks get `--grace` seconds to finish, their
spans are exported (at most 2 s), then the AuthZEN, admin and console listeners stop, the
notifier delivers what it has queued (briefly), the audit log is flushed, the store closed,
and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from authz_server.admin.server import AdminServer
from authz_server.audit.log import AuditLog
from authz_server.authzen import AuthzenServer
from authz_server.check.pipeline import Pipeline
from authz_server.check.service import SERVICE_NAME, CheckService
from authz_server.console.server import ConsoleServer
from authz_server.core.errors import StoreUnavailable
from authz_server.identity.workload_api import WorkloadApiSource, X509Update
from authz_server.notify.notifier import Notifier
from authz_server.policy.model import Policy
from authz_server.runtime.admin import start_admin_beside
from authz_server.runtime.listeners import (
    listener_watches,
    start_authzen_beside,
    start_console_beside,
)
from authz_server.runtime.probes import ProbeServer, ReadinessCheck
from authz_server.runtime.reload import LiveState, Reloader, readiness_problem
from authz_server.runtime.settings import Settings
from authz_server.runtime.wiring import Wiring, wire
from authz_server.state.store import Store
from authz_server.telemetry.metrics import Metrics
from authz_server.telemetry.store_gauges import StoreGauges
from authz_server.telemetry.tracing import Tracing, start_tracing
from authz_server.transport.listen import add_grpc_port
from authz_server.transport.tls import TlsCredentials, server_certificate

__all__ = ["RunningServer", "readiness_problem", "serve", "start_server"]

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    service: CheckService
    health: health.aio.HealthServicer
    audit: AuditLog
    metrics: Metrics = field(default_factory=Metrics)
    state: LiveState | None = None
    reloader: Reloader | None = None
    probes: ProbeServer | None = None
    workload_api: WorkloadApiSource | None = None
    tls: TlsCredentials | None = None
    store: Store | None = None
    admin: AdminServer | None = None
    console: ConsoleServer | None = None
    authzen: AuthzenServer | None = None
    notifier: Notifier | None = None
    #: Span export (`--otlp-endpoint`); None while tracing is off.
    tracing: Tracing | None = None
    draining: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def metrics_port(self) -> int | None:
        return self.probes.port if self.probes else None

    @property
    def admin_port(self) -> int | None:
        return self.admin.port if self.admin else None

    @property
    def console_port(self) -> int | None:
        return self.console.port if self.console else None

    @property
    def authzen_port(self) -> int | None:
        return self.authzen.port if self.authzen else None

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """Another condition for /readyz (e.g. the store is reachable)."""
        if self.probes is not None:
            self.probes.add_check(name, check)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving and not self.draining
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def refresh_health(self) -> None:
        await self.set_serving(self.state is not None and self.state.ready)

    async def stop(self, grace: float) -> None:
        """Drain: report NOT_SERVING, let in-flight Checks finish, stop the listeners
        beside them, deliver queued notifications, flush the audit log, close the store."""
        self.draining = True
        await self.set_serving(False)
        await self.server.stop(grace)
        if self.tracing is not None:  # the spans of the last Checks, then no more tracing
            await asyncio.to_thread(self.tracing.shutdown, min(grace, _TRACE_FLUSH_S))
        if self.authzen is not None:
            await self.authzen.stop()
        if self.admin is not None:
            await self.admin.stop(min(grace, 1.0))
        if self.console is not None:
            await self.console.stop()
        if self.notifier is not None:  # nothing emits any more; the store is still open
            await self.notifier.close()
        if self.workload_api is not None:
            self.workload_api.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.audit.close()
        if self.probes is not None:
            await self.probes.stop()
        if self.store is not None:
            await self.store.close()
        log.info("stopped after %d decisions", self.service.decisions)


#: The longest a drain waits for queued spans to be exported.
_TRACE_FLUSH_S = 2.0


async def _flush_periodically(audit: AuditLog) -> None:
    while True:
        await asyncio.sleep(max(audit.flush_interval, 0.05))
        audit.flush()


async def start_server(
    settings: Settings,
    *,
    policy: Policy | None = None,
    pipeline: Pipeline | None = None,
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    store: Store | None = None,
) -> RunningServer:
    """Wire, bind and start; raises PolicyError / ConfigError on bad input, and stops
    whatever had started when a later part fails (a port in use, say).

    `store` overrides `settings.store` (tests); it replaces the store of `pipeline`.
    """
    wired = wire(settings, policy=policy, pipeline=pipeline, store=store)
    async with contextlib.AsyncExitStack() as undo:
        undo.callback(wired.audit.close)
        undo.push_async_callback(wired.store.close)
        tracing = None
        config = settings.tracing()
        if config is not None:  # each process traces on its own (workers too)
            tracing = start_tracing(config)
            undo.callback(tracing.shutdown, 0.5)
            log.info("tracing Checks: spans to %s (%s)", config.endpoint, config.source)
        running = await _start_parts(wired, readiness_checks or {}, undo)
        running.tracing = tracing
        undo.pop_all()  # started: from here on `RunningServer.stop` undoes it
    await running.refresh_health()
    state = wired.state
    if state.problem:
        log.error("not serving: %s", state.problem)

    watches = [*wired.watches, *listener_watches(settings, running.admin, running.console)]
    running.reloader = Reloader(state, watches, interval=settings.reload_interval)
    running.reloader.mark_loaded(dict(wired.seen))
    running._tasks.append(asyncio.create_task(running.reloader.run()))
    if settings.workload_api is not None:
        running.workload_api = WorkloadApiSource(
            settings.workload_api,
            _on_workload_update(running, settings),
            on_restart=wired.metrics.workload_api_restarts.inc,
            on_jwt_update=state.set_workload_jwt_bundles,
        )
        running._tasks.append(asyncio.create_task(running.workload_api.run()))
    if settings.audit_log:
        running._tasks.append(asyncio.create_task(_flush_periodically(wired.audit)))
    # authz_approvals and authz_revocations, read from the store every 30 s.
    running._tasks.append(asyncio.create_task(StoreGauges(wired.store, wired.metrics).run()))
    log.info(
        "Check listening on port %d (%s); policy %s (%d rules)",
        running.port,
        "mTLS" if wired.tls else "plaintext",
        wired.policy.version[:12],
        len(wired.policy.rules),
    )
    return running


async def _start_parts(
    wired: Wiring,
    readiness_checks: Mapping[str, ReadinessCheck],
    undo: contextlib.AsyncExitStack,
) -> RunningServer:
    """Bind and start each listener in order, registering in `undo` how to stop it."""
    settings, state, observed = wired.settings, wired.state, wired.store
    server_credentials = wired.tls.server_credentials() if wired.tls is not None else None
    port = add_grpc_port(
        wired.server,
        "--listen",
        settings.listen,
        server_credentials,
        reuse_port=settings.worker is not None,
    )
    running = RunningServer(
        wired.server,
        port,
        wired.service,
        wired.health,
        wired.audit,
        wired.metrics,
        state,
        tls=wired.tls,
        store=observed,
    )
    state.on_change = running.refresh_health
    if settings.metrics_listen is not None:
        probes = running.probes = ProbeServer(
            wired.metrics.registry, detail=lambda: _detail(running)
        )
        probes.add_check("policy_and_bundles", lambda: state.problem)
        probes.add_check("draining", lambda: "draining" if running.draining else None)
        probes.add_check("store", lambda: _store_problem(observed))
        probes.add_check("audit", wired.audit.problem)  # sink down too long: not ready
        for name, check in readiness_checks.items():
            probes.add_check(name, check)
        await probes.start(settings.metrics_listen)
        undo.push_async_callback(probes.stop)

    await observed.start()  # revocations loaded before the first Check; closed by stop()
    running.notifier = wired.notifier
    await wired.notifier.start()  # attaches itself as the store's event sink
    undo.push_async_callback(wired.notifier.close)
    await wired.server.start()
    undo.push_async_callback(wired.server.stop, 0)
    running.admin = await start_admin_beside(settings, state, observed)
    if running.admin is not None:
        undo.push_async_callback(running.admin.stop, 0)
    running.console = await start_console_beside(wired, running.admin)
    if running.console is not None:
        undo.push_async_callback(running.console.stop)
    running.authzen = await start_authzen_beside(wired)
    return running


async def _store_problem(store: Store) -> str | None:
    try:
        await store.ping()
    except StoreUnavailable as error:
        return f"store unreachable: {error}"
    return None


def _on_workload_update(running: RunningServer, settings: Settings) -> Any:
    async def on_update(update: X509Update) -> None:
        running.metrics.workload_api_updates.inc()
        svid = update.svid
        certificate = server_certificate(svid.private_key, svid.chain, svid.spiffe_id)
        if running.tls is not None and settings.tls_workload_api:
            running.tls.update(certificate=certificate)
            running.metrics.tls_expiry.set(certificate.not_after.timestamp())
        admin = running.admin
        if admin is not None and admin.credentials is not None and not settings.admin_tls_cert:
            admin.credentials.update(certificate=certificate)
        assert running.state is not None
        await running.state.set_workload_bundles(update.bundles)

    return on_update


def _detail(running: RunningServer) -> dict[str, Any]:
    detail: dict[str, Any] = running.state.detail() if running.state else {}
    detail["draining"] = running.draining
    if running.state is not None:  # bundle CAs that cannot sign (identity/authorities.py)
        warnings = running.state.bundles.authority_warnings
        detail["trust_bundle_warnings"] = {td: list(lines) for td, lines in warnings.items()}
    source = running.workload_api
    if source is not None:
        detail["workload_api"] = {
            "socket": source.socket,
            "updates": source.updates,
            "restarts": source.restarts,
            "last_error": source.last_error,
        }
        if source.jwt is not None:
            detail["workload_api"]["jwt_bundles"] = {
                "updates": source.jwt.updates,
                "restarts": source.jwt.restarts,
                "last_error": source.jwt.last_error,
            }
    if running.tls is not None:
        detail["tls"] = {
            "serving": running.tls.certificate.spiffe_id,
            "not_after": running.tls.certificate.not_after.isoformat(),
        }
    return detail


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then drain and exit 0; SIGHUP reloads."""
    running = await start_server(settings)
    print(f"authz-server: Check listening on port {running.port}", flush=True)
    if running.metrics_port is not None:
        print(f"authz-server: metrics and probes on port {running.metrics_port}", flush=True)
    if running.admin_port is not None:
        print(f"authz-server: admin API on port {running.admin_port}", flush=True)
    if running.console_port is not None:
        print(f"authz-server: approval console on port {running.console_port}", flush=True)
    if running.authzen_port is not None:
        print(f"authz-server: AuthZEN API on port {running.authzen_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    assert running.reloader is not None
    loop.add_signal_handler(signal.SIGHUP, running.reloader.trigger)
    await stop.wait()
    log.info("draining (grace %.1fs)", settings.grace_seconds)
    await running.stop(settings.grace_seconds)
    return 0
