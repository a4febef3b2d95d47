"""The phases of one Check (SPEC §2), readable top to bottom.

    view → path check → identity → match → conditions → decision

The view is built by the caller (`service.py` from protobuf, `cli.py` from flags);
rendering and auditing happen after. Nothing here touches protobufs or the network.
`evaluate` is async because a stateful condition (rate limit, approval) awaits its store;
everything before that point runs without yielding to the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz_server.clock import Clock, SystemClock
from authz_server.decision import Decision, Reason
from authz_server.errors import IdentityError
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.peer import Identity, PeerIdentity
from authz_server.identity.x509 import CertificateVerifier
from authz_server.paths import canonical_path_problem
from authz_server.policy.conditions.base import RequestContext
from authz_server.policy.evaluate import Trace, evaluate_rules
from authz_server.policy.model import Policy
from authz_server.request import RequestView


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The policy and bundles one Check runs against; replaced whole on reload."""

    policy: Policy
    bundles: TrustBundles


class Pipeline:
    def __init__(
        self,
        verifier: CertificateVerifier | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._peer = PeerIdentity(verifier or CertificateVerifier())
        self._clock = clock or SystemClock()

    async def evaluate(
        self, view: RequestView, snapshot: Snapshot, trace: Trace | None = None
    ) -> Decision:
        policy = snapshot.policy
        now = self._clock.now()  # one instant for the whole Check: certificates and schedules

        # 1. path check: non-canonical paths never reach matching (SPEC §5.3).
        if canonical_path_problem(view.path) is not None:
            return Decision(False, Reason.NON_CANONICAL_PATH)

        # 2. identity: verify what the peer claims; any failure is a deny (SPEC §4.2).
        try:
            identity = self._peer.resolve(view, policy.identity, snapshot.bundles, now)
        except IdentityError as error:
            return Decision(
                False, error.reason, principal=view.principal or None, identity_source="peer"
            )

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
        )
        verdict = await evaluate_rules(policy, ctx, trace)

        # 5. decision
        rule_id = verdict.rule.id if verdict.rule else None
        principal = str(spiffe_id) if spiffe_id else None
        source = identity.source if identity else None
        if identity is None and verdict.rule is None:
            # Only rules that admit anonymous callers (`unauthenticated: true`, or a deny
            # rule for everyone) speak for a caller without identity; no default does.
            return Decision(False, Reason.NO_IDENTITY)
        return Decision(
            verdict.allowed,
            verdict.reason,
            rule=rule_id,
            principal=principal,
            identity_source=source,
            dry_run=verdict.dry_run,
        )


__all__ = ["Identity", "Pipeline", "Snapshot"]
