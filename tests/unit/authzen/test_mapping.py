"""An AuthZEN evaluation → the RequestView a Check would have produced
(docs/api/authzen.md#mapping)."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import json
from typing import Any

import pytest

from authz_server.authzen.mapping import MappingProblem, dumps_exact, to_view
from authz_server.authzen.model import Evaluation, parse_evaluation, read_object
from authz_server.core.decision import Reason
from authz_server.core.request import RequestView
from authz_server.policy.conditions.jsonbody import loads_strict

ALICE = "spiffe://example.org/ns/a/sa/alice"
GATEWAY = "spiffe://example.org/gateways/edge"


def _evaluation(
    action: str = "GET",
    resource: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    subject_type: str = "spiffe",
    action_properties: dict[str, Any] | None = None,
) -> Evaluation:
    document: dict[str, Any] = {
        "subject": {"type": subject_type, "id": ALICE},
        "action": {
            "name": action,
            **({"properties": action_properties} if action_properties else {}),
        },
        "resource": resource or {"type": "http", "id": "/v1/orders"},
    }
    if context is not None:
        document["context"] = context
    # Through the strict parser, as the handler does: numbers become int / Decimal.
    return parse_evaluation(read_object(json.dumps(document).encode()))


def _view(evaluation: Evaluation) -> RequestView:
    view = to_view(evaluation, GATEWAY, "req-1")
    assert isinstance(view, RequestView), view
    return view


def test_http_request() -> None:
    view = _view(
        _evaluation(
            "get",
            {
                "type": "http",
                "id": "/v1/orders/7?x=1",
                "properties": {"host": "Orders.Internal.:8443"},
            },
        )
    )
    assert (view.method, view.host, view.path, view.query) == (
        "GET",
        "orders.internal",
        "/v1/orders/7",
        "x=1",
    )
    assert (view.principal, view.vouched_by, view.request_id) == (ALICE, GATEWAY, "req-1")
    assert (view.certificate, view.body, dict(view.headers)) == ("", None, {})


@pytest.mark.parametrize(
    ("context", "query"),
    [
        pytest.param({"query": "a=1&b=2"}, "a=1&b=2", id="string"),
        pytest.param({"query": "?a=1"}, "a=1", id="string-with-question-mark"),
        pytest.param({"query": {"a": "1 2", "b": ["x", "y/z"]}}, "a=1%202&b=x&b=y%2Fz", id="object"),
        pytest.param({}, "", id="none"),
    ],
)  # fmt: skip
def test_query_from_context(context: dict[str, Any], query: str) -> None:
    assert _view(_evaluation(context=context)).query == query


def test_headers_lower_cased_and_body_as_json() -> None:
    context = {
        "headers": {"X-Tenant": "acme"},
        "body": {"amount": 1000.5, "items": [1, None, True]},
    }
    view = _view(_evaluation("POST", context=context))
    assert dict(view.headers) == {"x-tenant": "acme", "content-type": "application/json"}
    assert view.body is not None and loads_strict(view.body) == loads_strict(
        b'{"amount": 1000.5, "items": [1, null, true]}'
    )


def test_a_given_content_type_is_kept() -> None:
    context = {"headers": {"Content-Type": "text/plain"}, "body": "hi"}
    view = _view(_evaluation("POST", context=context))
    assert view.headers["content-type"] == "text/plain" and view.body == b'"hi"'


def test_time_in_context_is_not_used() -> None:
    view = _view(_evaluation(context={"time": "1985-10-26T01:22-07:00"}))
    assert view == _view(_evaluation())


def test_mcp_tool_call() -> None:
    evaluation = _evaluation(
        "tools/call",
        {"type": "mcp_tool", "id": "search_docs", "properties": {"host": "agents.internal"}},
        action_properties={"arguments": {"q": "x", "limit": 10}},
    )
    view = _view(evaluation)
    assert (view.method, view.host, view.path, view.query) == (
        "POST",
        "agents.internal",
        "/mcp",
        "",
    )
    assert view.headers["content-type"] == "application/json"
    assert view.body is not None
    assert json.loads(view.body) == {
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search_docs", "arguments": {"q": "x", "limit": 10}},
    }  # fmt: skip


def test_mcp_tool_call_on_another_path_without_arguments() -> None:
    view = _view(
        _evaluation(
            "tools/call", {"type": "mcp_tool", "id": "t", "properties": {"path": "/v2/mcp"}}
        )
    )
    assert view.path == "/v2/mcp" and view.body is not None
    assert json.loads(view.body)["params"] == {"name": "t"}


@pytest.mark.parametrize(
    ("evaluation", "reason", "message"),
    [
        pytest.param(_evaluation(subject_type="user"), Reason.UNSUPPORTED_REQUEST, "subject type 'user' is not supported", id="subject-type"),
        pytest.param(_evaluation("can_read"), Reason.UNSUPPORTED_REQUEST, "neither an HTTP method", id="action-not-method"),
        pytest.param(_evaluation("G E T"), Reason.UNSUPPORTED_REQUEST, "neither an HTTP method", id="action-with-space"),
        pytest.param(_evaluation("GET", {"type": "document", "id": "1"}), Reason.UNSUPPORTED_REQUEST, "resource type 'document'", id="resource-type"),
        pytest.param(_evaluation("tools/call", {"type": "http", "id": "/mcp"}), Reason.UNSUPPORTED_REQUEST, "an MCP tool call is action", id="tool-call-on-http"),
        pytest.param(_evaluation("POST", {"type": "mcp_tool", "id": "t"}), Reason.UNSUPPORTED_REQUEST, "an MCP tool call is action", id="mcp-tool-with-post"),
        pytest.param(_evaluation("tools/call", {"type": "mcp_tool", "id": ""}), Reason.MALFORMED_REQUEST, "tool name", id="empty-tool"),
        pytest.param(_evaluation("tools/call", {"type": "mcp_tool", "id": "t"}, {"body": {}}), Reason.MALFORMED_REQUEST, "takes no context.body", id="tool-with-body"),
        pytest.param(_evaluation("tools/call", {"type": "mcp_tool", "id": "t"}, action_properties={"arguments": [1]}), Reason.MALFORMED_REQUEST, "arguments must be an object", id="tool-arguments-array"),
        pytest.param(_evaluation("tools/call", {"type": "mcp_tool", "id": "t", "properties": {"path": "/m?x=1"}}), Reason.MALFORMED_REQUEST, "takes no query", id="tool-path-query"),
        pytest.param(_evaluation(resource={"type": "http", "id": "/x", "properties": {"host": 7}}), Reason.MALFORMED_REQUEST, "host must be a string", id="host-number"),
        pytest.param(_evaluation(context={"headers": ["a"]}), Reason.MALFORMED_REQUEST, "headers must be an object", id="headers-array"),
        pytest.param(_evaluation(context={"headers": {"a": 1}}), Reason.MALFORMED_REQUEST, "must be a printable string", id="header-number"),
        pytest.param(_evaluation(context={"headers": {"a": "x\ny"}}), Reason.MALFORMED_REQUEST, "must be a printable string", id="header-newline"),
        pytest.param(_evaluation(context={"headers": {"a b": "x"}}), Reason.MALFORMED_REQUEST, "is not a header name", id="header-name-space"),
        pytest.param(_evaluation(context={"headers": {"": "x"}}), Reason.MALFORMED_REQUEST, "is not a header name", id="header-name-empty"),
        pytest.param(_evaluation(context={"query": 5}), Reason.MALFORMED_REQUEST, "query must be a string or an object", id="query-number"),
        pytest.param(_evaluation(context={"query": {"a": [1]}}), Reason.MALFORMED_REQUEST, "values must be strings", id="query-value-number"),
        pytest.param(_evaluation(resource={"type": "http", "id": "/x?a=1"}, context={"query": "b=2"}), Reason.MALFORMED_REQUEST, "query is given twice", id="query-twice"),
    ],
)  # fmt: skip
def test_problems(evaluation: Evaluation, reason: Reason, message: str) -> None:
    problem = to_view(evaluation, GATEWAY)
    assert isinstance(problem, MappingProblem)
    assert problem.reason is reason and message in problem.message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"a": 1000.0000000000000001}', id="exact-decimal"),
        pytest.param('{"a": 1e400, "b": -0.0, "c": 12345678901234567890}', id="big-numbers"),
        pytest.param('{"a": "\\u00e9\\ud83d\\ude00\\n\\"", "b": [[], {}, [{}]]}', id="strings-and-nesting"),
        pytest.param('[1, "x", null, true, false]', id="array"),
    ],
)  # fmt: skip
def test_dumps_exact_round_trips(text: str) -> None:
    value = loads_strict(text.encode())
    assert loads_strict(dumps_exact(value)) == value
    assert dumps_exact(loads_strict(dumps_exact(value))) == dumps_exact(value)
