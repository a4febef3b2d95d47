"""Traces through real Envoy: Envoy's OpenTelemetry tracer and a real `serve
--otlp-endpoint` export to the same OTLP receiver (in this process), and the server's
Check span lands in the client's trace, under the span of Envoy's ext_authz call, with
the decision's attributes; the audit record names the same trace and span.

The front proxy is the shipped one with tracing turned on in its HTTP connection manager
(`envoy.tracers.opentelemetry`, exporting over gRPC to a cluster that points at the
receiver) and nothing else changed; the client sends a sampled W3C `traceparent`.

Who decides what is traced (docs/operations/observability.md#trace-sampling): with
Envoy's tracing off the client's sampled flag is obeyed; the documented
`disallowed_headers` takes that decision from the client, and so does the documented
sampler of Envoy's tracer when Envoy's tracing is on.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_server.telemetry.attributes import SPAN_NAME
from authz_server.telemetry.receiver import OtlpReceiver, ReceivedSpan
from authz_server.tools import stack
from tests.e2e import harness
from tests.e2e.conftest import Proxy, Stack

pytestmark = pytest.mark.e2e

TRACE = "5b8efff798038103d269b633813fc60c"
CLIENT_SPAN = "eee19b7ec3c1b174"
ENVOY_SERVICE = "front-proxy"
SERVER_KIND = 2  # SPAN_KIND_SERVER
CLIENT_KIND = 3  # SPAN_KIND_CLIENT


OBSERVABILITY = harness.ROOT / "docs" / "operations" / "observability.md"


def documented(key: str) -> dict[str, Any]:
    """The YAML block of the observability page that sets `key`, parsed."""
    blocks = re.findall(r"^( *)```yaml\n(.*?)^\1```", OBSERVABILITY.read_text(), re.M | re.S)
    [text] = [textwrap.dedent(body) for _, body in blocks if f"{key}:" in body]
    parsed: dict[str, Any] = yaml.safe_load(text)
    return parsed


def _hcm(document: dict[str, Any]) -> dict[str, Any]:
    [listener] = document["static_resources"]["listeners"]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def without_client_trace_headers(config: str) -> str:
    """The documented `disallowed_headers` added to the ext_authz filter."""
    document = yaml.safe_load(config)
    ext_authz = _hcm(document)["http_filters"][0]
    assert ext_authz["name"] == "envoy.filters.http.ext_authz"
    ext_authz["typed_config"].update(documented("disallowed_headers"))
    return str(yaml.safe_dump(document, sort_keys=False))


def with_tracing(config: str, receiver_port: int, sampler: dict[str, Any] | None = None) -> str:
    """Tracing on in the front proxy's connection manager, spans to the receiver."""
    document = yaml.safe_load(config)
    provider: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "grpc_service": {"envoy_grpc": {"cluster_name": "otel"}, "timeout": "1s"},
        "service_name": ENVOY_SERVICE,
        **(sampler or {}),
    }
    _hcm(document)["tracing"] = {
        "random_sampling": {"value": 100},
        "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": provider},
    }
    document["static_resources"]["clusters"].append(
        {
            "name": "otel",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "otel",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": receiver_port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
        }
    )
    # Export each span as it ends (Envoy batches 5 by default) and poll often.
    document["layered_runtime"] = {
        "layers": [
            {
                "name": "export-at-once",
                "static_layer": {
                    "tracing.opentelemetry.min_flush_spans": 1,
                    "tracing.opentelemetry.flush_interval_ms": 100,
                },
            }
        ]
    }
    return str(yaml.safe_dump(document, sort_keys=False))


