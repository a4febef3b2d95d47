"""Conditions in evaluation: reason precedence, deny rules, stateful order, traces.

Dry run is `test_evaluate_dry_run.py`.
"""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.core.decision import Reason
from authz_server.identity.model import IdentityConfig
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.policy.conditions.base import HOLDS, ConditionResult, RequestContext
from authz_server.policy.conditions.kinds import precedence
from authz_server.policy.conditions.when import When
from authz_server.policy.evaluate import Trace, evaluate_rules
from authz_server.policy.index import CompiledRouteIndex
from authz_server.policy.load import load_policy_text
from authz_server.policy.model import Effect, Policy, Rule
from authz_server.state.store import Store
from tests.unit.policy.verdicts import (
    AGENT,
    HEADER,
    JSON,
    SATURDAY,
    THURSDAY,
    granted_by,
    summary,
    verdict_of,
)

FAILING_RULES = {
    "a-body": "    when: {body: {amount: {lte: 10}}}\n",
    "b-header": "    when: {headers: {x-task: {present: true}}}\n",
    "c-schedule": "    when: {schedule: {timezone: UTC, days: [sat]}}\n",
    "d-expr-error": '    when: {expr: \'request.headers["x-none"] == "1"\'}\n',
}


def _policy(names: tuple[str, ...]) -> Policy:
    rules = "".join(
        f"  - id: {name}\n    paths: ['/v1/transfers']\n    effect: allow\n{FAILING_RULES[name]}"
        for name in names
    )
    return load_policy_text(HEADER + "rules:\n" + rules)


@pytest.mark.parametrize(
    ("names", "reason", "rule"),
    [
        pytest.param(("a-body", "b-header", "c-schedule", "d-expr-error"), "outside_schedule", "c-schedule", id="all"),
        pytest.param(("a-body", "b-header", "d-expr-error"), "condition_failed", "b-header", id="no-schedule"),
        pytest.param(("a-body", "d-expr-error"), "condition_failed", "d-expr-error", id="error-beats-body"),
        pytest.param(("a-body",), "body_unavailable", "a-body", id="body-only"),
        pytest.param(("c-schedule", "a-body"), "outside_schedule", "c-schedule", id="schedule-beats-body"),
    ],
)  # fmt: skip
def test_reason_precedence(names: tuple[str, ...], reason: str, rule: str) -> None:
    """Allow rules that all fail a condition deny with the most specific reason
    (docs/policy/reference.md#evaluation)."""
    verdict = verdict_of(_policy(names))  # no body, no x-task header, on a Thursday
    assert summary(verdict) == (False, reason, rule, False)


def test_reason_order_is_the_spec_order() -> None:
    """approval_required > rate_limited > outside_schedule > condition_failed > body_unavailable."""
    order = [
        Reason.APPROVAL_REQUIRED,
        Reason.RATE_LIMITED,
        Reason.OUTSIDE_SCHEDULE,
        Reason.CONDITION_FAILED,
        Reason.BODY_UNAVAILABLE,
    ]
    assert sorted(order, key=precedence, reverse=True) == order
    assert precedence(Reason.APPROVAL_DENIED) > precedence(Reason.APPROVAL_REQUIRED)


def test_one_rule_reports_its_most_specific_failure() -> None:
    """Within one rule, an unavailable body does not hide a failing expression."""
    text = HEADER + (
        "rules:\n  - id: r\n    paths: ['/v1/transfers']\n    effect: allow\n"
        "    when:\n      body: {a: {equals: 1}}\n      expr: 'request.method == \"GET\"'\n"
    )
    verdict = verdict_of(load_policy_text(text))
    assert (verdict.reason, verdict.detail) == (Reason.CONDITION_FAILED, "expression is false")


DENY_POLICY = (
    HEADER
    + """\
rules:
  - id: transfers
    paths: ['/v1/transfers']
    effect: allow
  - id: big-transfers
    paths: ['/v1/transfers']
    effect: deny
    when:
      body: {amount: {gt: 10000}}
  - id: weekend-freeze
    paths: ['/v1/transfers']
    effect: deny
    when:
      schedule: {timezone: Europe/Berlin, days: [sat, sun]}
"""
)


