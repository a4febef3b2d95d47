"""Which policies several worker processes may serve on the memory store.

Approvals and rate limits keep state that every decision must see whichever worker
Envoy's connection landed on; the memory store is private to each worker, so a policy
with either needs `--store redis://…` as soon as there is more than one worker.
Revocations are the one state a stateless policy reads, and the workers share them
through a file (`state.worker_memory`), so such a policy runs on the memory store.

The same check runs at start (the supervisor, then each worker) and on every policy
reload: a reload that adds an approval or a rate limit under memory + workers is
refused like an invalid policy (the last good one stays in force, the error is reported
by `/readyz` and the admin GetPolicy).
"""

from __future__ import annotations

from authz_server.core.errors import ConfigError
from authz_server.policy.model import Policy
from authz_server.runtime.settings import Settings

__all__ = ["require_shareable", "stateful_rules"]


def stateful_rules(policy: Policy) -> list[str]:
    """`rule-id (kind)` for every rule condition that keeps state in the store."""
    return [
        f"{rule.id} ({condition.kind})" for rule in policy.rules for condition in rule.when.stateful
    ]


def _private_store_workers(settings: Settings) -> int:
    """How many workers share a private store: 0 unless memory with `--workers N>1`."""
    if settings.store != "memory":
        return 0
    if settings.workers > 1:
        return settings.workers
    return 2 if settings.worker is not None else 0  # a worker knows only that N > 1


def require_shareable(policy: Policy, settings: Settings) -> Policy:
    """`policy`, or `ConfigError` when workers on the memory store cannot serve it."""
    workers = _private_store_workers(settings)
    if not workers:
        return policy
    rules = stateful_rules(policy)
    if not rules:
        return policy
    count = str(settings.workers) if settings.workers > 1 else "N"
    raise ConfigError(
        f"--workers {count}: N>1 needs a shared store: --store redis://HOST:PORT/DB for a "
        f"policy with approvals or rate limits ({', '.join(rules)}); the memory store is "
        "private to each worker, so they would not hold across workers (a policy without "
        "them runs on the memory store, revocations shared between the workers)"
    )
