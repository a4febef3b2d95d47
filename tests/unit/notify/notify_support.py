"""Building notifiers for the tests and reading their counters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from authz_server.notify.notifier import Notifier, RetryPolicy
from authz_server.policy.model import Policy
from authz_server.state.store import Store
from authz_server.telemetry.metrics import Metrics
from tests.unit.state.conftest import ManualClock

#: Retries in milliseconds, so that tests do not wait for a real backoff.
FAST = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.02, timeout_s=2.0)


def notifier(
    policy: Policy | Callable[[], Policy],
    store: Store,
    clock: ManualClock,
    metrics: Metrics,
    **options: int | float,
) -> Notifier:
    source = policy if callable(policy) else (lambda: policy)
    return Notifier(
        source,
        store,
        observe=metrics.notification,
        clock=clock,
        retry=FAST,
        sweep_interval_s=3600,  # the tests sweep by hand
        **options,  # type: ignore[arg-type]
    )


def count(metrics: Metrics, endpoint: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "authz_notifications_total", {"endpoint": endpoint, "outcome": outcome}
    )
    return value or 0.0


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until `check()` holds (fails the test after `timeout_s`; not a timing bound)."""

    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout_s)
