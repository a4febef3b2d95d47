"""Rule evaluation (docs/policy/reference.md#evaluation): deny before allow, conditions, dry run;
order-independent.

Candidates come from the compiled route index, so the work here is proportional to the
rules that match the request's host, method and path, never to the size of the policy.
Then, per candidate: principals, `mcp_tools`, and the stateless `when` conditions
(deny rules first; allow rules are not even evaluated once an enforced deny applies).
Stateful conditions (a store: rate limits, approvals) run last, in rule-id order, only
for enforced allow rules whose stateless conditions hold, and stop at the first rule
that grants, so no state is touched for a request that is refused anyway.

1. An enforced deny rule whose `when` holds → deny `denied_by_rule`; one whose `when`
   cannot be judged (body unavailable, evaluation error) → deny with that reason.
2. An allow rule whose `when` holds → allow `allowed_by_rule`.
3. Allow rules that matched but whose conditions failed → deny with the most specific
   reason (`conditions.base.precedence`).
4. Otherwise the default.

Whenever several rules qualify, the most specific reason and then the smallest rule id
is reported, so neither rule order nor file order can change a decision.

Dry run is observed, never enforced, and never grants. A rule's mode is its `mode`, else
`defaults.mode`. The request is evaluated twice over the same condition results:

- enforced: steps 1-4 with the `enforce` rules only. Under `defaults.mode: dry_run`
  (an observe-only policy) step 4 is an allow: what the enforced rules leave undecided
  is let through. A caller without identity is never admitted by a default.
- would-be: steps 1-4 with every rule, as if all were enforced. Stateful conditions are
  evaluated only for the enforced outcome: a dry-run rule's rate limit or approval is
  listed `not_evaluated` and counts as holding; an enforced rule's result is reused.

An enforced deny is the verdict, whatever dry-run rules say. An enforced allow whose
would-be is a deny becomes that would-be deny flagged `dry_run` (enforced as allow),
with `enforced_rule` naming the rule that grants (None: a default). Otherwise the
enforced allow is the verdict. So a dry-run deny rule rolls out a new deny, and a
dry-run allow rule only ever adds what it would grant or refuse to the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from authz_server.core.decision import Reason
from authz_server.core.values import frozen
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.policy.conditions.base import (
    HOLDS,
    ConditionResult,
    Outcome,
    RequestContext,
)
from authz_server.policy.conditions.base import step as condition_step
from authz_server.policy.conditions.kinds import precedence
from authz_server.policy.conditions.mcp import McpMatch
from authz_server.policy.model import Effect, Mode, Policy, Rule

__all__ = ["Trace", "Verdict", "evaluate_rules", "principal_captures"]


@frozen
class Verdict:
    """What the rules say, before identity and rendering are folded in."""

    allowed: bool
    reason: Reason
    rule: Rule | None
    #: True: `allowed`, `reason` and `rule` are the would-be decision of a request the
    #: enforced rules allow; it is enforced as allow (see the module docstring).
    dry_run: bool = False
    #: Why a condition did not hold (for explain and logs; never a request secret).
    detail: str = ""
    #: From a stateful condition: the approval asked for or used, its approver, and when
    #: a rate-limited caller may retry.
    approval_id: str | None = None
    approver: str | None = None
    retry_after: int | None = None
    #: With `dry_run`: the enforced rule that grants the request; None for a default.
    enforced_rule: Rule | None = None


@dataclass(slots=True)
class Trace:
    """An explain trace: the rules considered and what each of their conditions said,
    then one last step (`rule` null) with the enforced and the would-be outcome."""

    steps: list[dict[str, object]] = field(default_factory=list)

    def add(self, rule: Rule, outcome: str, **details: object) -> dict[str, object]:
        entry: dict[str, object] = {
            "rule": rule.id,
            "effect": rule.effect.value,
            "outcome": outcome,
            **details,
        }
        self.steps.append(entry)
        return entry

    def outcomes(self, enforced: Verdict, would_be: Verdict) -> None:
        self.steps.append(
            {
                "rule": None,
                "outcome": "decided",
                "enforced": _outcome(enforced),
                "would_be": _outcome(would_be),
            }
        )


def _outcome(verdict: Verdict) -> dict[str, object]:
    return {
        "decision": "allow" if verdict.allowed else "deny",
        "reason": verdict.reason.value,
        "rule": verdict.rule.id if verdict.rule else None,
    }


@dataclass(slots=True)
class _Candidate:
    """A rule whose route, principals and `mcp_tools` matched, with its captures."""

    rule: Rule
    params: Mapping[str, str]
    dry_run: bool
    mcp: ConditionResult = HOLDS
    result: ConditionResult = HOLDS
    step: dict[str, object] | None = None


def principal_captures(
    rule: Rule, spiffe_id: SpiffeId | None, params: Mapping[str, str]
) -> Mapping[str, str] | None:
    """Captures when the caller fits the rule's principals and agrees with path captures."""
    if spiffe_id is None:
        # Anonymous callers match only rules that say so; a deny rule naming no
        # principals applies to everyone, anonymous included (fail closed).
        if rule.unauthenticated or (rule.effect is Effect.DENY and rule.principals is None):
            return params
        return None
    for pattern in rule.not_principals:
        if pattern.match(spiffe_id) is not None:
            return None
    if rule.principals is None:
        return params
    for pattern in rule.principals:
        captures = pattern.match(spiffe_id)
        if captures is None:
            continue
        if not captures:
            return params
        if all(params.get(name, value) == value for name, value in captures.items()):
            return {**params, **captures}
    return None


