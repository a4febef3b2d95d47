"""The listeners beside the Check server that `serve` starts when asked: the web approval
console (`--console-listen`) and the AuthZEN API (`--authzen-listen`), and the watches that
reload each listener's own certificate files (the admin API's too).

Both run on the Check server's event loop and share its parts: the console decides
approvals with the admin API's operations (the same approver checks and admin log lines;
its own instance when the admin API is off), over the store the Check path uses; the
AuthZEN API decides with the Check pipeline, snapshot holder, audit log and metrics, so
there is one engine and one policy in force. Client CAs follow the trust bundles.
"""

from __future__ import annotations

import logging
from typing import Any

from authz_server.admin.operations import AdminOperations
from authz_server.admin.server import AdminServer, admin_certificate
from authz_server.admin.service import policy_approvers
from authz_server.authzen import AuthzenServer, AuthzenService, Limits, start_authzen
from authz_server.console.server import ConsoleServer, console_certificate, start_console
from authz_server.core.errors import ConfigError
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.runtime.reload import Watch
from authz_server.runtime.settings import Settings
from authz_server.runtime.wiring import Wiring
from authz_server.transport.tls import ServerCertificate

__all__ = ["listener_watches", "start_authzen_beside", "start_console_beside"]

log = logging.getLogger(__name__)


async def start_console_beside(wired: Wiring, admin: AdminServer | None) -> ConsoleServer | None:
    """Start the console when this process runs it (`wiring.runs_console`), else None."""
    listen = wired.settings.console_listen
    if listen is None:
        return None
    if wired.console_certificate is None:
        log.info("approval console: served by worker 0")
        return None
    state = wired.state

    def approvers_for(rule_id: str) -> tuple[PrincipalMatcher, ...]:
        return policy_approvers(state.policy, rule_id)

    operations = (
        admin.service.operations
        if admin is not None
        else AdminOperations(wired.store, approvers_for)
    )
    console = await start_console(
        listen,
        operations=operations,
        snapshot_source=lambda: state.holder.snapshot,
        client_ca_bundles=state.bundles,
        certificate=wired.console_certificate,
    )
    state.bundle_listeners.append(console.update_client_cas)
    approvals = state.policy.approvals
    if approvals.notify and approvals.console_url is None:
        log.warning(
            "approval console on port %d, but notifications carry no link to it: set "
            "admin.approvals.console_url in the policy",
            console.port,
        )
    return console


async def start_authzen_beside(wired: Wiring) -> AuthzenServer | None:
    """Start the AuthZEN listener on `--authzen-listen`, or None when it is off."""
    settings = wired.settings
    if settings.authzen_listen is None:
        return None
    service = AuthzenService(wired.pipeline, wired.holder, wired.audit, wired.metrics)
    try:
        return await start_authzen(
            settings.authzen_listen,
            service,
            credentials=wired.authzen_tls,
            insecure_local=settings.authzen_insecure_local,
            public_url=settings.authzen_public_url,
            limits=Limits(max_body_bytes=settings.authzen_max_body),
            reuse_port=settings.worker is not None,
        )
    except ConfigError as error:  # a port in use, say: name the flag to change
        raise ConfigError(f"--authzen-listen: {error}") from None


def listener_watches(
    settings: Settings, admin: AdminServer | None, console: ConsoleServer | None
) -> list[Watch[Any]]:
    """Reload `--admin-tls-cert/key` and `--console-tls-cert/key` when they change, like
    the Check TLS files."""
    watches: list[Watch[Any]] = []
    cert, key = settings.admin_tls_cert, settings.admin_tls_key
    if admin is not None and admin.credentials is not None and cert and key:
        credentials = admin.credentials

        async def apply_admin(certificate: ServerCertificate) -> bool:
            if certificate == credentials.certificate:
                return False
            credentials.update(certificate=certificate)
            return True

        admin_files = (cert, key)
        watches.append(
            Watch("admin-tls", admin_files, lambda: admin_certificate(*admin_files), apply_admin)
        )
    cert, key = settings.console_tls_cert, settings.console_tls_key
    if console is not None and cert and key:
        console_tls = console.tls

        async def apply_console(certificate: ServerCertificate) -> bool:
            if certificate == console_tls.certificate:
                return False
            console_tls.update(certificate=certificate)
            return True

        console_files = (cert, key)
        watches.append(
            Watch(
                "console-tls",
                console_files,
                lambda: console_certificate(*console_files),
                apply_console,
            )
        )
    return watches
