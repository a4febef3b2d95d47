"""Replay recorded decisions against a candidate policy (`authz-server replay`).

Each decision record is turned back into a request (principal, method, host, path) and
decided offline (`offline.decide_offline`, as `authz-server check` decides) at the moment
it was recorded: the principal taken as already verified, on empty state. The result is
compared with what was recorded: decision, reason, rule and dry-run flag.

Records of the AuthZEN API (`api: authzen`) are replayed the same way, with the caller
that vouched for the principal (`vouched_by`): a candidate policy that no longer lists
that caller in `authzen.trusted_peps` denies `subject_not_caller`, a certain change.

What an audit record does not hold, replay cannot judge exactly:

- headers, query and body are not recorded (the log must not hold them), so `when`
  conditions on them see nothing; the certificate is not recorded, so certificate
  verification is not replayed and `require_certificate` is only applied to requests
  that were denied `certificate_required` (they came without one);
- state is not replayed: approvals, rate counters and admin revocations. Each record is
  decided on empty state, so a rate limit admits it and an approval is still required.

So a difference is *uncertain* when the recorded reason depended on state or unrecorded
input, or the candidate's reason does (see `_UNCERTAIN_*`); it is listed apart, and only
certain changes make `replay` exit 1 unless `--strict` is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from authz_server.audit.log import MARKER
from authz_server.check.offline import decide_offline, offline_snapshot
from authz_server.check.snapshot import Snapshot
from authz_server.core.decision import Decision, Reason
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.conditions.base import Condition, StatefulCondition
from authz_server.policy.conditions.kinds import Reads, kind_of
from authz_server.policy.model import Policy, Rule

__all__ = ["Change", "Outcome", "ReplayReport", "replay_audit"]

#: Recorded reasons that came from something other than policy and the recorded fields.
_UNCERTAIN_RECORDED = frozenset(
    {
        Reason.REVOKED,  # admin revocations are state
        Reason.APPROVAL_REQUIRED,
        Reason.APPROVAL_DENIED,
        Reason.RATE_LIMITED,
        Reason.CONDITION_FAILED,
        Reason.BODY_UNAVAILABLE,
    }
)
#: Candidate reasons that replay cannot establish without the request's headers, body or state.
_UNCERTAIN_REPLAYED = frozenset(
    {
        Reason.APPROVAL_REQUIRED,
        Reason.APPROVAL_DENIED,
        Reason.RATE_LIMITED,
        Reason.CONDITION_FAILED,
        Reason.BODY_UNAVAILABLE,
    }
)
#: Recorded outcomes replay does not re-decide, and why.
_NOT_REPLAYED = {
    Reason.INTERNAL_ERROR: "server error at the time (internal_error)",
    Reason.CERTIFICATE_INVALID: "certificate verification is not replayed",
    Reason.CERTIFICATE_MISMATCH: "certificate verification is not replayed",
    Reason.MALFORMED_REQUEST: "no request recorded (malformed or non-HTTP Check)",
    Reason.UNSUPPORTED_REQUEST: "no request recorded (malformed or non-HTTP Check)",
}

MISSING_FIELDS_NOTE = (
    "audit records hold no headers, query, body or certificate, and replay keeps no "
    "approvals, rate counters or admin revocations: decisions that depend on them are "
    "listed as uncertain"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: str
    reason: str
    rule: str | None
    dry_run: bool

    def __str__(self) -> str:
        mode = " (dry run)" if self.dry_run else ""
        return f"{self.decision}{mode} {self.reason} [{self.rule or '-'}]"


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded decision the candidate policy decides differently."""

    file: str
    line: int
    record: dict[str, Any]
    old: Outcome
    new: Outcome

    @property
    def request(self) -> str:
        r = self.record
        who = r.get("principal") or "(no identity)"
        return f"{who} {r.get('method')} {r.get('host') or '-'} {r.get('path')}"


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    unchanged: int = 0
    changes: list[Change] = field(default_factory=list)
    uncertain: list[Change] = field(default_factory=list)
    #: Why decision records were not replayed, with counts.
    skipped: Counter[str] = field(default_factory=Counter)


