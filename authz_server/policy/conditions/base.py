"""The condition framework: what one compiled condition is, and what one Check offers it.

Every `when` key is compiled at load into a small object whose `evaluate(ctx, params)`
returns a `ConditionResult`; the hot path compares values and never parses policy text
or compiles a pattern. A condition has three outcomes, because "false" and "cannot be
judged" must fail differently:

    HOLDS    the condition is true for this request
    FAILS    it is false: an allow rule does not grant, a deny rule does not apply
    UNKNOWN  it cannot be judged (body unavailable, evaluation error): an allow rule
             does not grant, and a deny rule applies (fail closed)

Which kinds exist, the order they run in and which are stateful is the table in
`kinds.py`; a rule's conditions together are a `when.When`.

`RequestContext` is what one Check offers: the request, the verified caller, the time
of the Check, the store (None: stateful conditions are listed, not evaluated), and the
body and query parsed lazily, at most once, and only when a candidate rule asks for them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from authz_server.core.decision import Reason
from authz_server.core.values import frozen
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
    "step",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})


class Outcome(enum.Enum):
    HOLDS = "holds"
    FAILS = "fails"
    UNKNOWN = "unknown"


@frozen
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
        """The `when` key it came from: its row in `kinds.KINDS`."""

    def evaluate(self, ctx: RequestContext, params: Mapping[str, str]) -> ConditionResult:
        """The outcome for one request; never raises."""


class StatefulCondition(Protocol):
    """A condition backed by shared state (rate limits, approvals); may await a store."""

    @property
    def kind(self) -> str: ...

    async def evaluate(
        self, ctx: RequestContext, params: Mapping[str, str], store: Store
    ) -> ConditionResult:
        """The outcome for one request; never raises, may change state (consume a token)."""

    def preview(self, ctx: RequestContext, params: Mapping[str, str]) -> str:
        """What `evaluate` would consult, for a trace that must not touch the store."""


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