@pytest.mark.parametrize(
    ("body", "now", "expected"),
    [
        pytest.param(b'{"amount": 5}', THURSDAY, (True, "allowed_by_rule", "transfers", False), id="deny-when-fails"),
        pytest.param(b'{"amount": 50000}', THURSDAY, (False, "denied_by_rule", "big-transfers", False), id="deny-when-holds"),
        pytest.param(b'{"amount": 5}', SATURDAY, (False, "denied_by_rule", "weekend-freeze", False), id="schedule-deny"),
        pytest.param(b'{"amount": "50000"}', THURSDAY, (False, "condition_failed", "big-transfers", False), id="deny-on-unjudgeable-bound"),
        pytest.param(None, THURSDAY, (False, "body_unavailable", "big-transfers", False), id="deny-on-unavailable-body"),
        pytest.param(b'{"amount": 5, "amount": 50000}', THURSDAY, (False, "body_unavailable", "big-transfers", False), id="deny-on-duplicate-keys"),
        pytest.param(None, SATURDAY, (False, "denied_by_rule", "weekend-freeze", False), id="holding-deny-beats-unknown"),
    ],
)  # fmt: skip
def test_deny_rules(
    body: bytes | None, now: datetime, expected: tuple[bool, str, str | None, bool]
) -> None:
    """A deny rule applies when its `when` holds or cannot be judged, never when it fails."""
    assert summary(verdict_of(load_policy_text(DENY_POLICY), body=body, now=now)) == expected


@dataclass
class FakeStateful:
    """A stateful condition that records each call and answers a fixed result."""

    result: ConditionResult
    calls: list[str] = field(default_factory=list)
    kind: str = "fake_state"

    async def evaluate(
        self, ctx: RequestContext, params: Mapping[str, str], store: Store
    ) -> ConditionResult:
        self.calls.append(ctx.path)
        return self.result

    def preview(self, ctx: RequestContext, params: Mapping[str, str]) -> str:
        return "fake"


def _rule(rule_id: str, effect: Effect = Effect.ALLOW, when: When | None = None) -> Rule:
    return Rule(
        id=rule_id, effect=effect, principals=None, paths=("/v1/transfers",), when=when or When()
    )


def _built(*rules: Rule) -> Policy:
    identity = IdentityConfig(frozenset({"example.org"}))
    return Policy(identity, rules, CompiledRouteIndex.from_rules(rules))


HEADER_COND = (
    load_policy_text(
        HEADER
        + "rules:\n  - id: x\n    effect: allow\n    when: {headers: {x-task: {present: true}}}\n"
    )
    .rules[0]
    .when.stateless
)


def test_stateful_runs_last_and_only_for_the_deciding_rule() -> None:
    """A rule's stateful conditions run only after its stateless ones hold, in id order,
    and not at all when a plain rule grants or an enforced deny applies."""
    approve = FakeStateful(ConditionResult.fails(Reason.APPROVAL_REQUIRED, "pending"))
    limit = FakeStateful(ConditionResult.fails(Reason.RATE_LIMITED, "over"))
    blocked = FakeStateful(ConditionResult.fails(Reason.RATE_LIMITED, "never reached"))
    rules = (
        _rule("a-approval", when=When(stateful=(approve,))),
        _rule("b-limit", when=When(stateful=(limit,))),
        _rule("c-header-then-limit", when=When(HEADER_COND, (blocked,))),
    )
    verdict = verdict_of(_built(*rules))
    assert summary(verdict) == (False, "approval_required", "a-approval", False)
    assert (approve.calls, limit.calls, blocked.calls) == (["/v1/transfers"], ["/v1/transfers"], [])

    granted = FakeStateful(ConditionResult.fails(Reason.RATE_LIMITED, "unused"))
    verdict = verdict_of(_built(_rule("a", when=When(stateful=(granted,))), _rule("z-plain")))
    assert summary(verdict) == (True, "allowed_by_rule", "z-plain", False)
    assert granted.calls == []

    verdict = verdict_of(
        _built(_rule("a", when=When(stateful=(granted,))), _rule("d", Effect.DENY))
    )
    assert summary(verdict) == (False, "denied_by_rule", "d", False)
    assert granted.calls == []


