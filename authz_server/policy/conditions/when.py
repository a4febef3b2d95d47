"""A rule's `when`: the mapping compiled into one `When`, and how its conditions run.

Each key is compiled by its row in the table of kinds (`kinds.py`), which also says which
keys are stateful, on which rules they may appear and the order conditions run in. The
stateless conditions run in `When.check`; the stateful ones (an async `Store`) in
`When.check_stateful`, which the evaluator calls last and only for an enforced allow rule
whose stateless conditions all hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from authz_server.core.decision import Reason
from authz_server.core.yaml_source import Fields, Value
from authz_server.policy.conditions.base import (
    HOLDS,
    Condition,
    ConditionResult,
    Outcome,
    RequestContext,
    StatefulCondition,
    step,
)
from authz_server.policy.conditions.kinds import KINDS, lookup, precedence, rank

__all__ = ["EMPTY_WHEN", "When", "compile_when"]


@dataclass(frozen=True, slots=True)
class When:
    """A rule's compiled `when`: all conditions must hold. Each tuple is in evaluation
    order (`compile_when` puts them in the table's order)."""

    stateless: tuple[Condition, ...] = ()
    stateful: tuple[StatefulCondition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.stateless or self.stateful)

    @property
    def needs_body(self) -> bool:
        return any(getattr(c, "needs_body", False) for c in self.stateless)

    def check(
        self,
        ctx: RequestContext,
        params: Mapping[str, str],
        steps: list[dict[str, object]] | None = None,
    ) -> ConditionResult:
        """The stateless conditions' combined outcome.

        Stops at the first FAILS (a definite no; the order puts the most specific
        reason first). An UNKNOWN does not stop evaluation: a later condition may still
        say FAILS, which takes a deny rule out of play, or give a more specific reason.
        """
        worst: ConditionResult | None = None
        for i, condition in enumerate(self.stateless):
            result = _safe(condition, ctx, params)
            if steps is not None:
                steps.append(step(condition.kind, result))
            if result.outcome is Outcome.FAILS:
                if steps is not None:
                    steps.extend(_not_evaluated(self.stateless[i + 1 :] + self.stateful))
                if worst is None or precedence(result.reason) >= precedence(worst.reason):
                    return result
                return ConditionResult(Outcome.FAILS, worst.reason, worst.detail)
            if result.outcome is Outcome.UNKNOWN and (
                worst is None or precedence(result.reason) > precedence(worst.reason)
            ):
                worst = result
        return worst or HOLDS

    async def check_stateful(
        self,
        ctx: RequestContext,
        params: Mapping[str, str],
        steps: list[dict[str, object]] | None = None,
        *,
        dry_run: bool = False,
    ) -> ConditionResult:
        """The stateful conditions, in order; stops at the first that does not hold.

        Without a store (`ctx.store is None`: rules evaluated outside a `Pipeline`), or for
        a rule in dry run (which must never consume an approval or count against a rate
        limit), none is evaluated: each is listed as `not_evaluated` with what it would
        consult, and they count as holding. Offline decisions have a store of their own
        (`check/offline.py`), so they evaluate them.
        """
        store = None if dry_run else ctx.store
        if store is None:
            if steps is not None:
                steps.extend(
                    {
                        "condition": c.kind,
                        "outcome": "not_evaluated",
                        "detail": _safe_preview(c, ctx, params),
                    }
                    for c in self.stateful
                )
            return HOLDS
        held = HOLDS
        for i, condition in enumerate(self.stateful):
            try:
                result = await condition.evaluate(ctx, params, store)
            except Exception as error:  # a broken store denies (fail closed), never crashes
                result = ConditionResult.unknown(Reason.INTERNAL_ERROR, type(error).__name__)
            if steps is not None:
                steps.append(step(condition.kind, result))
            if not result.holds:
                if steps is not None:
                    steps.extend(_not_evaluated(self.stateful[i + 1 :]))
                return result
            if result.approval_id is not None:
                held = result  # a granted approval: the decision names it and its approver
        return held


def _not_evaluated(
    conditions: tuple[Condition | StatefulCondition, ...],
) -> list[dict[str, object]]:
    return [{"condition": c.kind, "outcome": "not_evaluated"} for c in conditions]


def _safe_preview(
    condition: StatefulCondition, ctx: RequestContext, params: Mapping[str, str]
) -> str:
    try:
        return condition.preview(ctx, params)
    except Exception as error:  # a trace line must never break an explain
        return f"error: {type(error).__name__}"


def _safe(condition: Condition, ctx: RequestContext, params: Mapping[str, str]) -> ConditionResult:
    try:
        return condition.evaluate(ctx, params)
    except Exception as error:  # conditions never raise; if one does, fail closed
        return ConditionResult.unknown(Reason.CONDITION_FAILED, f"error: {type(error).__name__}")


EMPTY_WHEN = When()


def compile_when(
    fields: Fields,
    value: Value,
    path: str = "when",
    *,
    trust_domains: frozenset[str] | None = None,
    effect: str | None = None,
    unauthenticated: bool = False,
) -> When | None:
    """The compiled conditions; None after recording issues.

    `trust_domains` (None: unknown, not checked) bounds approver patterns; `effect` and
    `unauthenticated` are the rule's, checked against each kind's row.
    """
    node = fields.mapping(value, path, frozenset(kind.key for kind in KINDS))
    if node is None:
        return None
    if not node.entries:
        fields.issue(node.line, path, "must not be empty (omit 'when' for no conditions)")
        return None
    before = len(fields.issues)
    stateless: list[Condition] = []
    stateful: list[StatefulCondition] = []
    for key, spec in node.entries.items():
        kind = lookup(key)
        if kind is None:
            continue  # already reported by `mapping`
        where, line = f"{path}.{key}", node.key_lines[key]
        if effect is not None and effect not in kind.effects:
            fields.issue(
                line, where, f"{key} is for {' and '.join(sorted(kind.effects))} rules only"
            )
            continue
        if kind.identified and unauthenticated:
            fields.issue(
                line, where, f"{key} needs an identified caller: not with unauthenticated: true"
            )
            continue
        condition = kind.compile(fields, spec, where, trust_domains)
        if condition is None:
            continue
        if kind.stateful:
            # The row says which protocol its compiler's result follows.
            stateful.append(cast(StatefulCondition, condition))
        else:
            stateless.append(cast(Condition, condition))
    if len(fields.issues) != before:
        return None
    return When(tuple(sorted(stateless, key=rank)), tuple(sorted(stateful, key=rank)))
