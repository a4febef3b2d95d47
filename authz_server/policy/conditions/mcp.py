"""`mcp_tools`: a rule that applies to one MCP JSON-RPC `tools/call` by tool name
(docs/policy/reference.md#rule-fields).

    mcp_tools: [send_email, "crm_*"]        # `*` matches any run of characters

An allow rule with `mcp_tools` grants only a body that is exactly one JSON-RPC 2.0
request `{"jsonrpc": "2.0", "method": "tools/call", "params": {"name": NAME, ...}}`
whose NAME (a string) matches a pattern. Anything else does not match: another method,
a batch (a JSON array), a non-string or missing name. Duplicate keys anywhere (two
`name`s that a first-wins and a last-wins server would read differently) make the body
unavailable (`jsonbody`), so the rule does not grant (`body_unavailable`).

A deny rule with `mcp_tools` must not be dodged by a body the server cannot read, so it
applies unless the body provably is not a matching call: it applies to a matching
`tools/call`, and also to a body that cannot be judged (unavailable, a batch, a
`tools/call` without a string name). It does not apply to a readable request with
another method or another tool name. (Restrict such deny rules to `methods: [POST]`,
or a body-less GET on the same path is refused too.)

Patterns are matched greedily segment by segment (no regex, no backtracking blow-up).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from authz_server.core.yaml_source import Fields, Value
from authz_server.policy.conditions.base import RequestContext

__all__ = ["McpMatch", "McpTools", "compile_mcp_tools", "glob_match"]

MAX_PATTERN_CHARS = 256


class McpMatch(enum.Enum):
    #: One JSON-RPC 2.0 `tools/call` of a listed tool.
    MATCH = "match"
    #: A readable request that is provably something else (another method or tool).
    NO_MATCH = "no_match"
    #: The body is unavailable (absent, partial, not JSON, duplicate keys).
    UNREADABLE = "unreadable"
    #: JSON, but not one call that can be judged (a batch, a name that is not a string).
    AMBIGUOUS = "ambiguous"


def glob_match(pattern: tuple[str, ...], text: str) -> bool:
    """`pattern` is the text split at `*`; greedy leftmost matching is exact for `*` globs."""
    if len(pattern) == 1:
        return text == pattern[0]
    first, *middle, last = pattern
    if not text.startswith(first) or not text.endswith(last):
        return False
    if len(first) + len(last) > len(text):
        return False
    pos, end = len(first), len(text) - len(last)
    for part in middle:
        found = text.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return True


@dataclass(frozen=True, slots=True)
class McpTools:
    patterns: tuple[tuple[str, ...], ...]
    texts: tuple[str, ...]

    def match(self, ctx: RequestContext) -> tuple[McpMatch, str]:
        """How the request's body relates to these tools, with a detail for traces."""
        memo = ctx.memo()
        call = memo.get("mcp:call")
        if call is None:
            call = memo["mcp:call"] = _tool_call(ctx)
        kind, name, detail = call
        if kind is not McpMatch.MATCH:
            return kind, detail
        assert name is not None
        if not any(glob_match(p, name) for p in self.patterns):
            return McpMatch.NO_MATCH, f"tool {name[:60]!r} is not in {list(self.texts)}"
        if detail:  # a matching name, but not a JSON-RPC 2.0 request
            return McpMatch.AMBIGUOUS, detail
        return McpMatch.MATCH, f"tool {name[:60]!r}"


def _tool_call(ctx: RequestContext) -> tuple[McpMatch, str | None, str]:
    """The body read once per Check as (kind, tool name, detail); MATCH means "a call"."""
    document = ctx.json_body()
    if not document.available:
        return McpMatch.UNREADABLE, None, document.problem or ""
    body = document.value
    if isinstance(body, list):
        return McpMatch.AMBIGUOUS, None, "a JSON-RPC batch is never matched"
    if not isinstance(body, dict):
        return McpMatch.NO_MATCH, None, "body is not a JSON-RPC request"
    method = body.get("method")
    if not isinstance(method, str):
        return McpMatch.AMBIGUOUS, None, "JSON-RPC request without a string method"
    if method != "tools/call":
        return McpMatch.NO_MATCH, None, f"method {method[:40]!r} is not tools/call"
    params = body.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    if not isinstance(name, str):
        return McpMatch.AMBIGUOUS, None, "tools/call without a string params.name"
    version = "" if body.get("jsonrpc") == "2.0" else "not a JSON-RPC 2.0 request"
    return McpMatch.MATCH, name, version


def compile_mcp_tools(fields: Fields, value: Value, path: str) -> McpTools | None:
    def pattern(text: str) -> tuple[str, ...]:
        if not text or len(text) > MAX_PATTERN_CHARS:
            raise ValueError(f"tool pattern must have 1 to {MAX_PATTERN_CHARS} characters")
        if any(c.isspace() or not c.isprintable() for c in text):
            raise ValueError(
                f"tool pattern {text[:40]!r} contains whitespace or control characters"
            )
        return tuple(text.split("*"))

    before = len(fields.issues)
    listed = fields.compiled_list(value, path, pattern)
    if listed is None or len(fields.issues) != before:
        return None
    return McpTools(tuple(p for _, p in listed), tuple(str(s.value) for s, _ in listed))
