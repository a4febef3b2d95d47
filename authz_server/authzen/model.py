"""AuthZEN request bodies → frozen values, or the reason they are refused.

The body is read with the same strict JSON parser as the bodies that `when.body` and
`mcp_tools` judge (`policy/conditions/jsonbody.py`): UTF-8 only, no duplicate keys (not
even differing only in case or spelled with escapes), no lone surrogates, no `NaN`, no
trailing data, numbers exact. A body two JSON parsers could read differently is refused
whole (400), so the caller and the decision can never disagree about what was asked.

Then the shapes of the Authorization API 1.0:

    subject   {type: string, id: string, properties?: object}       required
    action    {name: string, properties?: object}                    required
    resource  {type: string, id: string, properties?: object}       required
    context   object                                                 optional

A violation of these shapes is `RequestInvalid` (400) for the whole request, and, inside
`evaluations[]`, an `ItemProblem` for that item alone (it is answered `decision: false`).
The top-level keys of an evaluations request are the items' defaults: an item's own key
replaces the default whole. Unknown keys are ignored everywhere, as the standard requires.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from authz_server.policy.conditions.jsonbody import JsonValue, loads_strict

__all__ = [
    "MAX_EVALUATIONS",
    "Action",
    "Entity",
    "Evaluation",
    "EvaluationsRequest",
    "ItemProblem",
    "RequestInvalid",
    "Semantic",
    "parse_evaluation",
    "parse_evaluations",
    "read_object",
]

#: Items one evaluations request may carry; more is refused (400) before any is decided.
MAX_EVALUATIONS = 100
_EMPTY: Mapping[str, JsonValue] = MappingProxyType({})


class RequestInvalid(ValueError):
    """The request as a whole is not a valid AuthZEN request (HTTP 400)."""


class Semantic(enum.StrEnum):
    """`options.evaluations_semantic`: when an evaluations request stops."""

    EXECUTE_ALL = "execute_all"
    DENY_ON_FIRST_DENY = "deny_on_first_deny"
    PERMIT_ON_FIRST_PERMIT = "permit_on_first_permit"


@dataclass(frozen=True, slots=True)
class Entity:
    """A subject or a resource: `type`, `id` and free-form `properties`."""

    type: str
    id: str
    properties: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    properties: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One access evaluation, defaults applied."""

    subject: Entity
    action: Action
    resource: Entity
    context: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ItemProblem:
    """An item of `evaluations[]` that is not a valid evaluation: why, for its context."""

    message: str


@dataclass(frozen=True, slots=True)
class EvaluationsRequest:
    items: tuple[Evaluation | ItemProblem, ...]
    semantic: Semantic = Semantic.EXECUTE_ALL
    #: No `evaluations` (or an empty list): answered like a single evaluation.
    single: bool = False


def read_object(data: bytes) -> dict[str, Any]:
    """The body as one strict JSON object; `RequestInvalid` otherwise."""
    try:
        value = loads_strict(data)
    except ValueError as error:  # the parser's own error: a short message, no traceback
        raise RequestInvalid(str(error).replace("body", "request body", 1)) from None
    if not isinstance(value, dict):
        raise RequestInvalid(f"request body must be a JSON object, not {_kind(value)}")
    return value


def parse_evaluation(document: Mapping[str, Any]) -> Evaluation:
    """`POST /access/v1/evaluation`: the four keys at the top; `RequestInvalid` otherwise."""
    return _evaluation(document, _EMPTY_DEFAULTS, "")


