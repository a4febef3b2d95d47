"""No input crashes the AuthZEN parser or handler: arbitrary bytes and arbitrary JSON always
get a well-formed JSON answer, 200 or 4xx, and every 200 is a well-formed Decision."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_server.authzen.handlers import Reply
from authz_server.authzen.mapping import dumps_exact, to_view
from authz_server.authzen.model import (
    Evaluation,
    RequestInvalid,
    parse_evaluation,
    parse_evaluations,
    read_object,
)
from authz_server.policy.conditions.jsonbody import loads_strict
from tests.authzen_cases import POLICY
from tests.unit.authzen.support import make_rig

_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Keys the handler reads, so that generated documents often reach the deep paths.
_KEYS = st.sampled_from(
    [
        "subject", "action", "resource", "context", "evaluations", "options",
        "evaluations_semantic", "type", "id", "name", "properties", "host", "path",
        "headers", "query", "body", "arguments", "x",
    ]
)  # fmt: skip
_TEXT = st.one_of(
    st.sampled_from(
        [
            "spiffe", "http", "mcp_tool", "tools/call", "GET", "post", "execute_all",
            "deny_on_first_deny", "permit_on_first_permit", "/", "/v1/orders/1", "/a/../b",
            "/x?y=1", "spiffe://example.org/ns/shop/sa/frontend", "spiffe://example.org",
            "orders.internal", "search_docs", "",
        ]
    ),
    st.text(max_size=12),
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(_KEYS, st.text(max_size=6)), children, max_size=6),
    ),
    max_leaves=40,
)
_ENTITY = st.fixed_dictionaries(
    {"type": _TEXT, "id": _TEXT},
    optional={"properties": st.dictionaries(_KEYS, _JSON, max_size=3)},
)
_EVALUATION = st.fixed_dictionaries(
    {},
    optional={
        "subject": st.one_of(_ENTITY, _JSON),
        "action": st.one_of(st.fixed_dictionaries({"name": _TEXT}), _JSON),
        "resource": st.one_of(_ENTITY, _JSON),
        "context": st.one_of(st.dictionaries(_KEYS, _JSON, max_size=4), _JSON),
    },
)
#: Near-valid requests: the AuthZEN keys with values of every shape.
_REQUESTS = st.one_of(
    _EVALUATION,
    _EVALUATION.flatmap(
        lambda defaults: st.fixed_dictionaries(
            {"evaluations": st.one_of(st.lists(st.one_of(_EVALUATION, _JSON), max_size=4), _JSON)},
            optional={"options": st.one_of(st.dictionaries(_KEYS, _TEXT, max_size=2), _JSON)},
        ).map(lambda batch: {**defaults, **batch})
    ),
    _JSON,
)

_LOOP = asyncio.new_event_loop()
_RIG = make_rig(POLICY)


def _check_reply(reply: Reply) -> None:
    text = json.dumps(reply.body, allow_nan=False)  # well-formed JSON, nothing exotic
    assert json.loads(text) == reply.body
    assert reply.status in (200, 400), reply
    if reply.status == 400:
        assert set(reply.body) == {"error"} and isinstance(reply.body["error"]["message"], str)
        return
    decisions = reply.body.get("evaluations", [reply.body])
    assert decisions
    for decision in decisions:
        assert isinstance(decision["decision"], bool)
        assert isinstance(decision["context"]["reason"], str)


def _answer(data: bytes, batch: bool) -> Reply:
    endpoint = _RIG.handler.evaluations if batch else _RIG.handler.evaluation
    return _LOOP.run_until_complete(endpoint(data, "application/json", None, ""))


@_SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        document = read_object(data)
    except RequestInvalid:
        return
    assert isinstance(document, dict)


@_SETTINGS
@given(_REQUESTS)
def test_arbitrary_documents_never_crash_the_parser(document: Any) -> None:
    if not isinstance(document, dict):
        return
    for parse in (parse_evaluation, parse_evaluations):
        try:
            parsed = parse(document)
        except RequestInvalid:
            continue
        items = (parsed,) if isinstance(parsed, Evaluation) else parsed.items
        for item in items:
            if isinstance(item, Evaluation):
                to_view(item, "spiffe://example.org/gateways/edge")  # never raises


@_SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_get_a_json_answer(data: bytes, batch: bool) -> None:
    _check_reply(_answer(data, batch))


@_SETTINGS
@given(_REQUESTS, st.booleans())
def test_arbitrary_json_gets_a_json_answer(document: Any, batch: bool) -> None:
    before = len(_RIG.audit.records)
    reply = _answer(json.dumps(document).encode(), batch)
    _check_reply(reply)
    decided = 0 if reply.status != 200 else len(reply.body.get("evaluations", [reply.body]))
    assert len(_RIG.audit.records) - before == decided  # every decision audited, once


@_SETTINGS
@given(_JSON)
def test_bodies_are_passed_on_exactly(value: Any) -> None:
    try:
        parsed = loads_strict(json.dumps(value).encode())
    except ValueError:  # keys differing only in case: refused, nothing to pass on
        return
    again = loads_strict(dumps_exact(parsed))
    assert again == parsed
    if isinstance(value, float) and math.isfinite(value):
        assert float(again) == value
