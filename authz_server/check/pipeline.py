"""The phases of one Check (docs/concepts/request-phases.md), readable top to bottom.

    view → path check → identity → match → conditions → decision

The view is built by the caller (`service.py` from protobuf, `cli.py` from flags);
rendering and auditing happen after. Nothing here touches protobufs or the network.
`evaluate` is async because the revocation check and the stateful conditions (rate limit,
approval) await the store. The store is the caller's choice: the server's (`--store`),
or a fresh in-memory one for an offline decision (`offline.py`). With tracing on, the
identity and rules phases are child spans of the Check's span (`_phase`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

from authz_server.check.snapshot import Snapshot
from authz_server.core.clock import Clock, SystemClock
from authz_server.core.decision import Decision, Reason
from authz_server.core.errors import StoreUnavailable
from authz_server.core.paths import canonical_path_problem
from authz_server.core.request import RequestView
from authz_server.identity.model import Identity
from authz_server.identity.resolve import IdentityFailure, IdentityResolver
from authz_server.identity.x509 import CertificateVerifier
from authz_server.policy.conditions.base import RequestContext
from authz_server.policy.evaluate import Trace, evaluate_rules
from authz_server.state.store import Store
from authz_server.telemetry.spans import child, tracer

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Pipeline:
    def __init__(
        self,
        store: Store,
        *,
        verifier: CertificateVerifier | None = None,
        clock: Clock | None = None,
    ) -> None:
        #: Revocations, approvals and rate counters.
        self.store = store
        self._identity = IdentityResolver(verifier or CertificateVerifier())
        self._clock = clock or SystemClock()

    async def evaluate(
        self, view: RequestView, snapshot: Snapshot, trace: Trace | None = None
    ) -> Decision:
        policy = snapshot.policy
        now = self._clock.now()  # one instant for the whole Check: certificates and schedules

        # 1. path check: non-canonical paths never reach matching
        # (docs/policy/reference.md#canonical-paths).
        if canonical_path_problem(view.path) is not None:
            return Decision(False, Reason.NON_CANONICAL_PATH)

        # 2. identity: the first of identity.sources that is present, verified; a present
        # source that fails is a deny (docs/concepts/identity.md#sources,
        # docs/concepts/identity.md#verification; identity/resolve.py). Then the store's
        # revocations, for the caller and for a proxy that vouches for it.
        identified = await _phase("identity", self._identify(view, snapshot, now))
        if isinstance(identified, Decision):
            return identified
        identity, note = identified

        # 3 + 4. match through the compiled index, then each candidate's conditions;
        # deny rules before allow rules. The body is parsed only if a candidate needs it.
        spiffe_id = identity.spiffe_id if identity else None
        ctx = RequestContext(
            view.method,
            view.host,
            view.path,
            query=view.query,
            headers=view.headers,
            body=view.body,
            spiffe_id=spiffe_id,
            now=now,
            store=self.store,
        )
        verdict = await _phase("rules", evaluate_rules(policy, ctx, trace))

        # 5. decision
        rule_id = verdict.rule.id if verdict.rule else None
        principal = str(spiffe_id) if spiffe_id else None
        source = identity.source if identity else None
        if identity is None and verdict.rule is None:
            # Only rules that admit anonymous callers (`unauthenticated: true`, or a deny
            # rule for everyone) speak for a caller without identity; no default does.
            return Decision(False, Reason.NO_IDENTITY, identity_note=note)
        return Decision(
            verdict.allowed,
            verdict.reason,
            rule=rule_id,
            principal=principal,
            identity_source=source,
            dry_run=verdict.dry_run,
            approval_id=verdict.approval_id,
            retry_after=verdict.retry_after,
            approver=verdict.approver,
            identity_note=note,
            enforced_rule=verdict.enforced_rule.id if verdict.enforced_rule else None,
        )

    async def authenticate_connection(self, view: RequestView, snapshot: Snapshot) -> Decision:
        """Judge a CheckRequest without HTTP attributes (Istio's TCP filter), for policies
        that opt in with `defaults.non_http: allow`: there is no route to match, so the
        caller needs a verified, unrevoked identity and nothing more."""
        identified = await _phase("identity", self._identify(view, snapshot, self._clock.now()))
        if isinstance(identified, Decision):
            return identified
        identity, note = identified
        if identity is None:
            return Decision(False, Reason.NO_IDENTITY, identity_note=note)
        return Decision(
            True,
            Reason.ALLOWED_BY_DEFAULT,
            principal=str(identity.spiffe_id),
            identity_source=identity.source,
            identity_note=note,
        )

    async def _identify(
        self, view: RequestView, snapshot: Snapshot, now: datetime
    ) -> tuple[Identity | None, str | None] | Decision:
        """The verified identity (None: anonymous) and its audit note, or the deny."""
        try:
            policy = snapshot.policy
            resolved = self._identity.resolve(
                view, policy.identity, snapshot.bundles, now, policy.authzen.trusted_peps
            )
        except IdentityFailure as failure:
            return Decision(
                False,
                failure.reason,
                principal=failure.principal,
                identity_source=failure.source,
                identity_note=failure.note,
            )
        # The proxy: a trusted XFCC proxy, or the AuthZEN caller that vouches for another.
        for checked in (resolved.proxy, resolved.identity):
            if checked is not None:
                revoked = await self._revoked(checked, resolved.note)
                if revoked is not None:
                    return revoked
        return resolved.identity, resolved.note

    async def _revoked(self, identity: Identity, note: str | None) -> Decision | None:
        """A deny when the store revokes `identity` or cannot say (fail closed)."""
        try:
            revocation = await self.store.revoked(identity.spiffe_id)
        except StoreUnavailable as error:
            log.error("revocations unavailable, denying %s: %s", identity.spiffe_id, error)
            reason = Reason.INTERNAL_ERROR
        else:
            if revocation is None:
                return None
            reason = Reason.REVOKED
        return Decision(
            False,
            reason,
            principal=str(identity.spiffe_id),
            identity_source=identity.source,
            identity_note=note,
        )


def _phase(name: str, work: Awaitable[_T]) -> Awaitable[_T]:
    """`work` as a child span `name` of a traced Check; `work` itself while tracing is off
    (one check of a global: no context manager on the untraced Check path)."""
    return work if tracer() is None else _in_child(name, work)


async def _in_child(name: str, work: Awaitable[_T]) -> _T:
    with child(name):
        return await work


__all__ = ["Identity", "Pipeline"]
