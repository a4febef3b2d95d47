"""The admin listener: its own grpc.aio server, mutual TLS, default 127.0.0.1:9192.

TLS requires a client certificate chaining to one of the trusted CAs (grpc checks against
the pooled roots of all trust domains; `auth.py` then re-verifies per trust domain). The
credentials are dynamic (`tls.TlsCredentials`): `AdminServer.credentials.update` swaps in
new client CAs when the trust bundles reload and a new serving certificate (a rotated
Workload API SVID, an edited `--admin-tls-cert`) for the next handshake. The only
plaintext mode is `--admin-insecure-local`, for demos: it binds loopback addresses only,
and every caller is the fixed local operator — anyone who can open a socket on the host
is an admin. Never use it where other users or workloads share the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_reflection.v1alpha import reflection

from authz_server.admin.address import DEFAULT_ADMIN_LISTEN, is_loopback, listen_host
from authz_server.admin.service import (
    SERVICE_NAME,
    AdminService,
    ApproversFor,
    Explain,
    PolicyStatus,
)
from authz_server.check.snapshot import Snapshot
from authz_server.core.clock import Clock
from authz_server.core.errors import ConfigError, quote
from authz_server.identity.bundles import TrustBundles
from authz_server.state.store import Store
from authz_server.transport.listen import add_grpc_port
from authz_server.transport.tls import ServerCertificate, TlsCredentials, load_certificate_files

__all__ = ["DEFAULT_ADMIN_LISTEN", "AdminServer", "admin_certificate", "start_admin_server"]

log = logging.getLogger(__name__)


@dataclass
class AdminServer:
    server: grpc.aio.Server
    port: int
    service: AdminService
    #: None in `--admin-insecure-local` mode.
    credentials: TlsCredentials | None = None

    def update_client_cas(self, bundles: TrustBundles) -> None:
        """Accept clients of the trust bundles now in force from the next handshake."""
        if self.credentials is not None:
            self.credentials.update(roots_pem=bundles.roots_pem())

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)


def _no_approvers(rule_id: str) -> tuple[()]:
    return ()


def admin_certificate(tls_cert: str, tls_key: str) -> ServerCertificate:
    """`--admin-tls-cert` (chain, leaf first) and `--admin-tls-key`; ConfigError if unusable."""
    try:
        return load_certificate_files(tls_cert, tls_key)
    except ConfigError as error:
        raise ConfigError(str(error).replace("--tls-", "--admin-tls-")) from None


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
    certificate: ServerCertificate | None = None,
    reuse_port: bool = False,
) -> AdminServer:
    """Bind and start the admin API; `ConfigError` for an unsafe or incomplete setup, or
    an address it cannot listen on.

    The serving certificate is `tls_cert`/`tls_key`, else `certificate` (a Workload API
    SVID; update it through `AdminServer.credentials`). `reuse_port` lets the workers of
    one `serve --workers N` share the port (they share the store too).
    """
    host = listen_host(listen)
    if insecure_local:
        if tls_cert or tls_key:
            raise ConfigError("--admin-insecure-local cannot be combined with --admin-tls-cert/key")
        if not is_loopback(host):
            raise ConfigError(
                f"--admin-insecure-local binds loopback only (127.0.0.1 or [::1]), "
                f"not {quote(listen)}"
            )
    elif not (tls_cert and tls_key) and certificate is None:
        raise ConfigError(
            "the admin API needs --admin-tls-cert and --admin-tls-key "
            "(or --admin-insecure-local, for demos on loopback)"
        )
    credentials: TlsCredentials | None = None
    if not insecure_local:
        if tls_cert and tls_key:
            certificate = admin_certificate(tls_cert, tls_key)
        assert certificate is not None
        credentials = TlsCredentials(certificate, client_ca_bundles.roots_pem())

    service = AdminService(
        store=store,
        snapshot_source=snapshot_source,
        explain=explain,
        approvers_for=approvers_for,
        insecure_local=insecure_local,
        clock=clock,
        policy_status=policy_status,
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if reuse_port else 0)])
    server.add_generic_rpc_handlers((service.handler(),))
    reflection.enable_server_reflection([SERVICE_NAME, reflection.SERVICE_NAME], server)
    server_credentials = credentials.server_credentials() if credentials is not None else None
    port = add_grpc_port(
        server, "--admin-listen", listen, server_credentials, reuse_port=reuse_port
    )
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
    return AdminServer(server, port, service, credentials)