@dataclass
class Traced:
    """A `serve --otlp-endpoint` of its own, and front proxies started in front of it."""

    e2e: Stack
    authz: stack.Service
    receiver: OtlpReceiver
    audit_log: Path
    proxies: dict[str, Proxy] = field(default_factory=dict)

    def front(self, name: str, variant: Callable[[str], str]) -> Proxy:
        """The shipped front proxy changed by `variant`, in front of this server (once)."""
        if name not in self.proxies:
            port, admin = stack.free_port(), stack.free_port()
            config = harness.render_front_proxy(
                self.e2e.certs,
                authz_port=self.authz.port,
                backend_port=self.e2e.backend.port,
                listen_port=port,
                admin_port=admin,
            )
            service = stack.start_envoy(
                self.e2e.workdir / "logs", name, variant(config), listen_port=port
            )
            self.e2e.services.append(service)  # stopped at session end at the latest
            self.proxies[name] = Proxy(name, port, service)
        return self.proxies[name]

    @property
    def tracing_proxy(self) -> Proxy:
        return self.front("envoy-traced", lambda c: with_tracing(c, self.receiver.port))


@pytest.fixture(scope="module")
def traced(e2e: Stack) -> Iterator[Traced]:
    """A `serve --otlp-endpoint` of its own, exporting to a receiver in this process."""
    receiver = OtlpReceiver()
    receiver.start()
    audit_log = e2e.workdir / "traced-audit.jsonl"
    policy = e2e.workdir / "traced-policy.yaml"
    policy.write_text(harness.POLICY, encoding="utf-8")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # the serve process inherits it
        authz = stack.start_authz(
            e2e.workdir / "logs",
            policy=policy,
            bundles={"example.org": e2e.certs.ca, "partner.org": e2e.certs.partner_ca},
            audit_log=audit_log,
            extra_args=["--otlp-endpoint", receiver.endpoint],
            name="authz-traced",
        )
    e2e.services.append(authz)
    traced = Traced(e2e, authz, receiver, audit_log)
    try:
        yield traced
    finally:
        for proxy in traced.proxies.values():
            proxy.service.stop()
        authz.stop()
        receiver.stop()


def _check_span(receiver: OtlpReceiver, decision_id: str, timeout: float = 10.0) -> ReceivedSpan:
    """The server's Check span of `decision_id`, once exported."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            s
            for s in receiver.spans
            if s.name == SPAN_NAME and s.attributes.get("authz.decision_id") == decision_id
        ]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, [s.name for s in receiver.spans]
            return found[0]
        time.sleep(0.05)


def _envoy_spans(receiver: OtlpReceiver, trace_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Envoy's spans of `trace_id` by span id: the ingress span and the ext_authz call."""
    deadline = time.monotonic() + timeout
    while True:
        spans = {
            s.span_id: s
            for s in receiver.spans
            if s.trace_id == trace_id and s.resource.get("service.name") == ENVOY_SERVICE
        }
        if len(spans) >= 2 or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("path", "as_", "status", "decision", "reason", "rule", "principal"),
    [
        pytest.param(
            "/v1/orders/9", "frontend", 200, "allow", "allowed_by_rule", "orders-read",
            harness.FRONTEND, id="allow",
        ),
        pytest.param(
            "/admin/9", "agent", 403, "deny", "denied_by_rule", "no-admin-from-agents",
            harness.AGENT, id="deny",
        ),
    ],
)  # fmt: skip
def test_the_check_span_joins_the_clients_trace_under_envoys_span(
    e2e: Stack,
    traced: Traced,
    path: str,
    as_: str,
    status: int,
    decision: str,
    reason: str,
    rule: str,
    principal: str,
) -> None:
    traceparent = f"00-{TRACE}-{CLIENT_SPAN}-01"
    reply = e2e.request(traced.tracing_proxy, path, as_=as_, headers=[("traceparent", traceparent)])
    assert reply.status == status, reply.body
    decision_id = (
        reply.json()["headers"]["x-authz-decision-id"]
        if status == 200
        else reply.headers["x-authz-decision-id"]
    )
    check = _check_span(traced.receiver, decision_id)
    envoy = _envoy_spans(traced.receiver, TRACE)

    # In the client's trace, under the span of Envoy's ext_authz call (a CLIENT span of
    # the gRPC Check), whose own ancestry leads back to the client's span.
    assert (check.trace_id, check.kind) == (TRACE, SERVER_KIND)
    assert check.parent_span_id in envoy, (check.parent_span_id, list(envoy))
    ancestor = envoy[check.parent_span_id]
    assert "Authorization.Check" in ancestor.name and ancestor.kind == CLIENT_KIND
    while ancestor.parent_span_id in envoy:
        ancestor = envoy[ancestor.parent_span_id]
    assert ancestor.parent_span_id == CLIENT_SPAN
    assert check.resource["service.name"] == "authz-server"

    attributes = check.attributes
    assert attributes["authz.decision"] == decision
    assert attributes["authz.reason"] == reason
    assert attributes["authz.rule"] == rule
    assert attributes["authz.principal"] == principal
    assert attributes["authz.identity_source"] == "peer"
    assert attributes["authz.dry_run"] is False
    assert attributes["rpc.method"] == "Check"
    children = {s.name for s in traced.receiver.spans if s.parent_span_id == check.span_id}
    assert {"identity", "rules"} <= children

    [record] = harness.wait_for_audit(traced.audit_log, decision_id)
    assert (record["trace_id"], record["span_id"]) == (TRACE, check.span_id)
    assert attributes["authz.policy_version"] == record["policy_version"]


