"""`@frozen` value classes: immutable for the type checker, plain and fast at run time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mypy import api as mypy_api

from authz_server.core.decision import Decision, Reason
from authz_server.core.request import RequestView
from authz_server.core.values import frozen

# Every value class the Check path builds per request, with one field to assign to.
_ASSIGNMENTS = [
    ("authz_server.core.decision", "Decision(True, Reason.ALLOWED_BY_RULE)", "rule"),
    ("authz_server.core.request", 'RequestView("GET", "h", "/")', "path"),
    ("authz_server.identity.resolve", "Resolution(None)", "note"),
    ("authz_server.policy.evaluate", "Verdict(True, Reason.ALLOWED_BY_RULE, None)", "detail"),
    ("authz_server.policy.conditions.base", "ConditionResult(Outcome.HOLDS)", "detail"),
    (
        "authz_server.identity.model",
        'Identity(parse_spiffe_id("spiffe://e.org/a"), "peer", False)',
        "source",
    ),
]


def test_mypy_rejects_assigning_to_a_field(tmp_path: Path) -> None:
    """The immutability the run time no longer checks is checked by `make lint`'s mypy."""
    lines = ["from authz_server.core.decision import Reason"]
    for module, make, _ in _ASSIGNMENTS:
        name = make.split("(")[0]
        lines.append(f"from {module} import {name}")
    lines.append("from authz_server.policy.conditions.base import Outcome")
    lines.append("from authz_server.identity.spiffe_id import parse_spiffe_id")
    for i, (_, make, field) in enumerate(_ASSIGNMENTS):
        lines.append(f"v{i} = {make}")
        lines.append(f'v{i}.{field} = "changed"')
    snippet = tmp_path / "assign.py"
    snippet.write_text("\n".join(lines) + "\n")
    out, _, status = mypy_api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(snippet)]
    )
    assert status == 1, out
    assert f"Found {len(_ASSIGNMENTS)} errors" in out, out
    flagged = [line for line in out.splitlines() if "is read-only" in line]
    assert len(flagged) == len(_ASSIGNMENTS), out


def test_frozen_values_compare_and_hash_by_value() -> None:
    a = Decision(True, Reason.ALLOWED_BY_RULE, rule="r", decision_id="d", at=1.0)
    b = Decision(True, Reason.ALLOWED_BY_RULE, rule="r", decision_id="d", at=1.0)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != dataclasses.replace(a, rule="other")


def test_replace_makes_a_changed_copy() -> None:
    view = RequestView("GET", "api.example", "/a")
    moved = dataclasses.replace(view, path="/b")
    assert (view.path, moved.path) == ("/a", "/b")


def test_frozen_classes_have_slots() -> None:
    """No per-instance dict: no stray attribute can be set by a typo either."""

    @frozen
    class Point:
        x: int

    point = Point(1)
    with pytest.raises(AttributeError):
        point.y = 2  # type: ignore[attr-defined]
