"""The seed scenarios end to end: real Envoy with the shipped front proxy, which sends the
body (`with_request_body`) on the routes the example policy's body rules reach, real mTLS
identities, the example policy of `examples/policy`, and an echo backend that shows what
got through.

The server runs on the real clock, so the two time windows the scenarios depend on are
rewritten around the current time (one that contains it, one that does not); every other
line of the example policy is used as shipped.
"""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_server.tools import stack
from authz_server.tools.stack import Reply
from tests.e2e import harness
from tests.e2e.conftest import Proxy, Stack

pytestmark = pytest.mark.e2e

EXAMPLES = harness.ROOT / "examples" / "policy"
IDENTITIES = {
    "ci-build": "spiffe://example.org/ci/build",
    "ci-release": "spiffe://example.org/ci/release",
    "ci-deployer": "spiffe://example.org/ci/deployer",
}
JSON = ("content-type", "application/json")


@dataclass
class Scenarios:
    certs: harness.Certs
    audit_log: Path
    shipped: Proxy  # envoy/front-proxy.yaml as shipped: raw_body (pack_as_bytes: true)
    string_body: Proxy  # the same with pack_as_bytes: false
    no_body: Proxy  # no route sends the body

    def call(
        self,
        as_: str,
        method: str,
        path: str,
        body: object = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        proxy: Proxy | None = None,
    ) -> Reply:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        return stack.https_request(
            (proxy or self.shipped).port,
            path,
            ca=self.certs.ca,
            cert=self.certs.pair(as_),
            method=method,
            headers=((JSON,) if data is not None else ()) + headers,
            body=data,
        )


def _window(start: datetime, end: datetime) -> dict[str, Any]:
    return {"timezone": "UTC", "hours": f"{start:%H:%M}-{end:%H:%M}"}


def _policy_around_now(out: Path) -> Path:
    """examples/policy with the deployment and release windows placed around now."""
    shutil.copytree(EXAMPLES, out)
    now = datetime.now(UTC)
    inside = _window(now - timedelta(hours=1), now + timedelta(hours=2))
    outside = _window(now + timedelta(hours=3), now + timedelta(hours=4))
    windows = {
        "ci-releases-publish": inside,
        "deployments-change": inside,
        "deployments-destroy": outside,
    }
    for path in out.glob("*.yaml"):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for rule in document.get("rules", []):
            if rule["id"] in windows:
                rule["when"]["schedule"] = windows[rule["id"]]
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def scenarios(e2e: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenarios]:
    workdir = tmp_path_factory.mktemp("scenarios")
    certs = harness.mint_certs(workdir / "certs", IDENTITIES)
    policy = _policy_around_now(workdir / "policy")
    audit_log = workdir / "audit.jsonl"
    logs = workdir / "logs"
    services: list[stack.Service] = []
    try:
        authz = stack.start_authz(
            logs, policy=policy, bundles={"example.org": certs.ca}, audit_log=audit_log
        )
        services.append(authz)
        e2e.services.append(authz)  # its log is printed with the others on failure

        def proxy(name: str, variant: Callable[[str], str] = lambda text: text) -> Proxy:
            port, admin = stack.free_port(), stack.free_port()
            config = harness.render_front_proxy(
                certs,
                authz_port=authz.port,
                backend_port=e2e.backend.port,
                listen_port=port,
                admin_port=admin,
            )
            service = stack.start_envoy(logs, name, variant(config), listen_port=port)
            services.append(service)
            e2e.services.append(service)
            return Proxy(name, port, service)

        yield Scenarios(
            certs,
            audit_log,
            shipped=proxy("envoy-scenarios-shipped"),
            string_body=proxy("envoy-body-string", harness.with_string_body),
            no_body=proxy("envoy-no-body", harness.without_request_body),
        )
    finally:
        for service in reversed(services):
            service.stop()


def _denied(reply: Reply, reason: str, rule: str | None = None) -> None:
    assert reply.status == (403 if reason != "non_canonical_path" else 400), reply.body
    body = reply.json()
    assert body["decision"] == "deny"
    assert body["reason"] == reason, body
    if rule is not None:
        assert body["rule"] == rule, body


