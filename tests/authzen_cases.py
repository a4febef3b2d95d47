"""One table of requests, each asked two ways: as an AuthZEN evaluation and as the HTTP
request a PEP would forward to Envoy (→ a CheckRequest). Both must get the same decision.

Used by tests/integration/test_authzen.py (AuthZEN vs. a CheckRequest to the Check
service, the subject's certificate as the mTLS peer) and, once the listener is wired into
`serve`, by the Envoy comparison (the same HTTP request sent through a real Envoy with the
subject's client certificate). Every case is decided against `POLICY`, with the real
clock; stateful rules are left out (an approval or a rate count consumed by one path
would change the other's answer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

POLICY = """\
version: 1
identity:
  trust_domains: [example.org, partner.org]
  deny: ["spiffe://example.org/compromised/**"]
authzen:
  trusted_peps: ["spiffe://example.org/gateways/*"]
rules:
  - id: orders-read
    hosts: [orders.internal]
    methods: [GET]
    paths: ["/v1/orders/**"]
    principals: ["spiffe://example.org/ns/shop/sa/frontend"]
    effect: allow
  - id: orders-admin-deny
    hosts: [orders.internal]
    paths: ["/v1/orders/admin/**"]
    effect: deny
  - id: orders-create
    hosts: [orders.internal]
    methods: [POST]
    paths: ["/v1/orders"]
    principals: ["spiffe://example.org/ns/shop/sa/frontend"]
    effect: allow
    when:
      headers:
        x-tenant: {equals: acme}
      body:
        amount: {gt: 0, lte: 1000}
  - id: reports-export
    hosts: [reports.internal]
    methods: [GET]
    paths: ["/export"]
    principals: ["spiffe://partner.org/**"]
    effect: allow
    when:
      query:
        format: {in: [csv, json]}
  - id: beta-observed
    hosts: [orders.internal]
    paths: ["/v1/beta/**"]
    mode: dry_run
    effect: deny
  - id: beta-open
    hosts: [orders.internal]
    methods: [GET]
    paths: ["/v1/beta/**"]
    effect: allow
  - id: agents-search
    hosts: [agents.internal]
    methods: [POST]
    paths: ["/mcp"]
    principals: ["spiffe://example.org/agents/*"]
    mcp_tools: ["search_*"]
    effect: allow
  - id: agents-no-email
    hosts: [agents.internal]
    methods: [POST]
    paths: ["/mcp"]
    mcp_tools: [send_email]
    effect: deny