# --- who decides what is traced ---------------------------------------------------------

SAMPLED = f"00-{TRACE}-{CLIENT_SPAN}-01"


def _allowed(e2e: Stack, proxy: Proxy) -> str:
    """The decision id of an allowed request sent with the client's sampled traceparent."""
    reply = e2e.request(proxy, "/v1/orders/31", headers=[("traceparent", SAMPLED)])
    assert reply.status == 200, reply.body
    decision_id: str = reply.json()["headers"]["x-authz-decision-id"]
    return decision_id


def _record(traced: Traced, decision_id: str) -> dict[str, Any]:
    [record] = harness.wait_for_audit(traced.audit_log, decision_id)
    return record


def test_with_envoys_tracing_off_the_client_decides(e2e: Stack, traced: Traced) -> None:
    """The shipped front proxy: the client's sampled flag makes the server trace, in the
    client's trace under the client's span."""
    proxy = traced.front("envoy-untraced", lambda c: c)
    decision_id = _allowed(e2e, proxy)
    check = _check_span(traced.receiver, decision_id)
    assert (check.trace_id, check.parent_span_id) == (TRACE, CLIENT_SPAN)
    assert _record(traced, decision_id)["trace_id"] == TRACE


def test_disallowed_trace_headers_take_the_decision_from_the_client(
    e2e: Stack, traced: Traced
) -> None:
    """The documented `disallowed_headers`: the Check has no parent, so the server's own
    root sampler decides (always, by default): a trace of its own, not the client's."""
    proxy = traced.front("envoy-no-client-context", without_client_trace_headers)
    decision_id = _allowed(e2e, proxy)
    check = _check_span(traced.receiver, decision_id)
    assert check.parent_span_id == "" and check.trace_id != TRACE
    assert _record(traced, decision_id)["trace_id"] == check.trace_id


def test_envoys_sampler_decides_over_the_client(e2e: Stack, traced: Traced) -> None:
    """The documented sampler of Envoy's tracer, at 0 %: Envoy's span is not sampled,
    its context tells the server so, and the client's sampled flag changes nothing."""
    sampler = documented("sampler")
    sampler["sampler"]["typed_config"]["sampling_percentage"]["numerator"] = 0
    proxy = traced.front("envoy-sampler", lambda c: with_tracing(c, traced.receiver.port, sampler))
    decision_id = _allowed(e2e, proxy)
    record = _record(traced, decision_id)
    assert "trace_id" not in record and "span_id" not in record
