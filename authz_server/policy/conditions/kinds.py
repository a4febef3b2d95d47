"""The table of condition kinds: one row per `when` key. A new kind is a module and a row.

A row says how the key is compiled, whether the kind is stateful (it counts or consumes
in the `Store`), which rule effects may use it, whether it needs an identified caller,
and what it reads. Everything that treats kinds differently asks this table.

Order. The rows are in evaluation order: a rule's conditions run in this order, cheap
and specific first (a schedule is one comparison and says `outside_schedule`), stateless
before stateful. Stateful conditions run last, and only for an enforced allow rule whose
stateless conditions all hold (`policy/evaluate.py`), so a request refused anyway touches
no state. The rate limit runs before the approval, so that a request refused for its rate
never uses up a granted approval.

Effects. Stateful kinds are for allow rules only: they make sense where a holding
condition grants something. On a deny rule "holds" would mean "deny while under the
limit" or "deny once approved", which nobody means, so that is a load error; so is an
approval on an `unauthenticated` rule (an approval needs a requester to keep apart from
its approver).

Reasons. When several conditions or rules fail, the most specific reason is reported:
`PRECEDENCE` below, highest first (`approval_denied`, `approval_required`,
`rate_limited`, `outside_schedule`, `condition_failed`, `body_unavailable`).

`mcp_tools` is not a row: it is a rule key (`load.py`) that decides whether a rule
applies to the request at all, before any of its conditions run (`evaluate.py`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from authz_server.core.decision import Reason
from authz_server.core.yaml_source import Fields, Value
from authz_server.policy.conditions.approval import compile_approval
from authz_server.policy.conditions.base import Condition, StatefulCondition
from authz_server.policy.conditions.body import compile_body
from authz_server.policy.conditions.cel import compile_expr
from authz_server.policy.conditions.matchers import compile_fields
from authz_server.policy.conditions.rate_limit import compile_rate_limit
from authz_server.policy.conditions.schedule import compile_schedule

__all__ = [
    "ALLOW",
    "ANY",
    "KINDS",
    "PRECEDENCE",
    "ConditionKind",
    "Reads",
    "kind_of",
    "lookup",
    "precedence",
    "rank",
]

#: (fields, value, path, trust domains or None when unknown) → the condition, or None
#: after recording issues in `fields`.
Compiler = Callable[
    [Fields, Value, str, frozenset[str] | None], Condition | StatefulCondition | None
]

ALLOW = frozenset({"allow"})
ANY = frozenset({"allow", "deny"})


class Reads(enum.Flag):
    """What a condition reads besides the rule's captures."""

    TIME = enum.auto()
    HEADERS = enum.auto()
    QUERY = enum.auto()
    BODY = enum.auto()
    #: Counters or approval records in the `Store`.
    STORE = enum.auto()


@dataclass(frozen=True, slots=True)
class ConditionKind:
    key: str
    compile: Compiler
    #: Counts or consumes in the store: runs last, awaited, never on a dry-run rule.
    stateful: bool
    #: The rule effects that may carry it.
    effects: frozenset[str]
    #: Needs an identified caller: refused on rules with `unauthenticated: true`.
    identified: bool
    reads: Reads


def _headers(fields: Fields, value: Value, path: str, _: frozenset[str] | None) -> Condition | None:
    return compile_fields(fields, value, path, "headers")


def _query(fields: Fields, value: Value, path: str, _: frozenset[str] | None) -> Condition | None:
    return compile_fields(fields, value, path, "query")


def _plain(
    compile: Callable[[Fields, Value, str], Condition | StatefulCondition | None],
) -> Compiler:
    """A compiler that needs no trust domains."""
    return lambda fields, value, path, _: compile(fields, value, path)


Kind = ConditionKind
TIME, HEADERS, QUERY, BODY, STORE = Reads.TIME, Reads.HEADERS, Reads.QUERY, Reads.BODY, Reads.STORE
REQUEST = HEADERS | QUERY | BODY

# fmt: off
KINDS: tuple[ConditionKind, ...] = (
    #    key           compiler                    stateful effects identified reads
    Kind("schedule",   _plain(compile_schedule),   False,   ANY,    False,     TIME),
    Kind("headers",    _headers,                   False,   ANY,    False,     HEADERS),
    Kind("query",      _query,                     False,   ANY,    False,     QUERY),
    Kind("body",       _plain(compile_body),       False,   ANY,    False,     BODY),
    Kind("expr",       _plain(compile_expr),       False,   ANY,    False,     REQUEST | TIME),
    Kind("rate_limit", _plain(compile_rate_limit), True,    ALLOW,  False,     HEADERS | STORE),
    Kind("approval",   compile_approval,           True,    ALLOW,  True,      REQUEST | STORE),
)
# fmt: on

_BY_KEY = {kind.key: kind for kind in KINDS}
_RANK = {kind.key: i for i, kind in enumerate(KINDS)}


def kind_of(condition: Condition | StatefulCondition) -> ConditionKind:
    """The row of a compiled condition."""
    return _BY_KEY[condition.kind]


def rank(condition: Condition | StatefulCondition) -> int:
    """Evaluation order within a rule: the row's position; lower runs first."""
    return _RANK[condition.kind]


def lookup(key: str) -> ConditionKind | None:
    """The row of a `when` key; None for a key that is not a condition."""
    return _BY_KEY.get(key)


#: Most specific first. A reason not listed ranks below all of these.
PRECEDENCE: tuple[Reason, ...] = (
    Reason.APPROVAL_DENIED,
    Reason.APPROVAL_REQUIRED,
    Reason.RATE_LIMITED,
    Reason.OUTSIDE_SCHEDULE,
    Reason.CONDITION_FAILED,
    Reason.BODY_UNAVAILABLE,
)
_PRECEDENCE = {reason: len(PRECEDENCE) - i for i, reason in enumerate(PRECEDENCE)}


def precedence(reason: Reason | None) -> int:
    """Higher for the more specific deny reason of a failed condition."""
    return _PRECEDENCE.get(reason, 0) if reason is not None else 0
