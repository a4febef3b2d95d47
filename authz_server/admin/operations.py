"""What an authenticated admin may do, whatever the transport (gRPC API or web console).

The transports authenticate the caller (`auth.authenticate`) and turn refusals into their
own status codes; everything else is here, once: the admin gate, who may decide an
approval, the checks on arguments, the store calls, and the admin log line that records
who did what. Every line is logged at INFO or above on `authz_server.admin.operations`.

Approve and Reject check the rule's approvers against the policy in force *now* (through
`approvers_for`), not the patterns copied into the record when the request was first seen.
A decision is announced to `store.events` (`approved` / `rejected`, for the notifier).
Every failure raises `Refused` (a message safe to show the caller) or `StoreUnavailable`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

import grpc

from authz_server.admin.auth import (
    Caller,
    Refused,
    authorize_admin,
    authorize_approver,
    check_not_revoked,
)
from authz_server.core.errors import quote
from authz_server.identity.patterns import PrincipalMatcher, compile_principal_pattern
from authz_server.policy.model import Policy
from authz_server.state.events import ApprovalEvent, EventType
from authz_server.state.store import ApprovalRecord, DecideOutcome, Revocation, Store

__all__ = [
    "MAX_REVOCATION_TTL_S",
    "AdminOperations",
    "ApproversFor",
    "check_approval_id",
    "not_found_message",
]

log = logging.getLogger(__name__)

#: The approver patterns of a rule in the policy in force; empty when it has none.
ApproversFor = Callable[[str], Sequence[PrincipalMatcher]]

MAX_REVOCATION_TTL_S = 10 * 365 * 24 * 3600
_APPROVAL_ID = re.compile(r"[0-9a-f]{64}")


def check_approval_id(approval_id: str) -> None:
    """Refuse (INVALID_ARGUMENT) anything but the 64 lower-case hex characters of an id."""
    if not _APPROVAL_ID.fullmatch(approval_id):
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"approval id {quote(approval_id)} is not 64 lower-case hex characters",
        )


def not_found_message(approval_id: str) -> str:
    return f"no live approval {approval_id} (unknown, expired, or already used)"


class AdminOperations:
    """The admin operations over one store, each taking an authenticated `Caller`."""

    def __init__(self, store: Store, approvers_for: ApproversFor) -> None:
        self._store = store
        self._approvers_for = approvers_for

    async def admit(self, caller: Caller, policy: Policy) -> None:
        """The gate before any operation: an admin of `policy`, not denied, not revoked."""
        authorize_admin(caller, policy)
        await check_not_revoked(caller, self._store)

    def approvers(self, rule_id: str) -> Sequence[PrincipalMatcher]:
        """Who may decide approvals of `rule_id` under the policy in force."""
        return self._approvers_for(rule_id)

    async def list_approvals(self, caller: Caller) -> list[ApprovalRecord]:
        """The live approval records, newest first."""
        return await self._store.list_approvals()

    async def get_approval(self, caller: Caller, approval_id: str) -> ApprovalRecord | None:
        """One live approval record; None when unknown, expired or already used."""
        check_approval_id(approval_id)
        return await self._store.get_approval(approval_id)

    async def approve(self, caller: Caller, approval_id: str, reason: str = "") -> ApprovalRecord:
        return await self.decide(caller, approval_id, approve=True, reason=reason)

    async def reject(self, caller: Caller, approval_id: str, reason: str = "") -> ApprovalRecord:
        return await self.decide(caller, approval_id, approve=False, reason=reason)

    async def decide(
        self, caller: Caller, approval_id: str, *, approve: bool, reason: str = ""
    ) -> ApprovalRecord:
        """Approve or reject a pending approval as `caller`; the record as decided.

        The caller must be an approver of the rule in the policy in force, and may not
        approve the action it requested itself (separation of duties).
        """
        check_approval_id(approval_id)
        record = await self._store.get_approval(approval_id)
        if record is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, not_found_message(approval_id))
        requester = record.principal if approve else None
        authorize_approver(caller, record.rule_id, self._approvers_for(record.rule_id), requester)
        decided = await (self._store.approve if approve else self._store.reject)(
            approval_id, caller.name
        )
        if decided.outcome is DecideOutcome.NOT_FOUND or decided.record is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, not_found_message(approval_id))
        if decided.outcome is DecideOutcome.NOT_PENDING:
            raise Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"approval {approval_id} was already {decided.record.status.value} "
                f"by {decided.record.decided_by}",
            )
        # Announced without awaiting (`store.events`): a notification never delays a decision.
        decided_type = EventType.APPROVED if approve else EventType.REJECTED
        self._store.events.emit(ApprovalEvent(decided_type, decided.record))
        log.info(
            "admin: %s %s approval %s (rule %s, %s %s%s for %s)%s",
            caller.name, decided.record.status.value, approval_id, record.rule_id,
            record.method, record.host, record.path, record.principal, _because(reason),
        )  # fmt: skip
        return decided.record

    async def revoke(
        self, caller: Caller, pattern: str, ttl_seconds: int, reason: str
    ) -> Revocation:
        """Revoke every identity `pattern` matches for `ttl_seconds`."""
        if not 0 < ttl_seconds <= MAX_REVOCATION_TTL_S:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"ttl_seconds must be between 1 and {MAX_REVOCATION_TTL_S}, got {ttl_seconds}",
            )
        revocation = await self._store.revoke(pattern, float(ttl_seconds), reason, caller.name)
        log.warning("admin: %s revoked %s for %ds: %s", caller.name, pattern, ttl_seconds, reason)
        return revocation

    async def unrevoke(self, caller: Caller, pattern: str) -> bool:
        """Lift the revocation of exactly `pattern`; False when there was none."""
        compile_principal_pattern(pattern)  # ValueError: not a pattern at all
        removed = await self._store.unrevoke(pattern)
        if removed:
            log.warning("admin: %s lifted the revocation of %s", caller.name, pattern)
        return removed

    async def list_revocations(self, caller: Caller) -> list[Revocation]:
        return await self._store.list_revocations()


def _because(reason: str) -> str:
    return f": {reason}" if reason else ""
