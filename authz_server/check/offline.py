"""Offline decisions: `authz-server check`, `authz-server test`, `authz-server replay` and
the admin API's `Explain` all decide through `decide_offline`, so they agree.

An offline decision is the server's own `Pipeline` on a described request, with the same
two differences for all four:

- The principal is taken as verified: there is no certificate to check, so the policy's
  identity is `offline_policy`'s (peer only, no certificate required).
- State is never the server's. Each decision runs against a fresh in-memory store of its
  own, as the first request on a server that has no state: no revocations, no approvals,
  empty rate counters. So stateful conditions are evaluated, not skipped: a rate limit
  admits the request, and an approval answers `approval_required` with the approval id
  the server would give (nothing is granted offline, and the pending record is dropped
  with the store). Nothing is read from or written to a real store: explaining a
  request never spends an approval, counts against a limit or creates a pending record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.clock import FixedClock, SystemClock
from authz_server.core.decision import Decision
from authz_server.core.request import RequestView, normalize_host, split_path
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.evaluate import Trace
from authz_server.policy.model import Policy
from authz_server.state.memory import MemoryStore

__all__ = ["OfflineRequest", "decide_offline", "offline_policy", "offline_snapshot", "parse_at"]


@dataclass(frozen=True, slots=True)
class OfflineRequest:
    """A described request, as `check` flags or a test case give it."""

    path: str
    method: str = "GET"
    principal: str = ""
    host: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    at: datetime | None = None

    def view(self) -> RequestView:
        headers: dict[str, str] = {}
        for name, value in self.headers:
            key = name.strip().lower()
            # Envoy joins a repeated header with ",": judge what Envoy would send.
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        if self.body is not None:
            headers.setdefault("content-type", "application/json")
        path, query = split_path(self.path)
        return RequestView(
            method=self.method.upper(),
            host=normalize_host(self.host),
            path=path,
            query=query,
            headers=headers,
            body=self.body,
            principal=self.principal,
        )


def offline_policy(policy: Policy) -> Policy:
    """Offline, the principal stands for an identity Envoy and the certificate check
    already established: there is no certificate to require."""
    return dataclasses.replace(policy, identity=policy.identity.offline())


def offline_snapshot(policy: Policy, bundles: TrustBundles | None = None) -> Snapshot:
    """`policy` as offline decisions apply it, with `bundles` (none by default)."""
    return Snapshot(offline_policy(policy), bundles or TrustBundles.empty())


async def decide_offline(
    snapshot: Snapshot,
    view: RequestView,
    at: datetime | None = None,
    trace: Trace | None = None,
) -> Decision:
    """The decision the server would make for `view` at `at` (None: now), on empty state.

    `snapshot` is usually `offline_snapshot(policy)`; replay narrows the identity further
    for requests that came without a certificate.
    """
    clock = FixedClock(at) if at is not None else SystemClock()
    pipeline = Pipeline(MemoryStore(clock), clock=clock)
    return await pipeline.evaluate(view, snapshot, trace)


def parse_at(text: str) -> datetime:
    """ISO 8601 with a UTC offset; ValueError otherwise."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not ISO 8601") from None
    if at.tzinfo is None:
        raise ValueError(f"{text!r} needs a UTC offset, e.g. 2026-11-28T10:00:00+01:00")
    return at
