"""grpc.aio server assembly: Check, health, reflection, audit flushing and drain.

Health is SERVING only once a policy is loaded and, when the policy requires
certificates, every trusted domain has a bundle; NOT_SERVING while draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz_server.audit import AuditLog, NullAudit
from authz_server.identity.bundles import TrustBundles, load_pem_bundles
from authz_server.pipeline import Pipeline, Snapshot
from authz_server.policy.load import load_policy
from authz_server.policy.model import Policy
from authz_server.service import SERVICE_NAME, CheckService, SnapshotHolder
from authz_server.settings import Settings

log = logging.getLogger(__name__)

_GRPC_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def readiness_problem(policy: Policy, bundles: TrustBundles) -> str | None:
    """Why the server must not report SERVING yet, or None."""
    if policy.identity.require_certificate:
        missing = sorted(td for td in policy.identity.trust_domains if bundles.store_for(td) is None)
        if missing:
            return f"no trust bundle for trust domain(s) {', '.join(missing)}"
    return None


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    service: CheckService
    health: health.aio.HealthServicer
    audit: AuditLog
    _flusher: asyncio.Task[None] | None = None

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Drain: report NOT_SERVING, let in-flight Checks finish, flush the audit log."""
        await self.set_serving(False)
        await self.server.stop(grace)
        if self._flusher:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.audit.close()


async def _flush_periodically(audit: AuditLog) -> None:
    while True:
        await asyncio.sleep(max(audit.flush_interval, 0.05))
        audit.flush()


async def start_server(
    settings: Settings,
    *,
    policy: Policy | None = None,
    pipeline: Pipeline | None = None,
) -> RunningServer:
    """Load, bind and start; raises PolicyError / ConfigError before binding on bad input."""
    policy = policy or load_policy(settings.policy)
    bundles = load_pem_bundles(settings.trust_bundles)
    audit: AuditLog = AuditLog(settings.audit_log) if settings.audit_log else NullAudit()
    state = SnapshotHolder()
    service = CheckService(pipeline or Pipeline(), state, audit)

    server = grpc.aio.server(options=_GRPC_OPTIONS)
    server.add_generic_rpc_handlers((service.handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    await server.start()
    running = RunningServer(server, port, service, health_servicer, audit)

    problem = readiness_problem(policy, bundles)
    state.snapshot = Snapshot(policy, bundles) if problem is None else None
    await running.set_serving(problem is None)
    if problem:
        log.error("not serving: %s", problem)
    if settings.audit_log:
        running._flusher = asyncio.create_task(_flush_periodically(audit))
    log.info(
        "Check listening on port %d; policy %s (%d rules)",
        port,
        policy.version[:12],
        len(policy.rules),
    )
    return running


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then drain and exit 0."""
    running = await start_server(settings)
    print(f"authz-server: Check listening on port {running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining (grace %.1fs)", settings.grace_seconds)
    await running.stop(settings.grace_seconds)
    return 0
