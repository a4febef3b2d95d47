"""The approval notifier: signed HTTP notifications of approval events, off the Check path.

    emit(event)  ──put_nowait──▶  events queue  ──dispatcher task──▶  claim in the store
                                  (bounded)                             │ (once per event,
                                                                        ▼  all replicas)
                                        one queue + sender task per endpoint ──POST──▶

`emit` (the `ApprovalEvents` protocol) only puts the event on a bounded queue and returns;
it never awaits, so a slow or dead receiver costs a Check nothing and cannot change a
decision. A full queue drops the event at once (`queue_full`, counted per endpoint that
would have received it, and logged). The dispatcher claims `event.event_id` in the store
(`Store.claim_once`): with several workers or replicas sharing Redis, only the claimant
sends, the others count `duplicate`. If the store cannot be asked, the event is sent
anyway: a notification twice (receivers deduplicate on `event_id`) beats none.

The endpoints, the console URL and the rules' descriptions are read from the policy in
force for each event, so a reload applies from the next event on. Secrets are read from
their files for each event (rotation needs no restart); an unreadable or short secret
drops the event for that endpoint (`no_secret`, logged as an error).

Expiry: the stores expire records lazily, so a sweep every `sweep_interval_s` lists the
live records and announces pending ones that ended undecided (`expiry.py`).

Wiring (the server): `notifier = Notifier.from_policy(lambda: state.policy, store,
metrics)`, `await notifier.start()` (attaches it as `store.events`), and on shutdown
`await notifier.close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from authz_server.core.clock import Clock, SystemClock
from authz_server.core.errors import StoreUnavailable
from authz_server.notify.delivery import EndpointSender, Job, Observe, Outcome, RetryPolicy
from authz_server.notify.expiry import ExpiryWatch
from authz_server.notify.payload import Facts, approval_link, json_payload
from authz_server.notify.signing import read_secret
from authz_server.notify.slack import slack_payload
from authz_server.policy.approvals_notify import ApprovalsSettings, NotifyEndpoint
from authz_server.policy.model import Policy
from authz_server.state.events import NULL_EVENTS, ApprovalEvent, EventType
from authz_server.state.store import Store, to_us
from authz_server.telemetry.metrics import Metrics

__all__ = ["Notifier", "RetryPolicy"]

log = logging.getLogger(__name__)

#: How long a claim is kept: far longer than any two replicas could disagree about an event.
CLAIM_TTL_S = 86400.0
_USER_AGENT = "authz-server-notify/1"


@dataclass(frozen=True, slots=True)
class _Config:
    policy: Policy
    settings: ApprovalsSettings
    descriptions: dict[str, str]


def _no_metrics(endpoint: str, outcome: str) -> None:
    return None


class Notifier:
    """Sends approval events to the endpoints of `admin.approvals.notify`."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        store: Store,
        *,
        observe: Observe = _no_metrics,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        queue_size: int = 1000,
        endpoint_queue_size: int = 1000,
        sweep_interval_s: float = 15.0,
        close_grace_s: float = 2.0,
    ) -> None:
        if queue_size < 1 or endpoint_queue_size < 1 or not sweep_interval_s > 0:
            raise ValueError("queue sizes must be at least 1 and the sweep interval positive")
        self._policy = policy
        self._store = store
        self._observe = observe
        self._clock = clock or SystemClock()
        self._retry = retry or RetryPolicy()
        self._queue_size = queue_size
        self._endpoint_queue_size = endpoint_queue_size
        self._sweep_interval_s = sweep_interval_s
        self._close_grace_s = close_grace_s
        self._queue: asyncio.Queue[ApprovalEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._session: aiohttp.ClientSession | None = None
        self._senders: dict[NotifyEndpoint, EndpointSender] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._config_of: _Config | None = None
        self._watch = ExpiryWatch()
        self._stopping = asyncio.Event()

    @classmethod
    def from_policy(
        cls,
        policy: Policy | Callable[[], Policy],
        store: Store,
        metrics: Metrics | None = None,
        *,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> Notifier:
        """A notifier for `policy` (or a function returning the policy in force, so that
        reloads apply), counting into `metrics.notification`."""
        source = policy if callable(policy) else (lambda: policy)
        observe = metrics.notification if metrics is not None else _no_metrics
        return cls(source, store, observe=observe, clock=clock, retry=retry)

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender tasks and the expiry sweep; attach as `store.events`."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._queue = asyncio.Queue(self._queue_size)
        self._session = aiohttp.ClientSession(headers={"User-Agent": _USER_AGENT})
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="notify dispatch"),
            asyncio.create_task(self._sweep_loop(), name="notify expiry sweep"),
        ]
        self._store.events = self

    async def close(self) -> None:
        """Detach, deliver what is queued for up to `close_grace_s`, then stop."""
        if self._store.events is self:
            self._store.events = NULL_EVENTS
        self._stopping.set()
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), self._close_grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = 0
        for sender in self._senders.values():
            left += await sender.close(self._close_grace_s)
        if left:
            log.warning("notify: %d notification(s) left undelivered at shutdown", left)
        if self._session is not None:
            await self._session.close()
        self._queue = None

    # emitting (the Check path and the admin API) ------------------------------------------

    def emit(self, event: ApprovalEvent) -> None:
        """Queue `event`; never awaits, never raises (`ApprovalEvents`)."""
        loop = self._loop
        if loop is None or self._queue is None:
            return
        if threading.get_ident() != self._thread:
            loop.call_soon_threadsafe(self._enqueue, event)
        else:
            self._enqueue(event)

    def _enqueue(self, event: ApprovalEvent) -> None:
        try:
            # Not `_config()`: after a reload it rebuilds, which is the dispatcher's work.
            endpoints = self._policy().approvals.notify
            if not endpoints or self._queue is None:
                return
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            for endpoint in endpoints:
                if event.type in endpoint.events:
                    self._observe(endpoint.name, Outcome.QUEUE_FULL)
            log.warning(
                "notify: event queue full (%d), dropped %s event of approval %s",
                self._queue_size, event.type.value, event.record.approval_id,
            )  # fmt: skip
        except Exception:
            log.exception("notify: could not queue an approval event")

    # the dispatcher -----------------------------------------------------------------------

    def _config(self) -> _Config:
        policy = self._policy()
        cached = self._config_of
        if cached is None or cached.policy is not policy:
            descriptions = {rule.id: rule.description for rule in policy.rules}
            cached = _Config(policy, policy.approvals, descriptions)
            self._config_of = cached
            self._retire_unlisted(policy.approvals.notify)
        return cached

    def _retire_unlisted(self, endpoints: tuple[NotifyEndpoint, ...]) -> None:
        for endpoint in [e for e in self._senders if e not in endpoints]:
            self._senders.pop(endpoint).retire()

    async def _dispatch_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            event = await queue.get()
            try:
                await self._dispatch(event)
            except Exception:
                log.exception("notify: could not dispatch %s event", event.type.value)
            finally:
                queue.task_done()

    async def _dispatch(self, event: ApprovalEvent) -> None:
        config = self._config()
        endpoints = config.settings.notify
        if not endpoints:
            return
        if event.type is EventType.PENDING:
            self._watch.watch(event.record)
        # Claimed even when no endpoint wants this type: a claimed decision keeps the
        # expiry sweep from announcing a record that was decided.
        wanted = [e for e in endpoints if event.type in e.events]
        if not await self._claim(event):
            for endpoint in wanted:
                self._observe(endpoint.name, Outcome.DUPLICATE)
            return
        if not wanted:
            return
        record = event.record
        facts = Facts(
            event,
            config.descriptions.get(record.rule_id, ""),
            approval_link(config.settings.console_url, record.approval_id),
        )
        for endpoint in wanted:
            self._hand_over(endpoint, facts)

    async def _claim(self, event: ApprovalEvent) -> bool:
        try:
            return await self._store.claim_once(event.event_id, CLAIM_TTL_S)
        except StoreUnavailable as error:
            log.warning(
                "notify: cannot claim %s (%s); sending it anyway (receivers deduplicate on "
                "event_id)",
                event.event_id, error,
            )  # fmt: skip
            return True

    def _hand_over(self, endpoint: NotifyEndpoint, facts: Facts) -> None:
        secret = None
        if endpoint.secret_file is not None:
            try:
                secret = read_secret(endpoint.secret_file)
            except ValueError as error:
                self._observe(endpoint.name, Outcome.NO_SECRET)
                log.error("notify %s: not sent: %s", endpoint.name, error)
                return
        payload = slack_payload(facts) if endpoint.format == "slack" else json_payload(facts)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        job = Job(facts.event, body, "application/json", secret)
        self._sender(endpoint).offer(job)

    def _sender(self, endpoint: NotifyEndpoint) -> EndpointSender:
        sender = self._senders.get(endpoint)
        if sender is None:
            assert self._session is not None
            sender = EndpointSender(
                endpoint,
                self._session,
                self._observe,
                self._retry,
                lambda: self._clock.now().timestamp(),
                self._endpoint_queue_size,
            )
            self._senders[endpoint] = sender
        return sender

    # expiry -------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """List the live approvals once and announce the pending ones that expired; how
        many were announced. `StoreUnavailable` when the store cannot list."""
        if not any(EventType.EXPIRED in e.events for e in self._config().settings.notify):
            return 0
        live = await self._store.list_approvals()
        expired = self._watch.update(live, to_us(self._clock.now().timestamp()))
        for record in expired:
            self.emit(ApprovalEvent(EventType.EXPIRED, record))
        return len(expired)

    async def _sweep_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._sweep_interval_s)
            if self._stopping.is_set():
                return
            try:
                await self.sweep()
            except StoreUnavailable as error:
                log.warning("notify: expiry sweep: %s", error)
            except Exception:
                log.exception("notify: expiry sweep failed")
