"""`authz_approvals{status}` and `authz_revocations` from what a real store holds; a store
that cannot be read shows no values (and counts the error), never stale or made-up ones."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from authz_server.state.memory import MemoryStore
from authz_server.state.observed import ObservedStore
from authz_server.state.redis import RedisStore
from authz_server.state.store import PendingAction
from authz_server.telemetry.metrics import Metrics
from authz_server.telemetry.store_gauges import StoreGauges

ADMIN = "spiffe://example.org/humans/alice"


def scraped(metrics: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family name → {labels: value}, as Prometheus would read them."""
    text = generate_latest(metrics.registry).decode()
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def action(n: int) -> PendingAction:
    return PendingAction(
        approval_id=f"{n:064x}",
        principal=f"spiffe://example.org/ci/job-{n}",
        method="POST",
        host="api.example.org",
        path=f"/v1/releases/{n}",
        query="",
        body_digest=None,
        rule_id="releases-publish",
        approvers=("spiffe://example.org/humans/*",),
        ttl_s=900,
    )


async def test_counts_what_the_store_holds() -> None:
    store, metrics = MemoryStore(), Metrics()
    gauges = StoreGauges(store, metrics)
    assert scraped(metrics)["authz_approvals"] == {}, "no value before the first sample"
    assert scraped(metrics)["authz_revocations"] == {}

    for n in range(5):
        await store.consume(action(n))
    await store.approve(action(0).approval_id, ADMIN)
    await store.reject(action(1).approval_id, ADMIN)
    await store.revoke("spiffe://example.org/ci/job-9", 3600, "leaked key", ADMIN)
    await store.revoke("spiffe://example.org/agents/*", 3600, "incident", ADMIN)
    assert await gauges.sample() is True

    values = scraped(metrics)
    assert values["authz_approvals"] == {
        (("status", "pending"),): 3,
        (("status", "approved"),): 1,
        (("status", "rejected"),): 1,
    }
    assert values["authz_revocations"] == {(): 2}

    await store.unrevoke("spiffe://example.org/agents/*")
    await store.consume(action(0))  # the approved one is used up
    await gauges.sample()
    values = scraped(metrics)
    assert values["authz_approvals"][(("status", "approved"),)] == 0
    assert values["authz_revocations"] == {(): 1}


@pytest.fixture
def refused_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


async def test_an_unreadable_store_shows_no_values(refused_url: str) -> None:
    metrics = Metrics()
    redis = RedisStore(refused_url, timeout_s=1.0, refresh_in_background=False)
    try:
        store = ObservedStore(redis, metrics.store_error)
        metrics.set_store_state({"pending": 4}, 2)  # an earlier, successful sample
        assert await StoreGauges(store, metrics).sample() is False
        values = scraped(metrics)
        assert values["authz_approvals"] == {} and values["authz_revocations"] == {}
        assert values["authz_store_errors"] == {(("operation", "list_approvals"),): 1}
    finally:
        await redis.close()


async def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        StoreGauges(MemoryStore(), Metrics(), interval_s=0)


def test_audit_health_is_declared_and_shown_once_attached() -> None:
    metrics = Metrics()
    assert scraped(metrics)["authz_audit_healthy"] == {}
    waiting = [0]
    metrics.watch_audit(lambda: (7, 1), health=lambda: (waiting[0] < 3, waiting[0]))
    assert scraped(metrics)["authz_audit_healthy"] == {(): 1}
    waiting[0] = 5
    values = scraped(metrics)
    assert values["authz_audit_healthy"] == {(): 0}
    assert values["authz_audit_pending_records"] == {(): 5}
    assert values["authz_audit_write_errors"] == {(): 1}


def test_reload_failing_follows_the_last_result() -> None:
    metrics = Metrics()
    metrics.reload("policy", "error")
    values = scraped(metrics)
    assert values["authz_reload_failing"] == {(("source", "policy"),): 1}
    failed_at = values["authz_reload_last_error_timestamp_seconds"][(("source", "policy"),)]
    assert failed_at > 0
    metrics.reload("policy", "unchanged")
    metrics.reload("bundles", "ok")
    values = scraped(metrics)
    assert values["authz_reload_failing"] == {
        (("source", "policy"),): 0,
        (("source", "bundles"),): 0,
    }
    assert values["authz_reload_last_error_timestamp_seconds"] == {
        (("source", "policy"),): failed_at
    }
