"""Envoy's access log names authz-server's decision, on allows and on denies.

Real Envoy runs the shipped front proxy with its access log written to a file instead of
stdout (same format, nothing else changed) in front of the session's real `serve`; for an
allowed and a denied request the log line carries the decision id, reason, rule and
principal of the server's own audit record, and the path without its query.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_server.tools import stack
from tests.e2e import harness
from tests.e2e.conftest import Proxy, Stack

pytestmark = pytest.mark.e2e

FILE_LOGGER = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"


def with_access_log_file(config: str, path: Path) -> str:
    """The shipped stdout access log written to `path` instead, format untouched."""
    document = yaml.safe_load(config)
    [listener] = document["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [logger] = hcm["access_log"]
    assert logger["name"] == "envoy.access_loggers.stdout"
    settings = {k: v for k, v in logger["typed_config"].items() if k != "@type"}
    logger["name"] = "envoy.access_loggers.file"
    logger["typed_config"] = {"@type": FILE_LOGGER, "path": str(path), **settings}
    return str(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture(scope="module")
def logged(e2e: Stack) -> Iterator[tuple[Proxy, Path]]:
    """The shipped front proxy, access log to a file of its own."""
    log = e2e.workdir / "envoy-access.log"
    port, admin = stack.free_port(), stack.free_port()
    config = harness.render_front_proxy(
        e2e.certs,
        authz_port=e2e.authz.port,
        backend_port=e2e.backend.port,
        listen_port=port,
        admin_port=admin,
    )
    service = stack.start_envoy(
        e2e.workdir / "logs", "envoy-access-log", with_access_log_file(config, log),
        listen_port=port,
    )  # fmt: skip
    e2e.services.append(service)  # stopped with the rest at session end
    yield Proxy("envoy-access-log", port, service), log


def _line_for(log: Path, path: str, timeout: float = 10.0) -> dict[str, Any]:
    """The access log entry of the one request to `path` (Envoy writes it after the
    response, and flushes its log file about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        entries: list[dict[str, Any]] = [json.loads(line) for line in lines if line.strip()]
        found = [e for e in entries if e.get("path") == path]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"{len(found)} access log entries for {path}: {entries}"
            return found[0]
        time.sleep(0.1)


def _record(e2e: Stack, decision_id: str) -> dict[str, Any]:
    [record] = harness.wait_for_audit(e2e.audit_log, decision_id)
    return record


def _assert_matches(entry: dict[str, Any], record: dict[str, Any]) -> None:
    """The access log says what the audit record says."""
    assert entry["authz_decision_id"] == record["decision_id"]
    assert entry["request_id"] == record["request_id"]  # Envoy's x-request-id, both sides
    assert entry["path"] == record["path"]
    assert entry["authz_reason"] == record["reason"]
    assert entry["authz_rule"] == (record["rule"] or "")
    assert entry["authz_principal"] == (record["principal"] or "")
    assert entry["authz_dry_run"] is record["dry_run"] is False
    # The session's server does not trace: no ids, in the log or in the record.
    assert entry["authz_trace_id"] is None and "trace_id" not in record


def test_an_allowed_request_is_logged_with_its_decision(
    e2e: Stack, logged: tuple[Proxy, Path]
) -> None:
    proxy, log = logged
    reply = e2e.request(proxy, "/v1/orders/4242?token=secret")
    assert reply.status == 200, reply.body
    upstream_id = reply.json()["headers"]["x-authz-decision-id"]
    entry = _line_for(log, "/v1/orders/4242")  # the query is not logged
    record = _record(e2e, entry["authz_decision_id"])
    _assert_matches(entry, record)
    assert entry["authz_decision_id"] == upstream_id
    assert (entry["authz_reason"], entry["authz_rule"]) == ("allowed_by_rule", "orders-read")
    assert entry["authz_principal"] == entry["peer"] == harness.FRONTEND
    assert (entry["status"], entry["method"]) == (200, "GET")
    assert "secret" not in log.read_text(encoding="utf-8")


def test_a_denied_request_is_logged_with_its_decision(
    e2e: Stack, logged: tuple[Proxy, Path]
) -> None:
    proxy, log = logged
    reply = e2e.request(proxy, "/admin/4242", as_="agent")
    assert reply.status == 403, reply.body
    entry = _line_for(log, "/admin/4242")
    record = _record(e2e, entry["authz_decision_id"])
    _assert_matches(entry, record)
    assert entry["authz_decision_id"] == reply.headers["x-authz-decision-id"]
    assert (entry["authz_reason"], entry["authz_rule"]) == (
        "denied_by_rule",
        "no-admin-from-agents",
    )
    assert entry["authz_principal"] == harness.AGENT
    assert (entry["status"], record["status"]) == (403, 403)
    # Envoy answered for the server: UAEX, "unauthorized by the external service".
    assert entry["response_flags"] == "UAEX"
