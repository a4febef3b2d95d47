"""`mcp_tools`: one JSON-RPC `tools/call` by tool name; allow rules grant only that, deny rules
cannot be dodged by a body the server cannot read."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import asyncio
import json

import pytest

from authz_server.core.errors import PolicyError
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.policy.conditions.base import RequestContext
from authz_server.policy.conditions.mcp import glob_match
from authz_server.policy.evaluate import evaluate_rules
from authz_server.policy.load import load_policy_text

AGENT = "spiffe://example.org/agents/acme/bot"
POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
rules:
  - id: mcp-read-tools
    methods: [POST]
    paths: ["/mcp"]
    principals: ["spiffe://example.org/agents/*/*"]
    mcp_tools: [search, "crm_get_*"]
    effect: allow
  - id: mcp-no-deletes
    methods: [POST]
    paths: ["/mcp"]
    principals: ["spiffe://example.org/ops/*"]
    mcp_tools: ["*delete*"]
    effect: deny
  - id: mcp-any-tool-for-ops
    methods: [POST]
    paths: ["/mcp"]
    principals: ["spiffe://example.org/ops/*"]
    effect: allow
"""


def _call(name: object, method: str = "tools/call", **extra: object) -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": method,
            "params": {"name": name, "arguments": {}},
            **extra,
        }
    ).encode()


def _decide(body: bytes | None, principal: str = AGENT) -> tuple[str, str | None]:
    policy = load_policy_text(POLICY)
    ctx = RequestContext(
        "POST",
        "h",
        "/mcp",
        headers={"content-type": "application/json"},
        body=body,
        spiffe_id=parse_spiffe_id(principal),
    )
    verdict = asyncio.run(evaluate_rules(policy, ctx))
    return verdict.reason.value, verdict.rule.id if verdict.rule else None


OPS = "spiffe://example.org/ops/alice"


@pytest.mark.parametrize(
    ("body", "principal", "expected"),
    [
        pytest.param(_call("search"), AGENT, ("allowed_by_rule", "mcp-read-tools"), id="listed-tool"),
        pytest.param(_call("crm_get_contact"), AGENT, ("allowed_by_rule", "mcp-read-tools"), id="wildcard-tool"),
        pytest.param(_call("crm_update_contact"), AGENT, ("no_matching_rule", None), id="other-tool"),
        pytest.param(_call("search", method="tools/list"), AGENT, ("no_matching_rule", None), id="other-method"),
        pytest.param(_call("Search"), AGENT, ("no_matching_rule", None), id="case-sensitive"),
        pytest.param(_call(["search"]), AGENT, ("no_matching_rule", None), id="name-not-string"),
        pytest.param(_call("search", jsonrpc="1.0"), AGENT, ("no_matching_rule", None), id="not-jsonrpc-2"),
        pytest.param(b"[" + _call("search") + b"]", AGENT, ("no_matching_rule", None), id="batch"),
        pytest.param(b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"search","name":"drop_all"}}', AGENT, ("body_unavailable", "mcp-read-tools"), id="duplicate-name"),
        pytest.param(b"search", AGENT, ("body_unavailable", "mcp-read-tools"), id="not-json"),
        pytest.param(None, AGENT, ("body_unavailable", "mcp-read-tools"), id="no-body"),
        pytest.param(_call("delete_repo"), OPS, ("denied_by_rule", "mcp-no-deletes"), id="deny-tool"),
        pytest.param(_call("search"), OPS, ("allowed_by_rule", "mcp-any-tool-for-ops"), id="deny-other-tool"),
        pytest.param(b"[" + _call("delete_repo") + b"]", OPS, ("denied_by_rule", "mcp-no-deletes"), id="deny-applies-to-batch"),
        pytest.param(_call(7), OPS, ("denied_by_rule", "mcp-no-deletes"), id="deny-applies-to-odd-name"),
        pytest.param(_call("delete_repo", jsonrpc="1.0"), OPS, ("denied_by_rule", "mcp-no-deletes"), id="deny-ignores-version"),
        pytest.param(b'{"method":"tools/call","params":{"name":"search","name":"delete_repo"}}', OPS, ("body_unavailable", "mcp-no-deletes"), id="deny-unreadable"),
        pytest.param(None, OPS, ("body_unavailable", "mcp-no-deletes"), id="deny-no-body"),
        pytest.param(_call("delete_repo", method="tools/list"), OPS, ("allowed_by_rule", "mcp-any-tool-for-ops"), id="deny-other-method"),
    ],
)  # fmt: skip
def test_mcp_tools(body: bytes | None, principal: str, expected: tuple[str, str | None]) -> None:
    """Allow rules grant exactly one matching tools/call; deny rules fail closed."""
    assert _decide(body, principal) == expected


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        pytest.param("search", "search", True, id="exact"),
        pytest.param("search", "search2", False, id="exact-only"),
        pytest.param("*", "", True, id="star-empty"),
        pytest.param("a*b*c", "abc", True, id="tight"),
        pytest.param("a*b*c", "axxbyyc", True, id="loose"),
        pytest.param("a*b*c", "acb", False, id="order"),
        pytest.param("ab*ba", "aba", False, id="no-overlap"),
        pytest.param("*a*a*a*a*b", "a" * 10_000, False, id="no-blowup"),
    ],
)
def test_glob(pattern: str, text: str, matches: bool) -> None:
    """`*` globs without backtracking."""
    assert glob_match(tuple(pattern.split("*")), text) is matches


def test_bad_patterns_are_located() -> None:
    """Empty or whitespace tool patterns are load errors on their line."""
    text = POLICY + "  - id: bad\n    mcp_tools: ['', 'a b']\n    effect: allow\n"
    with pytest.raises(PolicyError) as raised:
        load_policy_text(text, "p.yaml")
    assert [(i.line, i.rule_id, i.field, i.message) for i in raised.value.issues] == [
        (23, "bad", "mcp_tools[0]", "tool pattern must have 1 to 256 characters"),
        (23, "bad", "mcp_tools[1]", "tool pattern 'a b' contains whitespace or control characters"),
    ]