def _allowed(reply: Reply, rule: str) -> dict[str, Any]:
    """The backend's echo of an allowed request, which carries the rule that allowed it."""
    assert reply.status == 200, reply.body
    seen: dict[str, Any] = reply.json()
    assert seen["headers"]["x-authz-rule"] == rule
    return seen


# --- an agent's production-database call outside its approved scope is blocked ----------

QUERY = {"operation": "select", "tables": ["orders"], "limit": 50}
TASK = (("x-agent-task", "TASK-42"),)


def test_agent_reads_its_own_production_data(scenarios: Scenarios) -> None:
    """A read of the agent's own tenant in production, for a task, reaches the database."""
    reply = scenarios.call("agent", "POST", "/v1/db/prod/acme/query", QUERY, headers=TASK)
    seen = _allowed(reply, "agents-db-prod-read")
    assert seen["headers"]["content-length"] == str(len(json.dumps(QUERY)))  # the body went on


@pytest.mark.parametrize(
    ("path", "body", "headers", "reason", "rule"),
    [
        pytest.param("/v1/db/prod/acme/query", {**QUERY, "operation": "delete"}, TASK, "condition_failed", "agents-db-prod-read", id="write-in-prod"),
        pytest.param("/v1/db/prod/globex/query", QUERY, TASK, "no_matching_rule", None, id="other-tenant"),
        pytest.param("/v1/db/prod/acme/query", {**QUERY, "tables": ["pii_users"]}, TASK, "condition_failed", "agents-db-prod-read", id="pii-table"),
        pytest.param("/v1/db/prod/acme/query", QUERY, (), "condition_failed", "agents-db-prod-read", id="no-task"),
        pytest.param("/v1/db/staging/acme/query", {"operation": "drop", "tables": ["orders"]}, (), "denied_by_rule", "agents-db-no-ddl", id="drop-anywhere"),
        pytest.param("/v1/db/staging/acme/query", b'{"operation": "select", "operation": "drop"}', (), "body_unavailable", "agents-db-no-ddl", id="duplicate-key"),
    ],
)  # fmt: skip
def test_agent_outside_its_database_scope_is_blocked(
    scenarios: Scenarios,
    path: str,
    body: object,
    headers: tuple[tuple[str, str], ...],
    reason: str,
    rule: str | None,
) -> None:
    """Each way out of the approved scope is a 403 with its own reason, before the database."""
    _denied(scenarios.call("agent", "POST", path, body, headers=headers), reason, rule)


def test_dry_run_rule_is_recorded_in_the_audit_log_and_enforced_as_allow(
    scenarios: Scenarios,
) -> None:
    """A large production read passes; the upstream is told the enforced rule that grants
    it, the audit record carries the would-be deny and its rule."""
    query = {**QUERY, "limit": 500}
    reply = scenarios.call("agent", "POST", "/v1/db/prod/acme/query", query, headers=TASK)
    seen = reply.json()
    assert reply.status == 200, reply.body
    assert seen["headers"]["x-authz-rule"] == "agents-db-prod-read"
    decision_id = seen["headers"]["x-authz-decision-id"]
    (record,) = harness.wait_for_audit(scenarios.audit_log, decision_id)
    assert (record["decision"], record["reason"], record["rule"]) == (
        "deny",
        "denied_by_rule",
        "agents-db-prod-large-reads",
    )
    assert (record["dry_run"], record["status"]) == (True, 200)
    assert record["enforced_rule"] == "agents-db-prod-read"


# --- a CI identity reads release metadata; publishing is a separate, stricter rule -------

PUBLISH = {"version": "1.4.2", "channel": "stable"}
RELEASE_HEADERS = (("x-change-ticket", "CHG-1234"), ("x-git-ref", "refs/heads/main"))


def test_ci_job_reads_release_metadata(scenarios: Scenarios) -> None:
    """Any CI identity reads releases."""
    _allowed(scenarios.call("ci-build", "GET", "/v1/releases/1.4.2"), "ci-releases-read")


