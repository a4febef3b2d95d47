"""Rule evaluation (SPEC §5.4): deny before allow, then the default; order-independent.

Candidates come from the compiled route index, so the work here is proportional to the
rules that match the request's host, method and path, never to the size of the policy.
When several rules of the same effect match, the one with the smallest id is reported,
so neither rule order nor file order can change a decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from authz_server.decision import Reason
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.policy.model import Effect, Mode, Policy, Rule, RouteMatch


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rules say, before identity, dry run and rendering are folded in."""

    allowed: bool
    reason: Reason
    rule: Rule | None
    #: True when this outcome is decided by something in dry-run mode.
    dry_run: bool = False


@dataclass(slots=True)
class Trace:
    """An explain trace: the rules considered and what each did."""

    steps: list[dict[str, object]] = field(default_factory=list)

    def add(self, rule: Rule, outcome: str, **details: object) -> None:
        self.steps.append({"rule": rule.id, "effect": rule.effect.value, "outcome": outcome, **details})


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
        if all(params.get(name, value) == value for name, value in captures.items()):
            return {**params, **captures}
    return None


def _mode(rule: Rule, policy: Policy) -> Mode:
    return rule.mode or policy.default_mode


def evaluate_rules(
    policy: Policy,
    method: str,
    host: str,
    path: str,
    spiffe_id: SpiffeId | None,
    trace: Trace | None = None,
) -> Verdict:
    """Apply SPEC §5.4 steps 2, 3 and 5 to one canonical request."""
    candidates: list[RouteMatch] = policy.index.candidates(method, host, path)
    denies: list[Rule] = []
    allows: list[Rule] = []
    for match in candidates:
        rule = match.rule
        if principal_captures(rule, spiffe_id, match.params) is None:
            if trace is not None:
                trace.add(rule, "principal_mismatch")
            continue
        if trace is not None:
            trace.add(rule, "matched", params=dict(match.params))
        (denies if rule.effect is Effect.DENY else allows).append(rule)

    enforced_denies = [r for r in denies if _mode(r, policy) is Mode.ENFORCE]
    if enforced_denies:
        return Verdict(False, Reason.DENIED_BY_RULE, min(enforced_denies, key=_rule_id))
    allow = min(allows, key=_rule_id) if allows else None
    if denies:
        # Only dry-run deny rules matched: record the would-be deny, enforce what the
        # enforced rules say. A dry-run rule must never turn a deny into an allow.
        if allow is not None:
            return Verdict(False, Reason.DENIED_BY_RULE, min(denies, key=_rule_id), dry_run=True)
        default = _default(policy)
        if default.allowed or default.dry_run:
            return Verdict(False, Reason.DENIED_BY_RULE, min(denies, key=_rule_id), dry_run=True)
        return default
    if allow is not None:
        return Verdict(True, Reason.ALLOWED_BY_RULE, allow)
    return _default(policy)


def _default(policy: Policy) -> Verdict:
    if policy.default_effect is Effect.ALLOW:
        return Verdict(True, Reason.ALLOWED_BY_DEFAULT, None)
    return Verdict(
        False, Reason.NO_MATCHING_RULE, None, dry_run=policy.default_mode is Mode.DRY_RUN
    )


def _rule_id(rule: Rule) -> str:
    return rule.id
