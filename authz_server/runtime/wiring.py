"""What `serve` is made of, built from `Settings` without binding a port or starting a task.

    wire(settings)   validate the settings; fingerprint the watched files; load the policy
                     and trust bundles (PolicyError / ConfigError here stop the start with
                     nothing bound); metrics, snapshot holder and `LiveState`; the audit
                     log; the store, wrapped to count its failures; the Check pipeline and
                     service; the Check listener's TLS credentials and `CallerGuard`; the
                     grpc.aio server with Check, health and reflection; the approval
                     notifier; the TLS material of the console and AuthZEN listeners; the
                     reloader's file watches.

`server.start_server` starts these in order and stops them in reverse (`server.py`); the
HTTP listeners beside the Check server are `listeners.py`. Keeping construction apart
means every bad file or flag is reported before any port is taken.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz_server.audit.log import AuditLog, NullAudit
from authz_server.check.pipeline import Pipeline
from authz_server.check.service import SERVICE_NAME, CheckService
from authz_server.check.snapshot import SnapshotHolder
from authz_server.console.server import console_certificate
from authz_server.core.errors import ConfigError
from authz_server.identity.bundles import DomainBundle, load_bundles
from authz_server.identity.patterns import compile_principal_pattern
from authz_server.notify.notifier import Notifier
from authz_server.policy.load import load_policy
from authz_server.policy.model import Policy
from authz_server.runtime.reload import LiveState, Watch, fingerprint
from authz_server.runtime.settings import Settings
from authz_server.runtime.shared_state import require_shareable
from authz_server.state import open_store
from authz_server.state.observed import ObservedStore
from authz_server.state.store import Store
from authz_server.telemetry.metrics import Metrics
from authz_server.telemetry.spans import child
from authz_server.transport.tls import (
    CallerGuard,
    ServerCertificate,
    TlsCredentials,
    load_certificate_files,
    load_client_ca,
    placeholder_certificate,
)

__all__ = ["GRPC_OPTIONS", "Wiring", "runs_console", "wire"]

log = logging.getLogger(__name__)

GRPC_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
_SHA256 = SHA256()


@dataclass(frozen=True)
class Wiring:
    """The parts of one server process, built and connected, none of them started."""

    settings: Settings
    #: Fingerprints taken before the loads: a change during start-up is seen on the first tick.
    seen: Mapping[str, tuple[Any, ...]]
    policy: Policy
    metrics: Metrics
    holder: SnapshotHolder
    state: LiveState
    audit: AuditLog
    store: ObservedStore
    pipeline: Pipeline
    service: CheckService
    #: The Check listener's credentials; None in plaintext.
    tls: TlsCredentials | None
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    notifier: Notifier
    #: The AuthZEN listener's: its own, the Check listener's, or None (insecure-local or off).
    authzen_tls: TlsCredentials | None
    #: The console's certificate when this process runs the console, else None.
    console_certificate: ServerCertificate | None
    #: Policy, bundles, Check TLS and AuthZEN TLS files; the other listeners add theirs.
    watches: tuple[Watch[Any], ...]


def wire(
    settings: Settings,
    *,
    policy: Policy | None = None,
    pipeline: Pipeline | None = None,
    store: Store | None = None,
) -> Wiring:
    """Build every part; raises PolicyError / ConfigError on bad input, nothing bound.

    `policy` replaces loading `settings.policy`, `store` opening `settings.store` (tests);
    the store (wrapped) becomes the store of `pipeline`.
    """
    settings.validate()
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
    console = None
    if runs_console(settings):
        assert settings.console_tls_cert is not None and settings.console_tls_key is not None
        console = console_certificate(settings.console_tls_cert, settings.console_tls_key)
    tls = _check_credentials(settings, state)
    authzen_tls, authzen_watches = authzen_credentials(settings, state, tls)
    # Every file is read: open what holds resources only now.
    audit: AuditLog = AuditLog(settings.audit_log) if settings.audit_log else NullAudit()
    metrics.watch_audit(
        lambda: (audit.stats.records, audit.stats.write_errors),
        health=lambda: (audit.healthy, audit.pending),
    )
    opened = store or open_store(settings.store, revocations_file=settings.revocations_file)
    observed = ObservedStore(opened, metrics.store_error, span=child)
    if pipeline is None:
        pipeline = Pipeline(store=observed)
    pipeline.store = observed
    service = CheckService(pipeline, holder, audit, metrics)
    server, health_servicer = _grpc_server(settings, service, state, tls, metrics)
    return Wiring(
        settings=settings,
        seen=seen,
        policy=policy,
        metrics=metrics,
        holder=holder,
        state=state,
        audit=audit,
        store=observed,
        pipeline=pipeline,
        service=service,
        tls=tls,
        server=server,
        health=health_servicer,
        notifier=Notifier.from_policy(lambda: state.policy, observed, metrics),
        authzen_tls=authzen_tls,
        console_certificate=console,
        watches=(*_watches(settings, state, tls), *authzen_watches),
    )


def runs_console(settings: Settings) -> bool:
    """Whether this process serves the console: with `--workers N`, worker 0 only, since
    a form is valid only against the process that rendered it (its CSRF secret)."""
    return settings.console_listen is not None and settings.worker in (None, 0)


def authzen_credentials(
    settings: Settings, state: LiveState, check_tls: TlsCredentials | None
) -> tuple[TlsCredentials | None, list[Watch[Any]]]:
    """The AuthZEN listener's TLS and the watch of its files: `--authzen-tls-cert/key`
    (client CAs following the trust bundles), else the Check listener's credentials
    (same certificate and client CAs, rotated together), else None (insecure-local, off)."""
    if settings.authzen_listen is None or settings.authzen_insecure_local:
        return None, []
    cert, key = settings.authzen_tls_cert, settings.authzen_tls_key
    if cert is None or key is None:
        if check_tls is None:  # Settings.validate refuses this first
            raise ConfigError(
                "--authzen-listen needs --authzen-tls-cert/--authzen-tls-key or TLS on the "
                "Check listener (--tls-cert/--tls-key or --tls-workload-api)"
            )
        return check_tls, []
    credentials = TlsCredentials(_authzen_certificate(cert, key), state.bundles.roots_pem())
    state.bundle_listeners.append(lambda b: credentials.update(roots_pem=b.roots_pem()))

    async def apply(certificate: ServerCertificate) -> bool:
        if certificate == credentials.certificate:
            return False
        credentials.update(certificate=certificate)
        return True

    watch = Watch("authzen-tls", (cert, key), lambda: _authzen_certificate(cert, key), apply)
    return credentials, [watch]


def _authzen_certificate(cert: str, key: str) -> ServerCertificate:
    try:
        return load_certificate_files(cert, key)
    except ConfigError as error:
        raise ConfigError(str(error).replace("--tls-", "--authzen-tls-")) from None


def _check_credentials(settings: Settings, state: LiveState) -> TlsCredentials | None:
    """The Check listener's TLS: files, or a placeholder until the Workload API's SVID."""
    if not settings.tls:
        return None
    if settings.tls_cert is not None:
        certificate, roots = _tls_files(settings)
        state.metrics.tls_expiry.set(certificate.not_after.timestamp())
    else:
        certificate, roots = placeholder_certificate(), None
    tls = TlsCredentials(certificate, roots or state.bundles.roots_pem())
    if roots is None:  # client CAs follow the trust bundles
        state.bundle_listeners.append(lambda b: tls.update(roots_pem=b.roots_pem()))
    return tls


def _grpc_server(
    settings: Settings,
    service: CheckService,
    state: LiveState,
    tls: TlsCredentials | None,
    metrics: Metrics,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """Check, health and reflection on one grpc.aio server, with the caller guard on TLS."""
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if tls is not None:
        allowed = [compile_principal_pattern(p) for p in settings.allowed_callers]
        interceptors.append(CallerGuard(allowed, lambda: state.bundles, metrics))
    options = GRPC_OPTIONS
    if settings.worker is not None:  # the workers of `--workers N` share the port
        options = [("grpc.so_reuseport", 1), *GRPC_OPTIONS[1:]]
    server = grpc.aio.server(options=options, interceptors=interceptors)
    server.add_generic_rpc_handlers((service.handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return server, health_servicer


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