async def evaluate_rules(
    policy: Policy, ctx: RequestContext, trace: Trace | None = None
) -> Verdict:
    """Apply steps 2 to 5 of docs/policy/reference.md#evaluation to one request whose identity is
    settled."""
    denies: list[_Candidate] = []
    allows: list[_Candidate] = []
    # Without dry run anywhere the would-be decision is the enforced one (`_would_be`).
    observing = policy.default_mode is Mode.DRY_RUN
    for match in policy.index.candidates(ctx.method, ctx.host, ctx.path):
        rule = match.rule
        dry_run = (rule.mode or policy.default_mode) is Mode.DRY_RUN
        observing = observing or dry_run
        mode = "dry_run" if dry_run else "enforce"
        params = principal_captures(rule, ctx.spiffe_id, match.params)
        if params is None:
            if trace is not None:
                trace.add(rule, "principal_mismatch", mode=mode)
            continue
        candidate = _Candidate(rule, params, dry_run)
        if rule.mcp_tools is not None and not _mcp(candidate, ctx, trace, mode):
            continue
        if trace is not None:
            candidate.step = trace.add(rule, "matched", mode=mode, params=dict(params))
        (denies if rule.effect is Effect.DENY else allows).append(candidate)

    # Deny rules carry no stateful conditions (a load error: `conditions/when.py`).
    for candidate in denies:
        _judge(candidate, ctx)
    enforced = _deny_verdict([c for c in denies if not c.dry_run]) if denies else None
    if enforced is not None:
        for candidate in allows:
            _skipped(candidate, "an enforced deny rule applies")
    else:
        for candidate in allows:
            _judge(candidate, ctx)
            if candidate.dry_run and candidate.result.holds and candidate.rule.when.stateful:
                # A dry-run rule never touches state: its rate limit or approval is
                # listed as not evaluated and counts as holding (for the would-be).
                await _stateful(candidate, ctx, dry_run=True)
        if allows:
            # Without dry run anywhere every candidate is enforced: no copy to filter.
            enforcing = [c for c in allows if not c.dry_run] if observing else allows
            enforced = _plain_grant(enforcing) or await _allow_verdict(enforcing, ctx)
        if enforced is None:
            enforced = _default(policy, ctx, enforced=True)

    if not enforced.allowed:
        # A dry-run rule never turns a deny into an allow: the would-be is for the trace.
        if trace is not None:
            trace.outcomes(enforced, _would_be(policy, ctx, denies, allows, enforced))
        return enforced
    if not observing and trace is None:
        return enforced
    would_be = _would_be(policy, ctx, denies, allows, enforced)
    if trace is not None:
        trace.outcomes(enforced, would_be)
    if would_be.allowed:
        return enforced
    # Enforced as allow; recorded as the deny it would be once every rule is enforced.
    return Verdict(
        False,
        would_be.reason,
        would_be.rule,
        dry_run=True,
        detail=would_be.detail,
        approval_id=enforced.approval_id,
        approver=enforced.approver,
        enforced_rule=enforced.rule,
    )