def test_release_pipeline_publishes_with_ticket_in_window(scenarios: Scenarios) -> None:
    """The release identity publishes, re-authorized on the body, headers and window."""
    reply = scenarios.call(
        "ci-release", "POST", "/v1/releases/1.4.2/publish", PUBLISH, headers=RELEASE_HEADERS
    )
    _allowed(reply, "ci-releases-publish")


@pytest.mark.parametrize(
    ("as_", "body", "headers", "reason"),
    [
        pytest.param("ci-build", PUBLISH, RELEASE_HEADERS, "no_matching_rule", id="reader-cannot-publish"),
        pytest.param("ci-release", PUBLISH, RELEASE_HEADERS[1:], "condition_failed", id="no-ticket"),
        pytest.param("ci-release", {**PUBLISH, "version": "9.9.9"}, RELEASE_HEADERS, "condition_failed", id="other-version"),
        pytest.param("ci-release", PUBLISH, (*RELEASE_HEADERS, ("x-change-ticket", "CHG-9")), "condition_failed", id="repeated-ticket"),
    ],
)  # fmt: skip
def test_publishing_is_stricter(
    scenarios: Scenarios,
    as_: str,
    body: object,
    headers: tuple[tuple[str, str], ...],
    reason: str,
) -> None:
    """Reading does not imply publishing; each missing piece of context is a 403."""
    reply = scenarios.call(as_, "POST", "/v1/releases/1.4.2/publish", body, headers=headers)
    _denied(reply, reason)


# --- a destructive call outside the deployment window is denied ---------------------------


def test_destructive_call_outside_the_window_is_denied(scenarios: Scenarios) -> None:
    """DELETE outside the deployment window is 403 outside_schedule; a change inside is fine."""
    path = "/v1/deployments/prod/web?confirm=yes"
    _denied(
        scenarios.call("ci-deployer", "DELETE", path), "outside_schedule", "deployments-destroy"
    )
    reply = scenarios.call("ci-deployer", "PUT", "/v1/deployments/prod/web", {"replicas": 3})
    _allowed(reply, "deployments-change")


# --- an agent's send_email / transfer_funds only with an allowed destination and amount --


def _tool(name: str, **arguments: object) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}


def _transfer(amount: object, country: str = "DE") -> dict[str, Any]:
    destination = {"country": country, "iban": f"{country}89370400440532013000"}
    return _tool("transfer_funds", amount=amount, currency="EUR", destination=destination)


AGENT_TASK = (("x-agent-task", "T-7"),)


@pytest.mark.parametrize("via", ["shipped", "string_body"])
@pytest.mark.parametrize(
    ("body", "rule"),
    [
        pytest.param(_tool("send_email", to="ana@example.org", subject="Hi"), "mcp-send-email", id="email-colleague"),
        pytest.param(_transfer(250), "mcp-transfer-funds", id="transfer-250-eur-de"),
        pytest.param(_tool("search_docs", q="refunds"), "mcp-read-tools", id="read-tool"),
    ],
)  # fmt: skip
def test_agent_tool_call_within_limits(
    scenarios: Scenarios, via: str, body: dict[str, Any], rule: str
) -> None:
    """Allowed tool calls reach the MCP server, whether Envoy sends raw_body or body."""
    proxy: Proxy = getattr(scenarios, via)
    reply = scenarios.call("agent", "POST", "/mcp", body, headers=AGENT_TASK, proxy=proxy)
    seen = _allowed(reply, rule)
    assert seen["headers"]["content-length"] == str(len(json.dumps(body)))


