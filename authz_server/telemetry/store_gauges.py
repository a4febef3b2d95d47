"""`authz_approvals{status}` and `authz_revocations`: what the store holds, sampled.

The store is the one place that knows (with Redis, for every replica at once), and nothing
on the Check path should pay for counting, so a task reads the listings the admin API uses
every `interval_s` and hands the counts to `Metrics.set_store_state`. A failed read clears
them (no value rather than a stale one) and is counted like any store error by the
`ObservedStore` the server wraps around the store. With replicas sharing a store every
replica reports the same store-wide numbers: aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from authz_server.core.errors import StoreUnavailable
from authz_server.state.store import ApprovalStatus, Store
from authz_server.telemetry.metrics import Metrics

__all__ = ["DEFAULT_INTERVAL_S", "MAX_COUNTED", "StoreGauges"]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0
#: Approval records counted per sample (the listing's bound): a floor beyond that.
MAX_COUNTED = 10_000


class StoreGauges:
    """Samples `store` into `metrics`: `await sample()` once, or `run()` as a task."""

    def __init__(
        self, store: Store, metrics: Metrics, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"sampling interval must be positive, got {interval_s}")
        self._store = store
        self._metrics = metrics
        self._interval = interval_s
        self._failing = False

    async def sample(self) -> bool:
        """Read the store once; False (and no values shown) when it cannot be read."""
        try:
            records = await self._store.list_approvals(MAX_COUNTED)
            revocations = await self._store.list_revocations()
        except StoreUnavailable as error:
            if not self._failing:  # once per outage
                log.warning("approval and revocation gauges unknown: %s", error)
            self._failing = True
            self._metrics.forget_store_state()
            return False
        self._failing = False
        by_status = Counter(record.status.value for record in records)
        approvals = {status.value: by_status[status.value] for status in ApprovalStatus}
        self._metrics.set_store_state(approvals, len(revocations))
        return True

    async def run(self) -> None:
        """Sample now and every interval until cancelled."""
        while True:
            await self.sample()
            await asyncio.sleep(self._interval)