def test_stateful_stops_at_the_first_rule_that_grants() -> None:
    """Once one rule's stateful conditions hold, later rules' state is not touched."""
    first = FakeStateful(ConditionResult.fails(Reason.RATE_LIMITED, "over"))
    ok = FakeStateful(HOLDS)
    later = FakeStateful(ConditionResult.fails(Reason.RATE_LIMITED, "x"))
    rules = (
        _rule("a", when=When(stateful=(first,))),
        _rule("b", when=When(stateful=(ok,))),
        _rule("c", when=When(stateful=(later,))),
    )
    verdict = verdict_of(_built(*rules))
    assert summary(verdict) == (True, "allowed_by_rule", "b", False)
    assert (len(first.calls), len(ok.calls), len(later.calls)) == (1, 1, 0)


def test_a_stateful_condition_that_raises_denies() -> None:
    """A stateful condition that raises is an internal_error deny, not a crash."""

    class Broken(FakeStateful):
        async def evaluate(
            self, ctx: RequestContext, params: Mapping[str, str], store: Store
        ) -> ConditionResult:
            raise ConnectionError("store down")

    broken = Broken(ConditionResult.fails(Reason.RATE_LIMITED, ""))
    verdict = verdict_of(_built(_rule("a", when=When(stateful=(broken,)))))
    assert summary(verdict) == (False, "internal_error", "a", False)


def test_trace_shows_each_condition() -> None:
    """The explain trace lists every condition's outcome, those not evaluated, and the
    enforced and would-be outcome."""
    text = HEADER + (
        "rules:\n  - id: r\n    paths: ['/v1/transfers']\n    effect: allow\n    when:\n"
        "      schedule: {timezone: UTC}\n      headers: {x-task: {present: true}}\n"
        "      body: {a: {equals: 1}}\n      expr: 'true'\n"
    )
    trace = Trace()
    verdict_of(load_policy_text(text), trace=trace)
    failed = {"decision": "deny", "reason": "condition_failed", "rule": "r"}
    assert trace.steps == [
        {
            "rule": "r",
            "effect": "allow",
            "outcome": "matched",
            "mode": "enforce",
            "params": {},
            "conditions": [
                {"condition": "schedule", "outcome": "holds"},
                {"condition": "headers", "outcome": "fails", "reason": "condition_failed",
                 "detail": "header 'x-task' is absent"},
                {"condition": "body", "outcome": "not_evaluated"},
                {"condition": "expr", "outcome": "not_evaluated"},
            ],
            "when": "fails",
            "reason": "condition_failed",
        },
        {"rule": None, "outcome": "decided", "enforced": failed, "would_be": failed},
    ]  # fmt: skip


