"""Retry pacing for the long-lived Workload API streams, shared by the X.509 and JWT watchers."""

from __future__ import annotations

import asyncio
import contextlib
import random


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with ±20% jitter, so that replicas do not retry in step."""
    jitter = random.uniform(0.8, 1.2)  # noqa: S311 - not a secret
    return float(min(cap, base * 2 ** min(failures - 1, 16)) * jitter)


async def sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stopping` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
