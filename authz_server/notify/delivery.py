"""One endpoint's deliveries: a bounded queue and one sender task with retries.

Each endpoint has its own queue and task, so a dead receiver delays only its own
notifications, in order. A job is tried up to `max_attempts` times: a 2xx answer is
`sent`; a connection error, a timeout, 408, 429 or 5xx is retried after an exponential
backoff with jitter (`backoff.backoff_delay`), counted `retry`; any other answer (a 3xx
is not followed, a 4xx means the receiver refuses this body) and the last failed attempt
are `failed`, with a log line. Each attempt is signed afresh, so its timestamp is current
however long the backoff was. A full queue refuses the job at once (`queue_full`). Drops
are logged at most every 10 s per endpoint and kind, saying how many were not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from authz_server.core.backoff import backoff_delay, sleep_unless
from authz_server.notify.signing import sign
from authz_server.policy.approvals_notify import NotifyEndpoint
from authz_server.state.events import ApprovalEvent

__all__ = ["EndpointSender", "Job", "Outcome", "RetryPolicy"]

log = logging.getLogger(__name__)

#: (endpoint name, outcome) → a counter (`Metrics.notification`).
Observe = Callable[[str, str], None]

_RETRIED_STATUS = frozenset({408, 429})
#: Drop warnings at most this often per endpoint and kind (the counter has every one).
_WARN_EVERY_S = 10.0


class Outcome:
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    QUEUE_FULL = "queue_full"
    DUPLICATE = "duplicate"
    NO_SECRET = "no_secret"  # noqa: S105 - an outcome's name, not a secret


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    #: One attempt, from connecting to the status line.
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not (0 < self.base_s <= self.cap_s) or self.timeout_s <= 0:
            raise ValueError(f"unusable retry policy {self}")


class _Throttle:
    """Lets a log line through at most every `_WARN_EVERY_S`, counting the ones held back."""

    def __init__(self) -> None:
        self._last = -_WARN_EVERY_S
        self._held = 0

    def due(self) -> str | None:
        """None to stay quiet; else a note on the lines held back since the last one."""
        now = time.monotonic()
        if now - self._last < _WARN_EVERY_S:
            self._held += 1
            return None
        note = f" ({self._held} more since the last report)" if self._held else ""
        self._last, self._held = now, 0
        return note


@dataclass(frozen=True, slots=True)
class Job:
    event: ApprovalEvent
    body: bytes
    content_type: str
    #: None: unsigned (a Slack endpoint without `secret_file`).
    secret: bytes | None


class EndpointSender:
    """Delivers the jobs of one endpoint, one at a time, in order."""

    def __init__(
        self,
        endpoint: NotifyEndpoint,
        session: aiohttp.ClientSession,
        observe: Observe,
        retry: RetryPolicy,
        now_s: Callable[[], float],
        queue_size: int,
    ) -> None:
        self.endpoint = endpoint
        self._session = session
        self._observe = observe
        self._retry = retry
        self._now_s = now_s
        self._queue: asyncio.Queue[Job] = asyncio.Queue(queue_size)
        self._stopping = asyncio.Event()
        self._retiring = False
        self._busy = False
        self._full_log = _Throttle()
        self._failed_log = _Throttle()
        self._task = asyncio.create_task(self._run(), name=f"notify {endpoint.name}")

    def offer(self, job: Job) -> bool:
        """Queue `job` without waiting; False (counted, logged) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._observe(self.endpoint.name, Outcome.QUEUE_FULL)
            if (note := self._full_log.due()) is not None:
                log.warning(
                    "notify %s: queue full (%d), dropped %s event of approval %s%s",
                    self.endpoint.name, self._queue.maxsize, job.event.type.value,
                    job.event.record.approval_id, note,
                )  # fmt: skip
            return False
        return True

    def retire(self) -> None:
        """Deliver what is queued, then stop (the endpoint left the policy)."""
        self._retiring = True
        if self._queue.empty() and not self._busy:
            self._task.cancel()

    async def close(self, grace_s: float) -> int:
        """Stop after at most `grace_s` of draining; the number of jobs left undelivered."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace_s)
        self._stopping.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        left = self._queue.qsize()
        for _ in range(left):
            self._observe(self.endpoint.name, Outcome.FAILED)
        return left

    async def _run(self) -> None:
        # `_stopping` is checked too: on Python 3.11 `wait_for` (in `sleep_unless`) may
        # swallow the cancellation that `close` sends.
        while not (self._stopping.is_set() or (self._retiring and self._queue.empty())):
            job = await self._queue.get()
            self._busy = True
            try:
                await self._deliver(job)
            finally:
                self._busy = False
                self._queue.task_done()

    async def _deliver(self, job: Job) -> None:
        name, retry = self.endpoint.name, self._retry
        what = f"{job.event.type.value} event of approval {job.event.record.approval_id}"
        for attempt in range(1, retry.max_attempts + 1):
            problem, retriable = await self._attempt(job)
            if problem is None:
                self._observe(name, Outcome.SENT)
                return
            if not retriable or attempt == retry.max_attempts or self._stopping.is_set():
                self._observe(name, Outcome.FAILED)
                if (note := self._failed_log.due()) is not None:
                    log.warning(
                        "notify %s: dropped %s after %d attempt(s): %s%s",
                        name, what, attempt, problem, note,
                    )  # fmt: skip
                return
            self._observe(name, Outcome.RETRY)
            log.info("notify %s: attempt %d for %s failed: %s", name, attempt, what, problem)
            await sleep_unless(self._stopping, backoff_delay(attempt, retry.base_s, retry.cap_s))

    async def _attempt(self, job: Job) -> tuple[str | None, bool]:
        """(None, _) when delivered, else (what went wrong, whether to try again)."""
        headers = {"Content-Type": job.content_type, "X-Authz-Event-Id": job.event.event_id}
        if job.secret is not None:
            headers.update(sign(job.secret, job.body, self._now_s()))
        timeout = aiohttp.ClientTimeout(total=self._retry.timeout_s)
        try:
            async with self._session.post(
                self.endpoint.url,
                data=job.body,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            # Never log the URL: a Slack webhook's path is its secret.
            text = str(error).replace(self.endpoint.url, "<url>")
            return f"{type(error).__name__}: {text}" if text else type(error).__name__, True
        if 200 <= status < 300:
            return None, False
        return f"HTTP {status}", status >= 500 or status in _RETRIED_STATUS