ORDER_RULES = [
    "  - id: t-allow\n    paths: ['/v1/**']\n    effect: allow\n    when: {headers: {x-task: {present: true}}}\n",
    "  - id: t-allow-body\n    paths: ['/v1/transfers']\n    effect: allow\n    when: {body: {amount: {lte: 100}}}\n",
    "  - id: t-window\n    paths: ['/v1/**']\n    effect: allow\n    when: {schedule: {timezone: UTC, days: [sat, sun]}}\n",
    "  - id: t-deny-big\n    paths: ['/v1/transfers']\n    effect: deny\n    when: {body: {amount: {gt: 1000}}}\n",
    "  - id: t-deny-expr\n    paths: ['/v1/**']\n    effect: deny\n    when: {expr: 'request.headers[\"x-kill\"] == \"1\"'}\n",
    "  - id: t-dry-deny\n    paths: ['/v1/**']\n    effect: deny\n    mode: dry_run\n    when: {headers: {x-dry: {present: true}}}\n",
    "  - id: t-dry-allow\n    paths: ['/v1/**']\n    effect: allow\n    mode: dry_run\n    when: {headers: {x-dry-ok: {present: true}}}\n",
    "  - id: t-dry-allow-body\n    paths: ['/v1/transfers']\n    effect: allow\n    mode: dry_run\n    when: {body: {amount: {lte: 10}}}\n",
    "  - id: t-observed\n    paths: ['/v1/**']\n    effect: allow\n    when: {body: {amount: {equals: 50}}}\n",
]
ORDER_REQUESTS = [
    ({"x-task": "1", "x-kill": "0"}, b'{"amount": 5}', THURSDAY),
    ({"x-task": "1", "x-kill": "0"}, b'{"amount": 5000}', THURSDAY),
    ({"x-kill": "0"}, b'{"amount": 50}', THURSDAY),
    ({"x-kill": "0"}, None, SATURDAY),
    ({}, b'{"amount": 500}', THURSDAY),
    ({"x-kill": "1", "x-task": "1"}, None, THURSDAY),
    ({"x-dry": "1", "x-task": "1", "x-kill": "0"}, b'{"amount": 1}', THURSDAY),
    ({"x-kill": "0"}, b'{"amount": 500}', THURSDAY),
    ({"x-dry-ok": "1", "x-kill": "0"}, b'{"amount": 5000}', THURSDAY),
    ({"x-dry": "1", "x-kill": "0"}, b'{"amount": 50}', THURSDAY),
    ({"x-dry-ok": "1", "x-kill": "0"}, b'{"amount": 5}', THURSDAY),
]


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(["enforce", "dry_run"]))
def test_rule_order_never_changes_a_decision_with_conditions(
    rng: random.Random, default_mode: str
) -> None:
    """Shuffling rules with conditions, enforced, dry-run or observed, changes no
    decision, reason, reported rule or enforced rule."""
    header = HEADER + f"defaults: {{mode: {default_mode}}}\nrules:\n"
    reference = load_policy_text(header + "".join(ORDER_RULES))
    blocks = ORDER_RULES[:]
    rng.shuffle(blocks)
    shuffled = load_policy_text(header + "".join(blocks))
    for headers, body, now in ORDER_REQUESTS:
        a = verdict_of(reference, headers=headers, body=body, now=now)
        b = verdict_of(shuffled, headers=headers, body=body, now=now)
        assert (summary(a), granted_by(a)) == (summary(b), granted_by(b))


class CountingContext(RequestContext):
    """A RequestContext that counts how often the body is parsed."""

    __slots__ = ("parses",)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.parses = 0

    def json_body(self) -> object:  # type: ignore[override]
        if self._body is None:
            self.parses += 1
        return super().json_body()


@pytest.mark.parametrize(
    ("path", "parses"),
    [
        pytest.param("/v1/transfers", 1, id="three-body-readers-one-parse"),
        pytest.param("/v1/other", 0, id="no-candidate-reads-the-body"),
    ],
)
def test_the_body_is_parsed_at_most_once_and_only_when_needed(path: str, parses: int) -> None:
    """Body, expr and mcp_tools share one parse; rules that don't read the body cost none."""
    text = HEADER + (
        "rules:\n"
        "  - id: a\n    paths: ['/v1/transfers']\n    effect: allow\n"
        "    when: {body: {amount: {lte: 10}}, expr: 'request.body.amount > 0'}\n"
        "  - id: b\n    paths: ['/v1/transfers']\n    mcp_tools: [pay]\n    effect: allow\n"
        "  - id: c\n    paths: ['/v1/other']\n    effect: allow\n"
        "    when: {headers: {x-task: {present: true}}}\n"
    )
    ctx = CountingContext(
        "POST", "h", path, headers=JSON, body=b'{"amount": 5}', spiffe_id=parse_spiffe_id(AGENT)
    )
    asyncio.run(evaluate_rules(load_policy_text(text), ctx))
    assert ctx.parses == parses
