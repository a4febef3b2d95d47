"""The condition framework: what a compiled `when` is, and what one Check offers it.

Every `when` key is compiled at load into a small object whose `evaluate(ctx, params)`
returns a `ConditionResult`; the hot path compares values and never parses policy text
or compiles a pattern. A condition has three outcomes, because "false" and "cannot be
judged" must fail differently (SPEC §5.4, §7):

    HOLDS    the condition is true for this request
    FAILS    it is false: an allow rule does not grant, a deny rule does not apply
    UNKNOWN  it cannot be judged (body unavailable, evaluation error): an allow rule
             does not grant, and a deny rule applies (fail closed)

A rule's conditions run in a fixed order, cheapest and most specific first (`rank`):
schedule, headers, query, body, expr. Stateful conditions (rate limits, then approvals:
an async `Store`) come last, and only for a rule whose stateless conditions all hold.
A rate limit runs before the approval, so that a request refused for its rate never
uses up a granted approval.

`RequestContext` is what one Check offers: the request, the verified caller, the time
of the Check, the store (None when stateful conditions must not run: explain, replay),
and the body and query parsed lazily, at most once, and only when a candidate rule asks
for them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from authz_server.core.decision import Reason
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.policy.conditions.jsonbody import BodyDocument, read_json_body
from authz_server.policy.conditions.query import parse_query

if TYPE_CHECKING:
    from authz_server.state.store import Store

__all__ = [
    "HOLDS",
    "Condition",
    "ConditionResult",
    "Outcome",
    "RequestContext",
    "StatefulCondition",
    "When",
    "precedence",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})


class Outcome(enum.Enum):
    HOLDS = "holds"
    FAILS = "fails"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ConditionResult:
    """One condition's outcome; `reason` says why it did not hold."""

    outcome: Outcome
    reason: Reason | None = None
    #: For the explain trace: what was compared, never a secret header value.
    detail: str = ""
    #: What a deny rule reports when it applies because of this UNKNOWN (default
    #: `reason`): `denied_by_rule` when one reading of an ambiguous request matches it.
    deny_reason: Reason | None = None
    #: Stateful conditions only: the approval this request is about (header, body, audit),
    #: who approved it (on a granted approval), and seconds until a rate limit admits one.
    approval_id: str | None = None
    approver: str | None = None
    retry_after: int | None = None

    @property
    def holds(self) -> bool:
        return self.outcome is Outcome.HOLDS

    @staticmethod
    def fails(reason: Reason, detail: str) -> ConditionResult:
        return ConditionResult(Outcome.FAILS, reason, detail)

    @staticmethod
    def unknown(reason: Reason, detail: str) -> ConditionResult:
        return ConditionResult(Outcome.UNKNOWN, reason, detail)


HOLDS = ConditionResult(Outcome.HOLDS)

#: SPEC §5.4 step 4, most specific first. A reason not listed ranks below all of these.
_PRECEDENCE: tuple[Reason, ...] = (
    Reason.APPROVAL_DENIED,
    Reason.APPROVAL_REQUIRED,
    Reason.RATE_LIMITED,
    Reason.OUTSIDE_SCHEDULE,
    Reason.CONDITION_FAILED,
    Reason.BODY_UNAVAILABLE,
)
_RANK = {reason: len(_PRECEDENCE) - i for i, reason in enumerate(_PRECEDENCE)}


def precedence(reason: Reason | None) -> int:
    """Higher for the more specific deny reason of a failed condition."""
    return _RANK.get(reason, 0) if reason is not None else 0


class RequestContext:
    """One Check as conditions see it; the body and query are parsed on first use only."""

    __slots__ = (
        "_body",
        "_memo",
        "_query",
        "body",
        "headers",
        "host",
        "method",
        "now",
        "path",
        "query",
        "spiffe_id",
        "store",
    )

    def __init__(
        self,
        method: str,
        host: str,
        path: str,
        *,
        query: str = "",
        headers: Mapping[str, str] = _EMPTY,
        body: bytes | None = None,
        spiffe_id: SpiffeId | None = None,
        now: datetime | None = None,
        store: Store | None = None,
    ) -> None:
        self.method = method
        self.host = host
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.spiffe_id = spiffe_id
        self.now = now if now is not None else datetime.now(UTC)
        #: Where stateful conditions keep their state; None: they are not evaluated.
        self.store = store
        self._body: BodyDocument | None = None
        self._query: Mapping[str, str] | bool | None = False
        #: Per-Check values that condition kinds derive once (CEL activation, MCP call).
        self._memo: dict[str, Any] | None = None

    def json_body(self) -> BodyDocument:
        """The body as one strictly parsed JSON document, or why it is unavailable."""
        if self._body is None:
            self._body = read_json_body(self.headers, self.body)
        return self._body

    def query_params(self) -> Mapping[str, str] | None:
        """Decoded query parameters (repeats comma-joined), or None when undecodable."""
        if self._query is False:
            self._query = parse_query(self.query)
        assert self._query is not True
        return self._query

    def memo(self) -> dict[str, Any]:
        """A per-Check cache for values derived from the request (keys by module)."""
        if self._memo is None:
            self._memo = {}
        return self._memo


class Condition(Protocol):
    """A stateless compiled condition."""

    @property
    def kind(self) -> str:
        """The `when` key it came from: schedule, headers, query, body, expr."""

    @property
    def rank(self) -> int:
        """Evaluation order within a rule; lower runs first."""

    def evaluate(self, ctx: RequestContext, params: Mapping[str, str]) -> ConditionResult:
        """The outcome for one request; never raises."""


class StatefulCondition(Protocol):
    """A condition backed by shared state (rate limits, approvals); may await a store."""

    @property
    def kind(self) -> str: ...

    @property
    def rank(self) -> int: ...

    async def evaluate(
        self, ctx: RequestContext, params: Mapping[str, str], store: Store
    ) -> ConditionResult:
        """The outcome for one request; never raises, may change state (consume a token)."""

    def preview(self, ctx: RequestContext, params: Mapping[str, str]) -> str:
        """What `evaluate` would consult, for a trace that must not touch the store."""


@dataclass(frozen=True, slots=True)
class When:
    """A rule's compiled `when`: all conditions must hold."""

    stateless: tuple[Condition, ...] = ()
    stateful: tuple[StatefulCondition, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stateless", tuple(sorted(self.stateless, key=_rank)))
        object.__setattr__(self, "stateful", tuple(sorted(self.stateful, key=_rank)))

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

        Without a store (`ctx.store is None`: explain, replay), or for a rule in dry run
        (which must never consume an approval or count against a rate limit), none is
        evaluated: each is listed as `not_evaluated` with what it would consult, and they
        count as holding.
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


def step(kind: str, result: ConditionResult) -> dict[str, object]:
    """One condition's line in an explain trace."""
    entry: dict[str, object] = {"condition": kind, "outcome": result.outcome.value}
    if result.reason is not None:
        entry["reason"] = result.reason.value
    if result.detail:
        entry["detail"] = result.detail
    if result.approval_id is not None:
        entry["approval_id"] = result.approval_id
    if result.retry_after is not None:
        entry["retry_after"] = result.retry_after
    return entry


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


def _rank(condition: Condition | StatefulCondition) -> int:
    return condition.rank


EMPTY_WHEN = When()
