"""An AuthZEN evaluation → the `RequestView` a Check would have produced.

    subject   {type: "spiffe", id: SPIFFE ID}          → principal, vouched for by the
                                                          authenticated caller (`vouched_by`)
    action    {name: HTTP method}                      → method (case-insensitive)
              {name: "tools/call"}                     → an MCP tool call (below)
    resource  {type: "http", id: "/path?query",         → path and query; host
               properties: {host: "orders.internal"}}
              {type: "mcp_tool", id: TOOL,             → POST {path, default /mcp} on host,
               properties: {host, path}}                 body: one JSON-RPC 2.0 tools/call of
                                                          TOOL with action.properties.arguments
    context   {headers: {name: value},                 → headers (names lower-cased)
               query: "a=1" | {a: "1", b: ["2","3"]},  → query (not also in resource.id)
               body: any JSON}                          → body, exactly as given, with
                                                          content-type application/json

Nothing else of the request reaches the policy: subject and resource properties besides
those named, and `context.time` (schedules use the server's clock, as for a Check: a
caller must not pick the time its request is judged at). A request this mapping cannot
express is a `MappingProblem`, answered `decision: false` with its reason:
`unsupported_request` for a subject type, action or resource type outside the table,
`malformed_request` for a value of the wrong shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from authz_server.authzen.model import Evaluation
from authz_server.core.decision import Reason
from authz_server.core.request import RequestView, normalize_host, split_path
from authz_server.policy.conditions.jsonbody import JsonValue

__all__ = [
    "MCP_TOOL_CALL",
    "RESOURCE_HTTP",
    "RESOURCE_MCP_TOOL",
    "SUBJECT_SPIFFE",
    "MappingProblem",
    "dumps_exact",
    "to_view",
]

SUBJECT_SPIFFE = "spiffe"
RESOURCE_HTTP = "http"
RESOURCE_MCP_TOOL = "mcp_tool"
MCP_TOOL_CALL = "tools/call"
DEFAULT_MCP_PATH = "/mcp"
_METHOD = re.compile(r"[A-Za-z]{1,32}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class MappingProblem:
    """Why an evaluation has no RequestView: the reason code and a message for its context."""

    reason: Reason
    message: str


class _Problem(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.problem = MappingProblem(reason, message)


def _unsupported(message: str) -> _Problem:
    return _Problem(Reason.UNSUPPORTED_REQUEST, message)


def _malformed(message: str) -> _Problem:
    return _Problem(Reason.MALFORMED_REQUEST, message)


def to_view(
    evaluation: Evaluation, vouched_by: str, request_id: str = ""
) -> RequestView | MappingProblem:
    """The view for the pipeline, or why there is none. Never raises."""
    try:
        return _view(evaluation, vouched_by, request_id)
    except _Problem as problem:
        return problem.problem


def _view(evaluation: Evaluation, vouched_by: str, request_id: str) -> RequestView:
    subject, action, resource = evaluation.subject, evaluation.action, evaluation.resource
    if subject.type != SUBJECT_SPIFFE:
        raise _unsupported(
            f"subject type {_shown(subject.type)} is not supported (expected {SUBJECT_SPIFFE!r})"
        )
    context = evaluation.context
    headers = _headers(context.get("headers"))
    host = normalize_host(_optional_string(resource.properties, "host", "resource.properties"))
    if action.name == MCP_TOOL_CALL or resource.type == RESOURCE_MCP_TOOL:
        if action.name != MCP_TOOL_CALL or resource.type != RESOURCE_MCP_TOOL:
            raise _unsupported(
                f"an MCP tool call is action {MCP_TOOL_CALL!r} on a resource of type "
                f"{RESOURCE_MCP_TOOL!r}"
            )
        method, path, query = "POST", _mcp_path(resource.properties), ""
        if "body" in context:
            raise _malformed("an MCP tool call takes no context.body (its body is the call)")
        body: bytes | None = _tool_call(resource.id, action.properties)
    elif resource.type == RESOURCE_HTTP:
        if _METHOD.fullmatch(action.name) is None:
            raise _unsupported(
                f"action {_shown(action.name)} is neither an HTTP method nor {MCP_TOOL_CALL!r}"
            )
        method = action.name.upper()
        path, query = split_path(resource.id)
        if "?" in resource.id and "query" in context:
            raise _malformed("the query is given twice: in resource.id and in context.query")
        query = query or _query(context.get("query"))
        body = dumps_exact(context["body"]) if "body" in context else None
    else:
        raise _unsupported(
            f"resource type {_shown(resource.type)} is not supported "
            f"(expected {RESOURCE_HTTP!r} or {RESOURCE_MCP_TOOL!r})"
        )
    if body is not None:
        headers.setdefault("content-type", _JSON)
    return RequestView(
        method=method,
        host=host,
        path=path,
        query=query,
        headers=headers,
        body=body,
        principal=subject.id,
        request_id=request_id,
        vouched_by=vouched_by,
    )


def _headers(value: JsonValue) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _malformed("context.headers must be an object of strings")
    headers: dict[str, str] = {}
    for name, text in value.items():
        if _HEADER_NAME.fullmatch(name) is None:
            raise _malformed(f"context.headers: {_shown(name)} is not a header name")
        if not isinstance(text, str) or not text.isprintable():
            raise _malformed(f"context.headers.{name}: the value must be a printable string")
        headers[name.lower()] = text  # case-folded duplicates are refused by the parser
    return headers


def _query(value: JsonValue) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value[1:] if value.startswith("?") else value
    if not isinstance(value, Mapping):
        raise _malformed("context.query must be a string or an object")
    pairs: list[tuple[str, str]] = []
    for name, item in value.items():
        items = item if isinstance(item, list) else [item]
        if not all(isinstance(i, str) for i in items):
            raise _malformed(f"context.query.{name}: values must be strings")
        pairs.extend((name, i) for i in items)
    return urlencode(pairs, quote_via=quote)


def _optional_string(node: Mapping[str, JsonValue], key: str, where: str) -> str:
    value = node.get(key, "")
    if not isinstance(value, str):
        raise _malformed(f"{where}.{key} must be a string")
    return value


def _mcp_path(properties: Mapping[str, JsonValue]) -> str:
    path = _optional_string(properties, "path", "resource.properties") or DEFAULT_MCP_PATH
    if "?" in path:
        raise _malformed("resource.properties.path of an MCP tool takes no query")
    return path


def _tool_call(tool: str, properties: Mapping[str, JsonValue]) -> bytes:
    """The JSON-RPC 2.0 request an MCP client sends to call `tool`; `mcp_tools` reads it."""
    if not tool:
        raise _malformed("resource.id (the tool name) must not be empty")
    params: dict[str, JsonValue] = {"name": tool}
    if "arguments" in properties:
        arguments = properties["arguments"]
        if not isinstance(arguments, Mapping):
            raise _malformed("action.properties.arguments must be an object")
        params["arguments"] = arguments
    return dumps_exact({"jsonrpc": "2.0", "id": 1, "method": MCP_TOOL_CALL, "params": params})


def dumps_exact(value: JsonValue) -> bytes:
    """Compact UTF-8 JSON of a strictly parsed value; numbers keep their exact digits."""
    return "".join(_encode(value)).encode("utf-8")


def _encode(value: Any) -> list[str]:
    out: list[str] = []
    stack: list[Any] = [value]
    # Iterative, so that a document nested as deep as the parser allowed never recurses.
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            out.append(item.text)
        elif isinstance(item, Mapping):
            stack.append(_Raw("}"))
            for i, (key, member) in enumerate(reversed(list(item.items()))):
                stack.append(member)
                stack.append(_Raw(_string(key) + ":"))
                if i < len(item) - 1:
                    stack.append(_Raw(","))
            stack.append(_Raw("{"))
        elif isinstance(item, list):
            stack.append(_Raw("]"))
            for i, member in enumerate(reversed(item)):
                stack.append(member)
                if i < len(item) - 1:
                    stack.append(_Raw(","))
            stack.append(_Raw("["))
        else:
            out.append(_scalar(item))
    return out


@dataclass(frozen=True, slots=True)
class _Raw:
    text: str


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int | Decimal):
        return str(value)  # the parser admits only finite numbers: valid JSON digits
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _shown(text: str) -> str:
    return repr(text[:60])
