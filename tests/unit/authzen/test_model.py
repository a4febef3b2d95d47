"""AuthZEN request bodies: every shape of the Authorization API 1.0 and every refusal."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import json
from typing import Any

import pytest

from authz_server.authzen.model import (
    MAX_EVALUATIONS,
    Action,
    Entity,
    Evaluation,
    ItemProblem,
    RequestInvalid,
    Semantic,
    parse_evaluation,
    parse_evaluations,
    read_object,
)

SUBJECT = {"type": "spiffe", "id": "spiffe://example.org/a"}
ACTION = {"name": "GET"}
RESOURCE = {"type": "http", "id": "/x"}
MINIMAL = {"subject": SUBJECT, "action": ACTION, "resource": RESOURCE}


def _with(**changes: Any) -> dict[str, Any]:
    document = dict(MINIMAL)
    for key, value in changes.items():
        if value is None:
            del document[key]
        else:
            document[key] = value
    return document


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"[]", "must be a JSON object, not an array", id="array"),
        pytest.param(b'"x"', "must be a JSON object, not a string", id="string"),
        pytest.param(b"null", "must be a JSON object, not null", id="null"),
        pytest.param(b'{"a": 1, "a": 2}', "duplicate key 'a'", id="duplicate-key"),
        pytest.param(b'{"a": 1, "\\u0061": 2}', "duplicate key 'a'", id="duplicate-key-escaped"),
        pytest.param(b'{"amount": 1, "Amount": 2}', "differ only in case", id="duplicate-key-case"),
        pytest.param(b'{"a": {"b": 1, "b": 1}}', "duplicate key 'b'", id="duplicate-key-nested"),
        pytest.param(b'{"a": NaN}', "NaN is not JSON", id="nan"),
        pytest.param(b'{"a": Infinity}', "Infinity is not JSON", id="infinity"),
        pytest.param(b'{"a": 1} {}', "not valid JSON", id="trailing-data"),
        pytest.param(b'{"a": "\\ud800"}', "lone surrogate", id="lone-surrogate"),
        pytest.param(b'\xef\xbb\xbf{"a": 1}', "not valid JSON", id="bom"),
        pytest.param(b'{"a": "\xff"}', "not valid UTF-8", id="not-utf8"),
        pytest.param('{"a": 1}'.encode("utf-16"), "not valid UTF-8", id="utf16"),
        pytest.param(b'{"a": ' + b"1" * 5000 + b"}", "integer of 5000 digits", id="huge-integer"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="deep-nesting"),
    ],
)  # fmt: skip
def test_read_object_refuses(data: bytes, message: str) -> None:
    with pytest.raises(RequestInvalid, match=message):
        read_object(data)


def test_read_object_keeps_numbers_exact() -> None:
    document = read_object(b'{"a": 1000.0000000000000001, "b": 1e400, "c": 7}')
    assert str(document["a"]) == "1000.0000000000000001"
    assert str(document["b"]) == "1E+400"
    assert document["c"] == 7


def test_minimal_evaluation() -> None:
    assert parse_evaluation(MINIMAL) == Evaluation(
        Entity("spiffe", "spiffe://example.org/a"), Action("GET"), Entity("http", "/x")
    )


def test_full_evaluation_and_unknown_fields_ignored() -> None:
    document = {
        "subject": {**SUBJECT, "properties": {"department": "Sales"}, "extra": 1},
        "action": {"name": "POST", "properties": {"arguments": {"q": 1}}, "x": []},
        "resource": {**RESOURCE, "properties": {"host": "h"}},
        "context": {"time": "1985-10-26T01:22-07:00", "headers": {"a": "b"}},
        "unknown_top_level": {"ignored": True},
    }
    evaluation = parse_evaluation(document)
    assert evaluation.subject.properties == {"department": "Sales"}
    assert evaluation.action == Action("POST", {"arguments": {"q": 1}})
    assert evaluation.resource.properties == {"host": "h"}
    assert evaluation.context["headers"] == {"a": "b"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(_with(subject=None), "'subject' is required", id="no-subject"),
        pytest.param(_with(action=None), "'action' is required", id="no-action"),
        pytest.param(_with(resource=None), "'resource' is required", id="no-resource"),
        pytest.param(_with(subject="spiffe://example.org/a"), "'subject' must be an object, not a string", id="subject-string"),
        pytest.param(_with(subject={"id": "x"}), "'subject.type' is required", id="subject-no-type"),
        pytest.param(_with(subject={"type": "spiffe"}), "'subject.id' is required", id="subject-no-id"),
        pytest.param(_with(subject={"type": "spiffe", "id": 7}), "'subject.id' must be a string, not a number", id="subject-id-number"),
        pytest.param(_with(subject={"type": None, "id": "x"}), "'subject.type' must be a string, not null", id="subject-type-null"),
        pytest.param(_with(subject={**SUBJECT, "properties": []}), "'subject.properties' must be an object, not an array", id="subject-properties-array"),
        pytest.param(_with(action={}), "'action.name' is required", id="action-no-name"),
        pytest.param(_with(action={"name": True}), "'action.name' must be a string, not a boolean", id="action-name-bool"),
        pytest.param(_with(action=["GET"]), "'action' must be an object, not an array", id="action-array"),
        pytest.param(_with(action={"name": "GET", "properties": "x"}), "'action.properties' must be an object", id="action-properties-string"),
        pytest.param(_with(resource={"type": "http"}), "'resource.id' is required", id="resource-no-id"),
        pytest.param(_with(resource={"id": "/x"}), "'resource.type' is required", id="resource-no-type"),
        pytest.param(_with(context="now"), "'context' must be an object, not a string", id="context-string"),
        pytest.param(_with(context=[]), "'context' must be an object, not an array", id="context-array"),
    ],
)  # fmt: skip
def test_evaluation_refuses(document: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestInvalid, match=message):
        parse_evaluation(document)


def test_evaluations_defaults_and_overrides() -> None:
    document = {
        "subject": SUBJECT,
        "context": {"headers": {"a": "1"}},
        "action": {"name": "GET"},
        "evaluations": [
            {"resource": {"type": "http", "id": "/1"}},
            {"resource": {"type": "http", "id": "/2"}, "action": {"name": "POST"}},
            {"resource": {"type": "http", "id": "/3"}, "context": {}},
        ],
    }
    request = parse_evaluations(document)
    assert request.semantic is Semantic.EXECUTE_ALL and not request.single
    first, second, third = request.items
    assert isinstance(first, Evaluation) and isinstance(second, Evaluation)
    assert isinstance(third, Evaluation)
    assert (first.action.name, second.action.name, third.action.name) == ("GET", "POST", "GET")
    assert first.subject == second.subject == Entity("spiffe", "spiffe://example.org/a")
    assert first.context == {"headers": {"a": "1"}}
    assert third.context == {}  # an item's key replaces the default whole


def test_evaluations_without_defaults() -> None:
    request = parse_evaluations({"evaluations": [MINIMAL, MINIMAL]})
    assert len(request.items) == 2 and all(isinstance(i, Evaluation) for i in request.items)


@pytest.mark.parametrize("evaluations", [None, []], ids=["absent", "empty"])
def test_evaluations_absent_or_empty_is_a_single_evaluation(evaluations: Any) -> None:
    document = dict(MINIMAL) if evaluations is None else {**MINIMAL, "evaluations": evaluations}
    request = parse_evaluations(document)
    assert request.single and request.items == (parse_evaluation(MINIMAL),)
    with pytest.raises(RequestInvalid, match="'subject' is required"):
        parse_evaluations({"action": ACTION, "resource": RESOURCE, "evaluations": evaluations})


@pytest.mark.parametrize(
    ("item", "message"),
    [
        pytest.param(5, "evaluations[1] must be an object, not a number", id="not-object"),
        pytest.param({"action": ACTION, "resource": RESOURCE}, "'evaluations[1].subject' is required", id="no-subject-no-default"),
        pytest.param({**MINIMAL, "resource": {"type": "http"}}, "'evaluations[1].resource.id' is required", id="bad-resource"),
        pytest.param({**MINIMAL, "context": 1}, "'evaluations[1].context' must be an object", id="bad-context"),
    ],
)  # fmt: skip
def test_a_bad_item_is_an_item_problem(item: Any, message: str) -> None:
    request = parse_evaluations({"evaluations": [MINIMAL, item, MINIMAL]})
    good, bad, also_good = request.items
    assert isinstance(good, Evaluation) and isinstance(also_good, Evaluation)
    assert isinstance(bad, ItemProblem) and message in bad.message


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param({"evaluations": {}}, "'evaluations' must be an array, not an object", id="evaluations-object"),
        pytest.param({"evaluations": [MINIMAL] * (MAX_EVALUATIONS + 1)}, f"at most {MAX_EVALUATIONS}", id="too-many"),
        pytest.param({"evaluations": [MINIMAL], "subject": "x"}, "'subject' must be an object", id="bad-default-subject"),
        pytest.param({"evaluations": [MINIMAL], "action": {}}, "'action.name' is required", id="bad-default-action"),
        pytest.param({"evaluations": [MINIMAL], "context": []}, "'context' must be an object", id="bad-default-context"),
        pytest.param({"evaluations": [MINIMAL], "options": []}, "'options' must be an object, not an array", id="options-array"),
        pytest.param({"evaluations": [MINIMAL], "options": {"evaluations_semantic": "first"}}, "'first' is not one of", id="unknown-semantic"),
        pytest.param({"evaluations": [MINIMAL], "options": {"evaluations_semantic": ["x"]}}, "an array is not one of", id="semantic-array"),
    ],
)  # fmt: skip
def test_evaluations_refuses(document: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestInvalid, match=message):
        parse_evaluations(document)


@pytest.mark.parametrize("semantic", list(Semantic), ids=lambda s: s.value)
def test_semantics(semantic: Semantic) -> None:
    document = {"evaluations": [MINIMAL], "options": {"evaluations_semantic": semantic.value}}
    assert parse_evaluations(document).semantic is semantic


def test_other_options_are_ignored() -> None:
    document = {"evaluations": [MINIMAL], "options": {"another_option": "value"}}
    assert parse_evaluations(document).semantic is Semantic.EXECUTE_ALL


def test_the_standards_examples_parse() -> None:
    """The boxcarring example of the standard, verbatim shape."""
    example = json.loads(
        """{"subject": {"type": "user", "id": "alice@example.com"},
            "context": {"time": "2024-05-31T15:22-07:00"},
            "action": {"name": "can_read"},
            "evaluations": [
              {"resource": {"type": "document", "id": "boxcarring.md"}},
              {"resource": {"type": "document", "id": "subject-search.md"}},
              {"action": {"name": "can_edit"}, "resource": {"type": "document", "id": "resource-search.md"}}
            ]}"""
    )
    request = parse_evaluations(example)
    names = [i.action.name for i in request.items if isinstance(i, Evaluation)]
    assert names == ["can_read", "can_read", "can_edit"]