def _would_be(
    policy: Policy,
    ctx: RequestContext,
    denies: list[_Candidate],
    allows: list[_Candidate],
    enforced: Verdict,
) -> Verdict:
    """The evaluation of docs/policy/reference.md#evaluation with every rule enforced, over the
    enforced evaluation's results."""
    deny = _deny_verdict(denies)
    if deny is not None:
        return deny
    if enforced.allowed and enforced.rule is not None:
        return enforced  # an enforced rule grants; more rules can only add grants
    # Every allow candidate has its final result here: an enforced one that held would
    # have granted, and a dry-run one's stateful conditions count as holding.
    holding = [c for c in allows if c.result.holds]
    if holding:
        return Verdict(True, Reason.ALLOWED_BY_RULE, min(holding, key=_rule_id).rule)
    return _failed_verdict(allows) or _default(policy, ctx, enforced=False)


def _mcp(candidate: _Candidate, ctx: RequestContext, trace: Trace | None, mode: str) -> bool:
    """Whether the rule stays a candidate after `mcp_tools`; records what could not be read."""
    rule = candidate.rule
    assert rule.mcp_tools is not None
    match, detail = rule.mcp_tools.match(ctx)
    deny = rule.effect is Effect.DENY
    if match is McpMatch.NO_MATCH or (match is McpMatch.AMBIGUOUS and not deny):
        if trace is not None:
            trace.add(rule, "mcp_tool_mismatch", mode=mode, detail=detail)
        return False
    if match is McpMatch.UNREADABLE:
        # An allow rule cannot grant on a body it cannot read; a deny rule cannot be
        # dodged by one (fail closed either way).
        candidate.mcp = ConditionResult.unknown(Reason.BODY_UNAVAILABLE, detail)
    return True


def _judge(candidate: _Candidate, ctx: RequestContext) -> None:
    """Evaluate the candidate's stateless conditions into `candidate.result`."""
    when = candidate.rule.when
    if not when.stateless and candidate.step is None and candidate.mcp.holds:
        candidate.result = HOLDS  # nothing to judge, nothing to record
        return
    steps: list[dict[str, object]] | None = None
    if candidate.step is not None:
        steps = []
        candidate.step["conditions"] = steps
        if not candidate.mcp.holds:
            steps.append(condition_step("mcp_tools", candidate.mcp))
    result = when.check(ctx, candidate.params, steps)
    # An unreadable MCP body counts like a condition that cannot be judged, unless a
    # condition definitely fails (then a deny rule does not apply anyway).
    mcp = candidate.mcp
    if not mcp.holds and (
        result.holds
        or (
            result.outcome is Outcome.UNKNOWN and precedence(mcp.reason) > precedence(result.reason)
        )
    ):
        result = mcp
    candidate.result = result
    _record(candidate)


async def _stateful(candidate: _Candidate, ctx: RequestContext, *, dry_run: bool = False) -> None:
    steps: list[dict[str, object]] | None = None
    if candidate.step is not None:
        listed = candidate.step.setdefault("conditions", [])
        assert isinstance(listed, list)
        steps = listed
    when = candidate.rule.when
    candidate.result = await when.check_stateful(ctx, candidate.params, steps, dry_run=dry_run)
    _record(candidate)