def _recorded(record: dict[str, Any]) -> Outcome:
    return Outcome(
        str(record.get("decision")),
        str(record.get("reason")),
        record.get("rule"),
        bool(record.get("dry_run")),
    )


def _outcome(decision: Decision) -> Outcome:
    return Outcome(decision.verdict, decision.reason.value, decision.rule, decision.dry_run)


def _skip_reason(record: dict[str, Any]) -> str | None:
    try:
        reason = Reason(str(record.get("reason")))
    except ValueError:
        return "unknown reason code"
    if reason in _NOT_REPLAYED:
        return _NOT_REPLAYED[reason]
    if not isinstance(record.get("method"), str) or not isinstance(record.get("path"), str):
        return "no request recorded (malformed or non-HTTP Check)"
    try:
        datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return "no valid time recorded"
    return None


def replay_audit(policy: Policy, paths: Sequence[str | Path]) -> ReplayReport:
    """Evaluate every replayable decision record in `paths` with `policy`."""
    return asyncio.run(_replay(policy, paths))


async def _replay(policy: Policy, paths: Sequence[str | Path]) -> ReplayReport:
    # The principal stands for an identity that was verified when the request was made;
    # only requests that came without a certificate are held to `require_certificate`.
    snapshots = {
        False: offline_snapshot(policy),
        True: Snapshot(
            dataclasses.replace(
                policy, identity=dataclasses.replace(policy.identity, sources=("peer",))
            ),
            TrustBundles.empty(),
        ),
    }
    # No state is replayed: each record is decided on empty state, and a rule with a rate
    # limit or an approval makes any difference uncertain.
    report = ReplayReport()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    report.skipped["unreadable line"] += 1
                    continue
                if not isinstance(record, dict) or record.get("type") == MARKER:
                    continue
                why = _skip_reason(record)
                if why is not None:
                    report.skipped[why] += 1
                    continue
                at = datetime.fromisoformat(record["time"])
                view = RequestView(
                    method=record["method"],
                    host=record.get("host") or "",
                    path=record["path"],
                    principal=record.get("principal") or "",
                    request_id=record.get("request_id") or "",
                    vouched_by=_vouched_by(record),
                )
                no_certificate = record["reason"] == Reason.CERTIFICATE_REQUIRED
                decision = await decide_offline(snapshots[no_certificate], view, at)
                _compare(report, policy, str(path), number, record, decision)
    return report


def _vouched_by(record: dict[str, Any]) -> str:
    """The AuthZEN caller that vouched for the principal; "" for a Check record."""
    vouched_by = record.get("vouched_by")
    return vouched_by if isinstance(vouched_by, str) else ""


def _needs_unrecorded(rule: Rule | None) -> bool:
    """True when the rule's outcome may depend on headers, query, body or state.

    A schedule depends only on the time, which is recorded.
    """
    if rule is None:
        return False
    conditions: list[Condition | StatefulCondition] = [*rule.when.stateless, *rule.when.stateful]
    return rule.mcp_tools is not None or any(kind_of(c).reads & ~Reads.TIME for c in conditions)


def _compare(
    report: ReplayReport,
    policy: Policy,
    file: str,
    line: int,
    record: dict[str, Any],
    decision: Decision,
) -> None:
    report.replayed += 1
    old, new = _recorded(record), _outcome(decision)
    if old == new:
        report.unchanged += 1
        return
    change = Change(file, line, record, old, new)
    rules = {rule.id: rule for rule in policy.rules if rule.id in (old.rule, new.rule)}
    uncertain = (
        Reason(old.reason) in _UNCERTAIN_RECORDED
        or decision.reason in _UNCERTAIN_REPLAYED
        or any(_needs_unrecorded(rule) for rule in rules.values())
    )
    (report.uncertain if uncertain else report.changes).append(change)