"""

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
BACKEND = "spiffe://example.org/ns/shop/sa/backend"
AGENT = "spiffe://example.org/agents/helper"
PARTNER = "spiffe://partner.org/analytics"
COMPROMISED = "spiffe://example.org/compromised/job"
#: A PEP listed in `authzen.trusted_peps`, and one that is not.
GATEWAY = "spiffe://example.org/gateways/edge"
#: The identities the tests mint certificates for (the foreign one has no bundle).
IDENTITIES = (FRONTEND, BACKEND, AGENT, PARTNER, COMPROMISED, GATEWAY)


@dataclass(frozen=True)
class HttpRequest:
    """The request as it reaches Envoy (and so, as a CheckRequest, the Check service)."""

    method: str
    host: str
    path: str  # with the query, as Envoy's `:path`
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class Case:
    id: str
    subject: str
    evaluation: dict[str, Any]
    http: HttpRequest
    #: What the caller is told: `decision` in AuthZEN, Envoy forwarding the request.
    decision: bool
    #: The audit record's reason and rule (in dry run: the would-be deny's).
    reason: str
    rule: str | None = None
    dry_run: bool = False


def _evaluation(
    subject: str,
    action: str,
    resource: dict[str, Any],
    context: dict[str, Any] | None = None,
    action_properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    evaluation: dict[str, Any] = {
        "subject": {"type": "spiffe", "id": subject},
        "action": {"name": action},
        "resource": resource,
    }
    if action_properties is not None:
        evaluation["action"]["properties"] = action_properties
    if context is not None:
        evaluation["context"] = context
    return evaluation


def _http(path: str, host: str) -> dict[str, Any]:
    return {"type": "http", "id": path, "properties": {"host": host}}


def _tool(name: str) -> dict[str, Any]:
    return {"type": "mcp_tool", "id": name, "properties": {"host": "agents.internal"}}


def _call(name: str, arguments: dict[str, Any]) -> bytes:
    """The JSON-RPC body an MCP client sends (the Check side of a tool-call case)."""
    document = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }
    return json.dumps(document).encode()


_JSON = {"content-type": "application/json"}

CASES: tuple[Case, ...] = (
    Case("read-allowed", FRONTEND,
         _evaluation(FRONTEND, "GET", _http("/v1/orders/17", "orders.internal")),
         HttpRequest("GET", "orders.internal", "/v1/orders/17"), True, "allowed_by_rule", "orders-read"),
    Case("read-method-lowercase", FRONTEND,
         _evaluation(FRONTEND, "get", _http("/v1/orders/17", "Orders.Internal:443")),
         HttpRequest("GET", "orders.internal:443", "/v1/orders/17"), True, "allowed_by_rule", "orders-read"),
    Case("read-other-principal", BACKEND,
         _evaluation(BACKEND, "GET", _http("/v1/orders/17", "orders.internal")),
         HttpRequest("GET", "orders.internal", "/v1/orders/17"), False, "no_matching_rule"),
    Case("read-other-host", FRONTEND,
         _evaluation(FRONTEND, "GET", _http("/v1/orders/17", "payments.internal")),
         HttpRequest("GET", "payments.internal", "/v1/orders/17"), False, "no_matching_rule"),
    Case("admin-deny-rule", FRONTEND,
         _evaluation(FRONTEND, "GET", _http("/v1/orders/admin/users", "orders.internal")),
         HttpRequest("GET", "orders.internal", "/v1/orders/admin/users"), False, "denied_by_rule", "orders-admin-deny"),
    Case("non-canonical-path", FRONTEND,
         _evaluation(FRONTEND, "GET", _http("/v1/orders/../admin/users", "orders.internal")),
         HttpRequest("GET", "orders.internal", "/v1/orders/../admin/users"), False, "non_canonical_path"),
    Case("create-allowed", FRONTEND,
         _evaluation(FRONTEND, "POST", _http("/v1/orders", "orders.internal"),
                     {"headers": {"X-Tenant": "acme"}, "body": {"amount": 999.5}}),
         HttpRequest("POST", "orders.internal", "/v1/orders", {"x-tenant": "acme", **_JSON}, b'{"amount": 999.5}'),
         True, "allowed_by_rule", "orders-create"),
    Case("create-amount-too-high", FRONTEND,
         _evaluation(FRONTEND, "POST", _http("/v1/orders", "orders.internal"),
                     {"headers": {"x-tenant": "acme"}, "body": {"amount": 1500}}),
         HttpRequest("POST", "orders.internal", "/v1/orders", {"x-tenant": "acme", **_JSON}, b'{"amount": 1500}'),
         False, "condition_failed", "orders-create"),
    Case("create-wrong-tenant", FRONTEND,
         _evaluation(FRONTEND, "POST", _http("/v1/orders", "orders.internal"),
                     {"headers": {"x-tenant": "globex"}, "body": {"amount": 5}}),
         HttpRequest("POST", "orders.internal", "/v1/orders", {"x-tenant": "globex", **_JSON}, b'{"amount": 5}'),
         False, "condition_failed", "orders-create"),
    Case("create-no-body", FRONTEND,
         _evaluation(FRONTEND, "POST", _http("/v1/orders", "orders.internal"), {"headers": {"x-tenant": "acme"}}),
         HttpRequest("POST", "orders.internal", "/v1/orders", {"x-tenant": "acme"}),
         False, "body_unavailable", "orders-create"),
    Case("export-query-in-id", PARTNER,
         _evaluation(PARTNER, "GET", _http("/export?format=csv", "reports.internal")),
         HttpRequest("GET", "reports.internal", "/export?format=csv"), True, "allowed_by_rule", "reports-export"),
    Case("export-query-in-context", PARTNER,
         _evaluation(PARTNER, "GET", _http("/export", "reports.internal"), {"query": {"format": "json"}}),
         HttpRequest("GET", "reports.internal", "/export?format=json"), True, "allowed_by_rule", "reports-export"),
    Case("export-wrong-format", PARTNER,
         _evaluation(PARTNER, "GET", _http("/export", "reports.internal"), {"query": "format=xml"}),
         HttpRequest("GET", "reports.internal", "/export?format=xml"), False, "condition_failed", "reports-export"),
    Case("dry-run-deny-enforced-allow", BACKEND,
         _evaluation(BACKEND, "GET", _http("/v1/beta/x", "orders.internal")),
         HttpRequest("GET", "orders.internal", "/v1/beta/x"), True, "denied_by_rule", "beta-observed", dry_run=True),
    Case("mcp-tool-allowed", AGENT,
         _evaluation(AGENT, "tools/call", _tool("search_docs"), action_properties={"arguments": {"q": "x"}}),
         HttpRequest("POST", "agents.internal", "/mcp", _JSON, _call("search_docs", {"q": "x"})),
         True, "allowed_by_rule", "agents-search"),
    Case("mcp-tool-not-listed", AGENT,
         _evaluation(AGENT, "tools/call", _tool("delete_docs")),
         HttpRequest("POST", "agents.internal", "/mcp", _JSON, _call("delete_docs", {})),
         False, "no_matching_rule"),
    Case("mcp-tool-denied", AGENT,
         _evaluation(AGENT, "tools/call", _tool("send_email"), action_properties={"arguments": {"to": "x"}}),
         HttpRequest("POST", "agents.internal", "/mcp", _JSON, _call("send_email", {"to": "x"})),
         False, "denied_by_rule", "agents-no-email"),
    Case("identity-deny", COMPROMISED,
         _evaluation(COMPROMISED, "GET", _http("/v1/orders/17", "orders.internal")),
         HttpRequest("GET", "orders.internal", "/v1/orders/17"), False, "revoked"),
)  # fmt: skip
