"""grpc.aio server assembly: Check, health, reflection, TLS, probes, reload, audit, store,
admin API, drain.

    start_server(settings)  load policy + bundles (errors here stop the start), open the
                            store (`--store`), bind the Check listener (plaintext, or TLS
                            with `CallerGuard`), start the probe/metrics listener, the
                            admin API (`runtime/admin.py`), the reloader, the Workload API
                            source and the audit flusher
    serve(settings)         run until SIGTERM/SIGINT, reload on SIGHUP, then drain

The store is the Check path's (revocations, rate limits, approvals) and the admin API's;
its failures are counted (`authz_store_errors_total`) and `/readyz` pings it. A store that
cannot be reached does not stop the server: only the rules that need it fail closed.
With `--workers N` (`workers.py`) each worker process runs all of this on its own, the
Check and admin ports shared through SO_REUSEPORT.

Health is SERVING only while `LiveState` is ready (policy loaded; bundles present where
needed, see `reload.readiness_problem`) and the server is not draining. On SIGTERM
health turns NOT_SERVING at once, in-flight Checks get `--grace` seconds to finish, the
audit log is flushed, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz_server.admin.server import AdminServer, admin_certificate
from authz_server.audit.log import AuditLog, NullAudit
from authz_server.check.pipeline import Pipeline
from authz_server.check.service import SERVICE_NAME, CheckService, SnapshotHolder
from authz_server.core.errors import ConfigError, StoreUnavailable
from authz_server.identity.bundles import DomainBundle, load_bundles
from authz_server.identity.workload_api import WorkloadApiSource, X509Update
from authz_server.policy.load import load_policy
from authz_server.policy.model import Policy
from authz_server.policy.patterns import compile_principal_pattern
from authz_server.runtime.admin import start_admin_beside
from authz_server.runtime.probes import ProbeServer, ReadinessCheck
from authz_server.runtime.reload import LiveState, Reloader, Watch, fingerprint, readiness_problem
from authz_server.runtime.settings import Settings
from authz_server.runtime.shared_state import require_shareable
from authz_server.state import open_store
from authz_server.state.observed import ObservedStore
from authz_server.state.store import Store
from authz_server.telemetry.metrics import Metrics
from authz_server.transport.listen import add_grpc_port
from authz_server.transport.tls import (
    CallerGuard,
    ServerCertificate,
    TlsCredentials,
    load_certificate_files,
    load_client_ca,
    placeholder_certificate,
)

__all__ = ["RunningServer", "readiness_problem", "serve", "start_server"]

log = logging.getLogger(__name__)

_GRPC_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
_SHA256 = SHA256()


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
    draining: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def metrics_port(self) -> int | None:
        return self.probes.port if self.probes else None

    @property
    def admin_port(self) -> int | None:
        return self.admin.port if self.admin else None

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
        """Drain: report NOT_SERVING, let in-flight Checks finish, flush the audit log."""
        self.draining = True
        await self.set_serving(False)
        await self.server.stop(grace)
        if self.admin is not None:
            await self.admin.stop(min(grace, 1.0))
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


async def _flush_periodically(audit: AuditLog) -> None:
    while True:
        await asyncio.sleep(max(audit.flush_interval, 0.05))
        audit.flush()


def _tls_files(settings: Settings) -> tuple[ServerCertificate, bytes | None]:
    assert settings.tls_cert is not None and settings.tls_key is not None
    certificate = load_certificate_files(settings.tls_cert, settings.tls_key)
    roots = load_client_ca(settings.tls_client_ca) if settings.tls_client_ca else None
    return certificate, roots


def _bundles_digest(bundles: Mapping[str, DomainBundle]) -> str:
    digest = hashlib.sha256()
    for td in sorted(bundles):
        digest.update(td.encode() + b"\0")
        for certificate in bundles[td].x509_authorities:
            digest.update(certificate.fingerprint(_SHA256))
        for kid in sorted(bundles[td].jwt_authorities):
            digest.update(b"jwt\0" + kid.encode() + b"\0")
            key = bundles[td].jwt_authorities[kid]
            digest.update(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    return digest.hexdigest()


async def start_server(
    settings: Settings,
    *,
    policy: Policy | None = None,
    pipeline: Pipeline | None = None,
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    store: Store | None = None,
) -> RunningServer:
    """Load, bind and start; raises PolicyError / ConfigError before binding on bad input.

    `store` overrides `settings.store` (tests); it replaces the store of `pipeline`.
    """
    settings.validate()
    # Fingerprints before the loads: a change during start-up is seen on the first tick.
    bundle_paths = tuple(settings.trust_bundles.values())
    tls_paths = tuple(p for p in (settings.tls_cert, settings.tls_key, settings.tls_client_ca) if p)
    seen = {
        "policy": (fingerprint(settings.policy),),
        "bundles": tuple(fingerprint(p) for p in bundle_paths),
        "tls": tuple(fingerprint(p) for p in tls_paths),
    }
    policy = require_shareable(policy or load_policy(settings.policy), settings)
    file_bundles = load_bundles(settings.trust_bundles)
    for trust_domain, bundle in file_bundles.items():
        for ignored in bundle.ignored:
            log.warning("trust bundle of %s: ignored %s", trust_domain, ignored)
    metrics = Metrics()
    holder = SnapshotHolder()
    state = LiveState(
        holder,
        policy,
        file_bundles,
        workload_api=settings.workload_api is not None,
        metrics=metrics,
    )
    audit: AuditLog = AuditLog(settings.audit_log) if settings.audit_log else NullAudit()
    metrics.watch_audit(lambda: (audit.stats.records, audit.stats.write_errors))
    opened = store or open_store(settings.store, revocations_file=settings.revocations_file)
    observed = ObservedStore(opened, metrics.store_error)
    pipeline = pipeline or Pipeline()
    pipeline.store = observed
    service = CheckService(pipeline, holder, audit, metrics)

    tls: TlsCredentials | None = None
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if settings.tls:
        if settings.tls_cert is not None:
            certificate, roots = _tls_files(settings)
            metrics.tls_expiry.set(certificate.not_after.timestamp())
        else:
            certificate, roots = placeholder_certificate(), None
        tls = TlsCredentials(certificate, roots or state.bundles.roots_pem())
        if roots is None:
            credentials = tls
            state.bundle_listeners.append(lambda b: credentials.update(roots_pem=b.roots_pem()))
        allowed = [compile_principal_pattern(p) for p in settings.allowed_callers]
        interceptors.append(CallerGuard(allowed, lambda: state.bundles, metrics))

    options = _GRPC_OPTIONS
    if settings.worker is not None:  # the workers of `--workers N` share the port
        options = [("grpc.so_reuseport", 1), *_GRPC_OPTIONS[1:]]
    server = grpc.aio.server(options=options, interceptors=interceptors)
    server.add_generic_rpc_handlers((service.handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    server_credentials = tls.server_credentials() if tls is not None else None
    try:
        port = add_grpc_port(
            server,
            "--listen",
            settings.listen,
            server_credentials,
            reuse_port=settings.worker is not None,
        )
    except ConfigError:
        audit.close()
        await observed.close()
        raise

    running = RunningServer(
        server, port, service, health_servicer, audit, metrics, state, tls=tls, store=observed
    )
    state.on_change = running.refresh_health
    if settings.metrics_listen is not None:
        running.probes = ProbeServer(metrics.registry, detail=lambda: _detail(running))
        running.probes.add_check("policy_and_bundles", lambda: state.problem)
        running.probes.add_check("draining", lambda: "draining" if running.draining else None)
        running.probes.add_check("store", lambda: _store_problem(observed))
        running.probes.add_check("audit", audit.problem)  # sink down too long: not ready
        for name, check in (readiness_checks or {}).items():
            running.probes.add_check(name, check)
        await running.probes.start(settings.metrics_listen)

    await observed.start()  # revocations loaded before the first Check; closed by stop()
    await server.start()
    try:
        running.admin = await start_admin_beside(settings, state, observed)
    except BaseException:
        await server.stop(0)
        if running.probes is not None:
            await running.probes.stop()
        await observed.close()
        raise
    await running.refresh_health()
    if state.problem:
        log.error("not serving: %s", state.problem)

    watches = _watches(settings, state, tls) + _admin_watches(settings, running.admin)
    running.reloader = Reloader(state, watches, interval=settings.reload_interval)
    running.reloader.mark_loaded(seen)
    running._tasks.append(asyncio.create_task(running.reloader.run()))
    if settings.workload_api is not None:
        running.workload_api = WorkloadApiSource(
            settings.workload_api,
            _on_workload_update(running, settings),
            metrics,
            on_jwt_update=state.set_workload_jwt_bundles,
        )
        running._tasks.append(asyncio.create_task(running.workload_api.run()))
    if settings.audit_log:
        running._tasks.append(asyncio.create_task(_flush_periodically(audit)))
    log.info(
        "Check listening on port %d (%s); policy %s (%d rules)",
        port,
        "mTLS" if tls else "plaintext",
        policy.version[:12],
        len(policy.rules),
    )
    return running


def _watches(settings: Settings, state: LiveState, tls: TlsCredentials | None) -> list[Watch[Any]]:
    async def apply_policy(policy: Policy) -> bool:
        if policy.version == state.policy.version:
            return False
        await state.set_policy(policy)
        return True

    watches: list[Watch[Any]] = [
        Watch(
            "policy",
            (settings.policy,),
            lambda: require_shareable(load_policy(settings.policy), settings),
            apply_policy,
        )
    ]
    if settings.trust_bundles:
        specs = dict(settings.trust_bundles)

        async def apply_bundles(bundles: Mapping[str, DomainBundle]) -> bool:
            if _bundles_digest(bundles) == _bundles_digest(state.file_bundles):
                return False
            await state.set_file_bundles(bundles)
            return True

        watches.append(
            Watch("bundles", tuple(specs.values()), lambda: load_bundles(specs), apply_bundles)
        )
    if tls is not None and settings.tls_cert is not None:
        credentials = tls

        async def apply_tls(loaded: tuple[ServerCertificate, bytes | None]) -> bool:
            certificate, roots = loaded
            if certificate == credentials.certificate and roots in (None, credentials.roots_pem):
                return False
            credentials.update(certificate, roots)
            state.metrics.tls_expiry.set(certificate.not_after.timestamp())
            return True

        files = (settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        watches.append(
            Watch("tls", tuple(p for p in files if p), lambda: _tls_files(settings), apply_tls)
        )
    return watches


async def _store_problem(store: Store) -> str | None:
    try:
        await store.ping()
    except StoreUnavailable as error:
        return f"store unreachable: {error}"
    return None


def _admin_watches(settings: Settings, admin: AdminServer | None) -> list[Watch[Any]]:
    """Reload `--admin-tls-cert/--admin-tls-key` when they change, like the Check TLS files."""
    cert, key = settings.admin_tls_cert, settings.admin_tls_key
    if admin is None or admin.credentials is None or cert is None or key is None:
        return []
    credentials = admin.credentials

    async def apply(certificate: ServerCertificate) -> bool:
        if certificate == credentials.certificate:
            return False
        credentials.update(certificate=certificate)
        return True

    return [Watch("admin-tls", (cert, key), lambda: admin_certificate(cert, key), apply)]


def _on_workload_update(running: RunningServer, settings: Settings) -> Any:
    async def on_update(update: X509Update) -> None:
        if running.tls is not None and settings.tls_workload_api:
            running.tls.update(certificate=update.svid)
            running.metrics.tls_expiry.set(update.svid.not_after.timestamp())
        admin = running.admin
        if admin is not None and admin.credentials is not None and not settings.admin_tls_cert:
            admin.credentials.update(certificate=update.svid)
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