def _record(candidate: _Candidate) -> None:
    if candidate.step is None:
        return
    candidate.step["when"] = candidate.result.outcome.value
    if candidate.result.reason is not None:
        candidate.step["reason"] = candidate.result.reason.value


def _skipped(candidate: _Candidate, why: str) -> None:
    if candidate.step is not None:
        candidate.step["when"] = "not_evaluated"
        candidate.step["detail"] = why


def _deny_verdict(denies: list[_Candidate]) -> Verdict | None:
    """The deny that applies: a holding rule, else the most specific unjudgeable one."""
    holding = [c for c in denies if c.result.holds]
    if holding:
        best = min(holding, key=_rule_id)
        return Verdict(False, Reason.DENIED_BY_RULE, best.rule)
    unknown = [c for c in denies if c.result.outcome is Outcome.UNKNOWN]
    if unknown:
        best = min(unknown, key=_specific_first)
        reason = best.result.deny_reason or best.result.reason or Reason.CONDITION_FAILED
        return Verdict(False, reason, best.rule, detail=best.result.detail)
    return None


def _plain_grant(allows: list[_Candidate]) -> Verdict | None:
    """Step 2 for the allow rules without stateful conditions: of those whose conditions
    hold, the first by id grants outright (no state is touched)."""
    best: _Candidate | None = None
    for candidate in allows:
        if (
            candidate.result.holds
            and not candidate.rule.when.stateful
            and (best is None or candidate.rule.id < best.rule.id)
        ):
            best = candidate
    return None if best is None else Verdict(True, Reason.ALLOWED_BY_RULE, best.rule)


async def _allow_verdict(allows: list[_Candidate], ctx: RequestContext) -> Verdict | None:
    """Steps 2 and 3 over allow rules whose stateless conditions are judged, once
    `_plain_grant` found none; None: no rule."""
    holding = [c for c in allows if c.result.holds]
    # Try the stateful ones in id order and stop at the first that grants (state is
    # touched only then).
    for candidate in sorted(holding, key=_rule_id):
        await _stateful(candidate, ctx)
        result = candidate.result
        if result.holds:
            return Verdict(
                True,
                Reason.ALLOWED_BY_RULE,
                candidate.rule,
                approval_id=result.approval_id,
                approver=result.approver,
            )
    return _failed_verdict(allows)


def _failed_verdict(allows: list[_Candidate]) -> Verdict | None:
    """Step 3: the most specific reason among allow rules that did not grant."""
    failed = [c for c in allows if not c.result.holds]
    if not failed:
        return None
    best = min(failed, key=_specific_first)
    result = best.result
    return Verdict(
        False,
        result.reason or Reason.CONDITION_FAILED,
        best.rule,
        detail=result.detail,
        approval_id=result.approval_id,
        retry_after=result.retry_after,
    )


def _default(policy: Policy, ctx: RequestContext, *, enforced: bool) -> Verdict:
    """Step 4; the enforced outcome of an observe-only policy (`defaults.mode: dry_run`)
    is an allow."""
    if ctx.spiffe_id is None:
        # Only `unauthenticated: true` rules admit a caller without identity: no default
        # does, in dry run neither (step 1 of docs/policy/reference.md#evaluation).
        return Verdict(False, Reason.NO_IDENTITY, None)
    if policy.default_effect is Effect.ALLOW or (enforced and policy.default_mode is Mode.DRY_RUN):
        return Verdict(True, Reason.ALLOWED_BY_DEFAULT, None)
    return Verdict(False, Reason.NO_MATCHING_RULE, None)


def _specific_first(candidate: _Candidate) -> tuple[int, str]:
    return (-precedence(candidate.result.reason), candidate.rule.id)


def _rule_id(candidate: _Candidate) -> str:
    return candidate.rule.id
