"""The admin listener: its own grpc.aio server, mutual TLS, default 127.0.0.1:9192.

TLS requires a client certificate chaining to one of the trusted CAs (grpc checks against
the pooled roots of all trust domains; `auth.py` then re-verifies per trust domain). The
only plaintext mode is `--admin-insecure-local`, for demos: it binds loopback addresses
only, and every caller is the fixed local operator — anyone who can open a socket on the
host is an admin. Never use it where other users or workloads share the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.serialization import Encoding
from grpc_reflection.v1alpha import reflection

from authz_server.admin.address import DEFAULT_ADMIN_LISTEN, is_loopback, listen_host
from authz_server.admin.service import (
    SERVICE_NAME,
    AdminService,
    ApproversFor,
    Explain,
    PolicyStatus,
)
from authz_server.clock import Clock
from authz_server.errors import ConfigError, quote
from authz_server.identity.bundles import TrustBundles
from authz_server.pipeline import Snapshot
from authz_server.state.store import Store

__all__ = ["DEFAULT_ADMIN_LISTEN", "AdminServer", "start_admin_server"]

log = logging.getLogger(__name__)


@dataclass
class AdminServer:
    server: grpc.aio.Server
    port: int
    service: AdminService

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)


def _no_approvers(rule_id: str) -> tuple[()]:
    return ()


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{what} {quote(path)}: cannot read: {error.strerror or error}") from None


def _credentials(tls_cert: str, tls_key: str, bundles: TrustBundles) -> grpc.ServerCredentials:
    roots = b"".join(
        cert.public_bytes(Encoding.PEM)
        for domain in sorted(bundles.domains)
        for cert in bundles.authorities[domain]
    )
    if not roots:
        raise ConfigError("admin API: no trust bundle holds a CA, so no client could authenticate")
    pair = (_read(tls_key, "--admin-tls-key"), _read(tls_cert, "--admin-tls-cert"))
    return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=True)


async def start_admin_server(
    listen: str,
    *,
    tls_cert: str | None,
    tls_key: str | None,
    client_ca_bundles: TrustBundles,
    insecure_local: bool,
    store: Store,
    snapshot_source: Callable[[], Snapshot | None],
    explain: Explain,
    approvers_for: ApproversFor = _no_approvers,
    clock: Clock | None = None,
    policy_status: Callable[[], PolicyStatus] | None = None,
) -> AdminServer:
    """Bind and start the admin API; `ConfigError` for an unsafe or incomplete setup."""
    host = listen_host(listen)
    if insecure_local:
        if tls_cert or tls_key:
            raise ConfigError("--admin-insecure-local cannot be combined with --admin-tls-cert/key")
        if not is_loopback(host):
            raise ConfigError(
                f"--admin-insecure-local binds loopback only (127.0.0.1 or [::1]), "
                f"not {quote(listen)}"
            )
    elif not (tls_cert and tls_key):
        raise ConfigError(
            "the admin API needs --admin-tls-cert and --admin-tls-key "
            "(or --admin-insecure-local, for demos on loopback)"
        )

    service = AdminService(
        store=store,
        snapshot_source=snapshot_source,
        explain=explain,
        approvers_for=approvers_for,
        insecure_local=insecure_local,
        clock=clock,
        policy_status=policy_status,
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((service.handler(),))
    reflection.enable_server_reflection([SERVICE_NAME, reflection.SERVICE_NAME], server)
    if insecure_local:
        port = server.add_insecure_port(listen)
    else:
        assert tls_cert and tls_key  # checked above
        port = server.add_secure_port(listen, _credentials(tls_cert, tls_key, client_ca_bundles))
    if port == 0:
        raise OSError(f"admin API: cannot listen on {listen}")
    await server.start()
    if insecure_local:
        log.warning(
            "admin API on %s port %d WITHOUT TLS (--admin-insecure-local): every local "
            "caller is an admin; for demos only",
            host,
            port,
        )
    else:
        log.info("admin API listening on port %d (mutual TLS)", port)
    return AdminServer(server, port, service)
