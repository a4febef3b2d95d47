"""A `Store` that counts its failures (`authz_store_errors_total{operation}`,
docs/operations/store.md#store).

The server wraps whatever `--store` opened in this, so that the Check path, the admin API
and the readiness probe are all counted without any of them knowing about metrics. With
tracing on, each call but the in-memory revocation lookup of every Check is also a child
span of the Check (`store.<operation>`), through the `span` factory the server passes in
(this layer knows nothing of tracing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

from authz_server.core.errors import StoreUnavailable
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.state.events import ApprovalEvents
from authz_server.state.store import (
    ApprovalRecord,
    Consumed,
    Decided,
    PendingAction,
    RateResult,
    Revocation,
    Store,
)

__all__ = ["ObservedStore", "SpanFactory", "no_span"]

_T = TypeVar("_T")

#: `span(name)` → a context manager around one store call (a tracing span, or nothing).
SpanFactory = Callable[[str], AbstractContextManager[object]]

_NO_SPAN = nullcontext()


def no_span(name: str) -> AbstractContextManager[object]:
    return _NO_SPAN


class ObservedStore:
    """Passes every call to `inner`; reports each `StoreUnavailable` to `on_error(op)`
    and runs each call inside `span("store." + op)`."""

    def __init__(
        self, inner: Store, on_error: Callable[[str], None], span: SpanFactory = no_span
    ) -> None:
        self.inner = inner
        self.shared = inner.shared
        self._on_error = on_error
        self._span = span

    @property
    def events(self) -> ApprovalEvents:
        """The inner store's event sink (one sink, whichever wrapper attaches it)."""
        return self.inner.events

    @events.setter
    def events(self, events: ApprovalEvents) -> None:
        self.inner.events = events

    async def _call(self, operation: str, call: Awaitable[_T]) -> _T:
        with self._span("store." + operation):
            try:
                return await call
            except StoreUnavailable:
                self._on_error(operation)
                raise

    async def start(self) -> None:
        await self.inner.start()

    async def ping(self) -> None:
        await self._call("ping", self.inner.ping())

    async def close(self) -> None:
        await self.inner.close()

    async def consume(self, action: PendingAction) -> Consumed:
        return await self._call("consume", self.inner.consume(action))

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        return await self._call("get_approval", self.inner.get_approval(approval_id))

    async def list_approvals(self, limit: int = 1000) -> list[ApprovalRecord]:
        return await self._call("list_approvals", self.inner.list_approvals(limit))

    async def approve(self, approval_id: str, approver: str) -> Decided:
        return await self._call("approve", self.inner.approve(approval_id, approver))

    async def reject(self, approval_id: str, approver: str) -> Decided:
        return await self._call("reject", self.inner.reject(approval_id, approver))

    async def claim_once(self, key: str, ttl_s: float) -> bool:
        return await self._call("claim", self.inner.claim_once(key, ttl_s))

    async def hit(self, key: str, limit: int, period_s: float) -> RateResult:
        return await self._call("rate_limit", self.inner.hit(key, limit, period_s))

    async def revoke(self, pattern: str, ttl_s: float, reason: str, by: str) -> Revocation:
        return await self._call("revoke", self.inner.revoke(pattern, ttl_s, reason, by))

    async def unrevoke(self, pattern: str) -> bool:
        return await self._call("unrevoke", self.inner.unrevoke(pattern))

    async def list_revocations(self) -> list[Revocation]:
        return await self._call("list_revocations", self.inner.list_revocations())

    async def revoked(self, spiffe_id: SpiffeId) -> Revocation | None:
        # Every Check comes here: no extra coroutine layer on the hot path.
        try:
            return await self.inner.revoked(spiffe_id)
        except StoreUnavailable:
            self._on_error("revoked")
            raise