def parse_evaluations(document: Mapping[str, Any]) -> EvaluationsRequest:
    """`POST /access/v1/evaluations`: defaults, items and options; `RequestInvalid` for
    anything that concerns the whole request, `ItemProblem` for one bad item."""
    semantic = _semantic(document.get("options"))
    items = document.get("evaluations")
    if items is None or items == []:
        return EvaluationsRequest((parse_evaluation(document),), semantic, single=True)
    if not isinstance(items, list):
        raise RequestInvalid(f"'evaluations' must be an array, not {_kind(items)}")
    if len(items) > MAX_EVALUATIONS:
        raise RequestInvalid(
            f"'evaluations' has {len(items)} items; at most {MAX_EVALUATIONS} are accepted"
        )
    defaults = _defaults(document)
    parsed: list[Evaluation | ItemProblem] = []
    for index, item in enumerate(items):
        where = f"evaluations[{index}]"
        try:
            if not isinstance(item, dict):
                raise RequestInvalid(f"{where} must be an object, not {_kind(item)}")
            parsed.append(_evaluation(item, defaults, f"{where}."))
        except RequestInvalid as problem:
            parsed.append(ItemProblem(str(problem)))
    return EvaluationsRequest(tuple(parsed), semantic)


_Defaults = Mapping[str, Entity | Action | Mapping[str, JsonValue]]
_EMPTY_DEFAULTS: _Defaults = MappingProxyType({})


def _defaults(document: Mapping[str, Any]) -> _Defaults:
    """The top-level keys, validated: a malformed default spoils every item (400)."""
    defaults: dict[str, Entity | Action | Mapping[str, JsonValue]] = {}
    for key in ("subject", "resource"):
        if key in document:
            defaults[key] = _entity(document[key], key)
    if "action" in document:
        defaults["action"] = _action(document["action"], "action")
    if "context" in document:
        defaults["context"] = _object(document["context"], "context")
    return defaults


def _evaluation(item: Mapping[str, Any], defaults: _Defaults, where: str) -> Evaluation:
    def entity(key: str) -> Entity:
        if key in item:
            return _entity(item[key], where + key)
        default = defaults.get(key)
        if not isinstance(default, Entity):
            raise RequestInvalid(f"'{where}{key}' is required")
        return default

    subject, resource = entity("subject"), entity("resource")
    if "action" in item:
        action = _action(item["action"], where + "action")
    elif isinstance(default := defaults.get("action"), Action):
        action = default
    else:
        raise RequestInvalid(f"'{where}action' is required")
    context: Mapping[str, JsonValue] = _EMPTY
    if "context" in item:
        context = _object(item["context"], where + "context")
    elif isinstance(default_context := defaults.get("context"), Mapping):
        context = default_context
    return Evaluation(subject, action, resource, context)


def _entity(value: Any, where: str) -> Entity:
    node = _object(value, where)
    return Entity(
        _string(node, "type", where),
        _string(node, "id", where),
        _properties(node, where),
    )


def _action(value: Any, where: str) -> Action:
    node = _object(value, where)
    return Action(_string(node, "name", where), _properties(node, where))


def _properties(node: Mapping[str, Any], where: str) -> Mapping[str, JsonValue]:
    if "properties" not in node:
        return _EMPTY
    return _object(node["properties"], f"{where}.properties")


def _string(node: Mapping[str, Any], key: str, where: str) -> str:
    if key not in node:
        raise RequestInvalid(f"'{where}.{key}' is required")
    value = node[key]
    if not isinstance(value, str):
        raise RequestInvalid(f"'{where}.{key}' must be a string, not {_kind(value)}")
    return value


def _object(value: Any, where: str) -> Mapping[str, JsonValue]:
    if not isinstance(value, dict):
        raise RequestInvalid(f"'{where}' must be an object, not {_kind(value)}")
    return MappingProxyType(value)


def _semantic(options: Any) -> Semantic:
    if options is None:
        return Semantic.EXECUTE_ALL
    if not isinstance(options, dict):
        raise RequestInvalid(f"'options' must be an object, not {_kind(options)}")
    value = options.get("evaluations_semantic", Semantic.EXECUTE_ALL.value)
    try:
        return Semantic(value)
    except ValueError:
        known = ", ".join(s.value for s in Semantic)
        shown = repr(value)[:60] if isinstance(value, str) else _kind(value)
        raise RequestInvalid(
            f"'options.evaluations_semantic' {shown} is not one of: {known}"
        ) from None


def _kind(value: Any) -> str:
    """The JSON type of a parsed value, for messages (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a number"