@pytest.mark.parametrize("via", ["shipped", "string_body"])
@pytest.mark.parametrize(
    ("body", "reason", "rule"),
    [
        pytest.param(_tool("send_email", to="x@evil.example"), "condition_failed", "mcp-send-email", id="email-outside"),
        pytest.param(_tool("send_email", to="x@evil.example,ana@example.org"), "condition_failed", "mcp-send-email", id="email-list-smuggled"),
        pytest.param(_tool("send_email", to="ana@example.org", attachments=["x"]), "condition_failed", "mcp-send-email", id="email-attachment"),
        pytest.param(_transfer(5000), "condition_failed", "mcp-transfer-funds", id="transfer-over-limit"),
        pytest.param(_transfer("10"), "condition_failed", "mcp-transfer-funds", id="transfer-amount-string"),
        pytest.param(_transfer(10, country="KY"), "condition_failed", "mcp-transfer-funds", id="transfer-destination"),
        pytest.param(_tool("admin_reset"), "denied_by_rule", "mcp-no-admin-tools", id="admin-tool"),
        pytest.param([_tool("search_docs")], "denied_by_rule", "mcp-no-admin-tools", id="batch"),
        pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_docs","name":"transfer_funds"}}', "body_unavailable", None, id="two-names"),
    ],
)  # fmt: skip
def test_agent_tool_call_outside_limits_is_denied(
    scenarios: Scenarios, via: str, body: object, reason: str, rule: str | None
) -> None:
    """A tool call with a destination or amount outside the rule never reaches the server."""
    proxy: Proxy = getattr(scenarios, via)
    reply = scenarios.call("agent", "POST", "/mcp", body, headers=AGENT_TASK, proxy=proxy)
    _denied(reply, reason, rule)


# --- the shipped front proxy sends the body wherever an example rule reads it ------------


@pytest.mark.parametrize(
    ("as_", "path", "body", "headers", "rule", "reason"),
    [
        pytest.param("agent", "/v1/db/staging/acme/query", {"operation": "insert"}, (), "agents-db-staging", None, id="db-allowed-by-body"),
        pytest.param("agent", "/v1/db/staging/acme/query", {"operation": "merge"}, (), "agents-db-staging", "condition_failed", id="db-refused-by-body"),
        pytest.param("agent", "/v1/db/staging/acme/query", {"operation": "alter"}, (), "agents-db-no-ddl", "denied_by_rule", id="db-deny-rule-on-body"),
        pytest.param("ci-release", "/v1/releases/1.4.2/publish", PUBLISH, RELEASE_HEADERS, "ci-releases-publish", None, id="release-allowed-by-body"),
        pytest.param("ci-release", "/v1/releases/1.4.2/publish", {**PUBLISH, "channel": "nightly"}, RELEASE_HEADERS, "ci-releases-publish", "condition_failed", id="release-refused-by-body"),
        pytest.param("agent", "/mcp", _tool("search_docs", q="x"), (), "mcp-read-tools", None, id="mcp-allowed-by-tool"),
        pytest.param("agent", "/mcp", _tool("admin_reset"), (), "mcp-no-admin-tools", "denied_by_rule", id="mcp-deny-rule-on-tool"),
    ],
)  # fmt: skip
def test_shipped_proxy_sends_the_body_beyond_transfers(
    scenarios: Scenarios,
    as_: str,
    path: str,
    body: object,
    headers: tuple[tuple[str, str], ...],
    rule: str,
    reason: str | None,
) -> None:
    """envoy/front-proxy.yaml as shipped: body rules of examples/policy on routes other
    than /v1/transfers are decided by the body, never `body_unavailable`."""
    reply = scenarios.call(as_, "POST", path, body, headers=headers, proxy=scenarios.shipped)
    if reason is None:
        _allowed(reply, rule)
    else:
        _denied(reply, reason, rule)


def test_route_without_body_fails_closed(scenarios: Scenarios) -> None:
    """Forgetting to send the body on a route denies (body_unavailable), never bypasses."""
    reply = scenarios.call(
        "agent", "POST", "/mcp", _transfer(10), headers=AGENT_TASK, proxy=scenarios.no_body
    )
    _denied(reply, "body_unavailable")


def test_body_larger_than_envoy_buffers_never_reaches_upstream(scenarios: Scenarios) -> None:
    """Past max_request_bytes (allow_partial_message: false) Envoy refuses with 413 itself;
    a partial body that does reach the server is body_unavailable (unit tests)."""
    body = _transfer(10)
    body["params"]["arguments"]["memo"] = "x" * 70_000
    reply = scenarios.call("agent", "POST", "/mcp", body, headers=AGENT_TASK)
    assert reply.status == 413, reply.body
