"""The table of condition kinds: every `when` key is a row, and the rows decide the order
conditions run in, which are stateful, and where they may appear."""

from __future__ import annotations

import pytest

from authz_server.core.errors import PolicyError
from authz_server.policy.conditions.base import Condition, StatefulCondition
from authz_server.policy.conditions.kinds import KINDS, ConditionKind, Reads, kind_of, rank
from authz_server.policy.load import load_policy_text

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org]\nrules:\n"

#: One valid spec per `when` key; a kind added to the table needs one here.
SPECS = {
    "schedule": "{timezone: UTC, days: [mon]}",
    "headers": "{x-env: {equals: prod}}",
    "query": "{dry: {equals: 'true'}}",
    "body": "{amount: {gt: 0}}",
    "expr": "'request.method == \"POST\"'",
    "rate_limit": "{requests: 5, per: 1m}",
    "approval": "{approvers: ['spiffe://example.org/humans/*']}",
}


def _rule(when: dict[str, str], effect: str = "allow", extra: str = "") -> str:
    lines = "".join(f"      {key}: {spec}\n" for key, spec in when.items())
    return (
        HEADER
        + f"  - id: r\n    paths: ['/x']\n    principals: ['spiffe://example.org/a']\n{extra}"
        + f"    effect: {effect}\n    when:\n{lines}"
    )


def test_every_kind_has_a_spec_and_compiles_to_its_row() -> None:
    """Each row's compiler yields a condition that names its row."""
    assert [kind.key for kind in KINDS] == list(SPECS)
    (rule,) = load_policy_text(_rule(SPECS)).rules
    compiled: list[Condition | StatefulCondition] = [*rule.when.stateless, *rule.when.stateful]
    assert [c.kind for c in compiled] == list(SPECS)
    assert all(kind_of(c).stateful == (c in rule.when.stateful) for c in compiled)


def test_conditions_run_in_table_order_whatever_the_file_order() -> None:
    """The YAML order of `when` keys never changes the order conditions run in."""
    reversed_specs = dict(reversed(SPECS.items()))
    (rule,) = load_policy_text(_rule(reversed_specs)).rules
    assert [c.kind for c in rule.when.stateless] == ["schedule", "headers", "query", "body", "expr"]
    assert [c.kind for c in rule.when.stateful] == ["rate_limit", "approval"]
    ranks = [rank(c) for c in rule.when.stateless] + [rank(c) for c in rule.when.stateful]
    assert ranks == sorted(ranks)


def test_stateful_rows_come_last_and_read_the_store() -> None:
    """Cheap before stateful; a stateful kind is one that reads the store."""
    flags = [kind.stateful for kind in KINDS]
    assert flags == sorted(flags)
    assert all(kind.stateful == bool(kind.reads & Reads.STORE) for kind in KINDS)


@pytest.mark.parametrize("kind", [k for k in KINDS if "deny" not in k.effects], ids=lambda k: k.key)
def test_allow_only_kinds_are_refused_on_deny_rules(kind: ConditionKind) -> None:
    key = kind.key
    with pytest.raises(PolicyError) as error:
        load_policy_text(_rule({key: SPECS[key]}, effect="deny"))
    assert [issue.message for issue in error.value.issues] == [f"{key} is for allow rules only"]


@pytest.mark.parametrize("kind", [k for k in KINDS if k.identified], ids=lambda k: k.key)
def test_identified_kinds_are_refused_on_unauthenticated_rules(kind: ConditionKind) -> None:
    key = kind.key
    text = _rule({key: SPECS[key]}, extra="    unauthenticated: true\n").replace(
        "    principals: ['spiffe://example.org/a']\n", ""
    )
    with pytest.raises(PolicyError) as error:
        load_policy_text(text)
    assert [issue.message for issue in error.value.issues] == [
        f"{key} needs an identified caller: not with unauthenticated: true"
    ]
