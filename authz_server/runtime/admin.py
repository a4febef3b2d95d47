"""The admin API beside the Check server: what `serve` hands it, and when it runs at all.

`serve` starts the admin listener when it has an address (`--admin-listen`, default
127.0.0.1:9192; `off` disables it) and a way to authenticate its callers:
`--admin-tls-cert/--admin-tls-key`, else the Workload API SVID (`--workload-api`), else
`--admin-insecure-local` (demos). With none of these it stays off and says so: a listener
that nobody can authenticate to would only be a port to scan, and approvals then simply
stay pending (an approval rule never grants without a human).

Everything it serves is live: the snapshot in force (policy, trust bundles), approvers
looked up in the policy in force when an approver acts, client CAs following bundle
reloads, and the shared store the Check path uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from authz_server.admin.server import AdminServer, start_admin_server
from authz_server.admin.service import PolicyStatus, pipeline_explain, policy_approvers
from authz_server.check.snapshot import Snapshot
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.runtime.reload import LiveState
from authz_server.runtime.settings import Settings
from authz_server.state.store import Store
from authz_server.transport.tls import placeholder_certificate

__all__ = ["start_admin_beside"]

log = logging.getLogger(__name__)


def _policy_status(state: LiveState) -> Callable[[], PolicyStatus]:
    def status() -> PolicyStatus:
        failure = state.failures.get("policy")
        return PolicyStatus(
            loaded_at=state.policy_loaded_at,
            last_error="\n".join(failure.errors) if failure else None,
            last_error_at=failure.at if failure else None,
        )

    return status


def _has_approvals(state: LiveState) -> bool:
    return any(
        condition.kind == "approval"
        for rule in state.policy.rules
        for condition in rule.when.stateful
    )


async def start_admin_beside(
    settings: Settings, state: LiveState, store: Store
) -> AdminServer | None:
    """Start the admin API for a running Check server, or None when it stays off."""
    if not settings.admin_enabled:
        why = "--admin-listen off" if settings.admin_listen is None else "no credentials"
        if _has_approvals(state):
            log.warning(
                "admin API off (%s): approval rules will keep answering approval_required; "
                "give it --admin-tls-cert/--admin-tls-key or --workload-api",
                why,
            )
        else:
            log.info("admin API off (%s)", why)
        return None
    assert settings.admin_listen is not None
    holder = state.holder

    def snapshot() -> Snapshot | None:
        return holder.snapshot

    def approvers_for(rule_id: str) -> tuple[PrincipalMatcher, ...]:
        return policy_approvers(state.policy, rule_id)

    # Without files, the Workload API SVID serves once it arrives; nobody can connect before.
    certificate = None
    if settings.admin_tls_cert is None and not settings.admin_insecure_local:
        certificate = placeholder_certificate()
    admin = await start_admin_server(
        settings.admin_listen,
        tls_cert=settings.admin_tls_cert,
        tls_key=settings.admin_tls_key,
        client_ca_bundles=state.bundles,
        insecure_local=settings.admin_insecure_local,
        store=store,
        snapshot_source=snapshot,
        explain=pipeline_explain(snapshot),
        approvers_for=approvers_for,
        policy_status=_policy_status(state),
        certificate=certificate,
        reuse_port=settings.worker is not None,
    )
    state.bundle_listeners.append(admin.update_client_cas)
    return admin
