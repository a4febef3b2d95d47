"""Dry run with conditions: observed, never enforced, never grants; an observe-only
policy (`defaults.mode: dry_run`) records the would-be deny."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import json

import pytest

from authz_server.policy.load import load_policy_text
from tests.unit.policy.verdicts import HEADER, granted_by, summary, verdict_of

DRY = (
    HEADER
    + """\
rules:
  - id: transfers
    paths: ['/v1/transfers']
    effect: allow
    mode: {mode}
    when: {{body: {{amount: {{lte: 1000}}}}}}
  - id: open
    paths: ['/v1/open']
    effect: allow
  - id: audit-big
    paths: ['/v1/transfers', '/v1/open']
    effect: deny
    mode: dry_run
    when: {{body: {{amount: {{gt: 500}}}}}}
"""
)


@pytest.mark.parametrize(
    ("mode", "path", "amount", "expected"),
    [
        pytest.param("enforce", "/v1/transfers", 100, (True, "allowed_by_rule", "transfers", False), id="enforced-holds"),
        pytest.param("enforce", "/v1/transfers", 5000, (False, "condition_failed", "transfers", False), id="enforced-fails"),
        pytest.param("dry_run", "/v1/transfers", 5000, (False, "no_matching_rule", None, False), id="dry-allow-fails-grants-nothing"),
        pytest.param("dry_run", "/v1/transfers", 100, (False, "no_matching_rule", None, False), id="dry-allow-holds-grants-nothing"),
        pytest.param("enforce", "/v1/open", 700, (False, "denied_by_rule", "audit-big", True), id="dry-deny-over-allow"),
        pytest.param("enforce", "/v1/open", 100, (True, "allowed_by_rule", "open", False), id="dry-deny-when-fails"),
        pytest.param("enforce", "/v1/transfers", 700, (False, "denied_by_rule", "audit-big", True), id="dry-deny-over-conditional-allow"),
    ],
)  # fmt: skip
def test_dry_run_with_conditions(
    mode: str, path: str, amount: int, expected: tuple[bool, str, str | None, bool]
) -> None:
    """A dry-run deny over an enforced allow is recorded, enforced as allow; a dry-run
    allow rule grants nothing, whether its conditions hold or not."""
    policy = load_policy_text(DRY.format(mode=mode))
    body = json.dumps({"amount": amount}).encode()
    assert summary(verdict_of(policy, body=body, path=path)) == expected


def test_dry_run_deny_never_lets_an_enforced_condition_failure_through() -> None:
    """Enforced allow rule fails its condition: the deny stands, the dry-run deny changes nothing."""
    policy = load_policy_text(DRY.format(mode="enforce"))
    verdict = verdict_of(policy, body=b'{"amount": 5000}')
    assert summary(verdict) == (False, "condition_failed", "transfers", False)


PROBE = HEADER + (
    "rules:\n"
    "  - id: a-transfers\n    paths: ['/v1/transfers']\n    effect: allow\n"
    "    when: {body: {amount: {lte: 1000}}}\n"
    "  - id: z-dry-run\n    paths: ['/v1/**']\n    effect: allow\n    mode: dry_run\n"
    "    when: {headers: {x-task: {present: true}}}\n"
)


@pytest.mark.parametrize(
    ("headers", "amount", "expected"),
    [
        pytest.param({}, 5000, (False, "condition_failed", "a-transfers", False), id="both-fail"),
        pytest.param({"x-task": "1"}, 5000, (False, "condition_failed", "a-transfers", False), id="dry-run-rule-holds"),
        pytest.param({}, 500, (True, "allowed_by_rule", "a-transfers", False), id="enforced-holds"),
    ],
)  # fmt: skip
def test_a_dry_run_allow_rule_cannot_hide_an_enforced_failure(
    headers: dict[str, str], amount: int, expected: tuple[bool, str, str | None, bool]
) -> None:
    """Review probe: a broad dry-run allow rule never admits a request an enforced rule
    refuses; the deny names the enforced rule's reason and is not flagged dry_run."""
    body = json.dumps({"amount": amount}).encode()
    verdict = verdict_of(load_policy_text(PROBE), headers=headers, body=body)
    assert summary(verdict) == expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        pytest.param(5, (False, "condition_failed", "transfers", True), id="would-be-deny-recorded"),
        pytest.param(0, (True, "allowed_by_default", None, False), id="would-be-allow"),
    ],
)  # fmt: skip
def test_defaults_dry_run_observes_the_whole_policy(
    amount: int, expected: tuple[bool, str, str | None, bool]
) -> None:
    """`defaults.mode: dry_run` enforces allow and records a failing condition as the
    would-be deny, with no enforced rule to name."""
    text = HEADER + (
        "defaults: {mode: dry_run}\nrules:\n  - id: transfers\n    paths: ['/v1/transfers']\n"
        "    effect: allow\n    when: {body: {amount: {lte: 1}}}\n"
    )
    verdict = verdict_of(load_policy_text(text), body=json.dumps({"amount": amount}).encode())
    assert (summary(verdict), granted_by(verdict)) == (expected, None)


def test_defaults_dry_run_with_an_enforced_rule() -> None:
    """In an observe-only policy a `mode: enforce` allow rule's failing condition is
    enforced, and one that grants is named as the enforced rule of a would-be deny."""
    text = HEADER + (
        "defaults: {mode: dry_run}\nrules:\n"
        "  - id: transfers\n    paths: ['/v1/transfers']\n    effect: allow\n    mode: enforce\n"
        "    when: {body: {amount: {lte: 1000}}}\n"
        "  - id: big\n    paths: ['/v1/transfers']\n    effect: deny\n"
        "    when: {body: {amount: {gt: 100}}}\n"
    )
    policy = load_policy_text(text)
    refused = verdict_of(policy, body=b'{"amount": 5000}')
    assert summary(refused) == (False, "condition_failed", "transfers", False)
    recorded = verdict_of(policy, body=b'{"amount": 500}')
    assert (summary(recorded), granted_by(recorded)) == (
        (False, "denied_by_rule", "big", True),
        "transfers",
    )


def test_anonymous_caller_is_never_admitted_by_a_default() -> None:
    """A dry-run deny over `defaults.decision: allow` still leaves an anonymous caller out."""
    text = HEADER + (
        "defaults: {decision: allow}\nrules:\n  - id: d\n    paths: ['/v1/transfers']\n"
        "    effect: deny\n    mode: dry_run\n"
    )
    verdict = verdict_of(load_policy_text(text), principal=None)
    assert summary(verdict) == (False, "no_identity", None, False)
