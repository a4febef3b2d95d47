"""The Check service traced: one span per Check under the request's parent, child spans
for identity, rules and store calls, and the same ids in the audit record and in Envoy's
dynamic metadata. Tracing off, or an unsampled parent, leaves no trace anywhere."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from authz_server.audit.log import MemoryAudit
from authz_server.check.pipeline import Pipeline
from authz_server.check.service import CheckService
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.state.observed import ObservedStore
from authz_server.telemetry.attributes import SPAN_NAME
from authz_server.telemetry.spans import child
from authz_server.telemetry.tracing import Tracing
from tests.conftest import make_check_request

Memory = tuple[Tracing, InMemorySpanExporter]

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SAMPLED = f"00-{TRACE}-{PARENT}-01"
UNSAMPLED = f"00-{TRACE}-{PARENT}-00"

POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
  require_certificate: false
rules:
  - id: public-orders
    methods: [GET]
    paths: ["/v1/orders/**"]
    unauthenticated: true
    effect: allow
  - id: transfers
    methods: [POST]
    paths: ["/v1/transfers"]
    unauthenticated: true
    effect: allow
    when:
      rate_limit: {requests: 5, per: 1h}
"""


class Rig:
    """A real CheckService over a policy, its store wrapped the way `serve` wraps it."""

    def __init__(self) -> None:
        self.audit = MemoryAudit()
        self.store_errors: list[str] = []
        store = ObservedStore(MemoryStore(), self.store_errors.append, span=child)
        snapshot = Snapshot(load_policy_text(POLICY), TrustBundles.empty())
        self.service = CheckService(Pipeline(store), SnapshotHolder(snapshot), self.audit)

    def check(self, data: bytes) -> Any:
        raw = asyncio.run(self.service.check_bytes(data))
        return external_auth_pb2.CheckResponse.FromString(raw)

    def request(self, traceparent: str | None = None, **fields: Any) -> bytes:
        headers = {"traceparent": traceparent} if traceparent else {}
        data: bytes = make_check_request(headers=headers, **fields).SerializeToString()
        return data


def _metadata(response: Any) -> dict[str, Any]:
    return {k: v for k, v in response.dynamic_metadata.items()}


def _finished(memory: Memory) -> dict[str, ReadableSpan]:
    tracing, exporter = memory
    tracing.provider.force_flush()
    return {span.name: span for span in exporter.get_finished_spans()}


def _ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) of `span`, as hex."""
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def _parent(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


def test_a_check_is_one_server_span_under_the_request_parent(memory: Memory) -> None:
    """The client's traceparent (forwarded by Envoy in the request headers) is the parent;
    identity and rules are its children; the audit record and the metadata name it."""
    rig = Rig()
    response = rig.check(rig.request(SAMPLED, path="/v1/orders/7"))
    assert response.status.code == 0
    spans = _finished(memory)
    check = spans[SPAN_NAME]
    trace_id, span_id = _ids(check)
    assert check.kind is SpanKind.SERVER
    assert (trace_id, _parent(check)) == (TRACE, PARENT)
    for name in ("identity", "rules"):
        assert (_ids(spans[name])[0], _parent(spans[name])) == (TRACE, span_id), name
    attributes = dict(check.attributes or {})
    [record] = rig.audit.records
    assert attributes["authz.decision"] == "allow"
    assert attributes["authz.reason"] == "allowed_by_rule"
    assert attributes["authz.rule"] == "public-orders"
    assert attributes["authz.decision_id"] == record["decision_id"]
    assert attributes["authz.policy_version"] == record["policy_version"]
    ids = {"trace_id": TRACE, "span_id": span_id}
    assert {k: record[k] for k in ids} == ids
    metadata = _metadata(response)
    assert {k: metadata[k] for k in ids} == ids
    assert metadata["decision_id"] == record["decision_id"]


def test_without_a_parent_the_check_starts_its_own_trace(memory: Memory) -> None:
    rig = Rig()
    response = rig.check(rig.request(path="/v1/orders/7"))
    check = _finished(memory)[SPAN_NAME]
    assert check.parent is None
    [record] = rig.audit.records
    assert record["trace_id"] == _ids(check)[0]
    assert _metadata(response)["span_id"] == record["span_id"] == _ids(check)[1]


def test_a_deny_is_traced_and_its_metadata_carries_the_ids(memory: Memory) -> None:
    """Denies reach Envoy's access log with the same fields as allows, ids included."""
    rig = Rig()
    response = rig.check(rig.request(SAMPLED, path="/v1/admin"))
    assert response.status.code != 0
    check = _finished(memory)[SPAN_NAME]
    assert dict(check.attributes or {})["authz.reason"] == "no_identity"
    [record] = rig.audit.records
    metadata = _metadata(response)
    assert metadata["reason"] == record["reason"] == "no_identity"
    assert metadata["trace_id"] == record["trace_id"] == TRACE
    assert metadata["span_id"] == record["span_id"] == _ids(check)[1]
    assert metadata["dry_run"] is False


def test_a_malformed_request_still_gets_a_span(memory: Memory) -> None:
    """Nothing to read a parent from: a root span, and the deny is on it."""
    rig = Rig()
    rig.check(b"\xff\xff not a protobuf")
    check = _finished(memory)[SPAN_NAME]
    assert dict(check.attributes or {})["authz.reason"] == "malformed_request"
    assert "authz.policy_version" in dict(check.attributes or {})
    [record] = rig.audit.records
    assert record["trace_id"] == _ids(check)[0]


def test_store_calls_are_children_of_the_rules(memory: Memory) -> None:
    """A rate-limited rule asks the store: `store.rate_limit` under `rules`."""
    rig = Rig()
    response = rig.check(rig.request(SAMPLED, method="POST", path="/v1/transfers"))
    assert response.status.code == 0
    spans = _finished(memory)
    store = spans["store.rate_limit"]
    assert _parent(store) == _ids(spans["rules"])[1]
    assert store.status.status_code is not StatusCode.ERROR


def test_an_unsampled_parent_leaves_no_trace(memory: Memory) -> None:
    rig = Rig()
    response = rig.check(rig.request(UNSAMPLED, path="/v1/orders/7"))
    assert _finished(memory) == {}
    [record] = rig.audit.records
    assert "trace_id" not in record and "span_id" not in record
    assert "trace_id" not in _metadata(response)


@pytest.mark.parametrize("traceparent", [SAMPLED, None], ids=["with-parent", "without"])
def test_tracing_off_leaves_no_trace(traceparent: str | None) -> None:
    """The default: no span, no ids, and the response is the untraced rendering."""
    rig = Rig()
    raw = asyncio.run(rig.service.check_bytes(rig.request(traceparent, path="/v1/orders/7")))
    [record] = rig.audit.records
    assert "trace_id" not in record and "span_id" not in record
    response = external_auth_pb2.CheckResponse.FromString(raw)
    assert set(_metadata(response)) == {"principal", "rule", "decision_id", "reason", "dry_run"}


def test_an_internal_error_is_an_error_span(memory: Memory) -> None:
    """A Check that fails inside the pipeline is denied internal_error and marks its span."""
    rig = Rig()
    rig.service.pipeline = None  # type: ignore[assignment]  # every evaluation now raises
    response = rig.check(rig.request(SAMPLED, path="/v1/orders/7"))
    assert response.denied_response.status.code == 503
    check = _finished(memory)[SPAN_NAME]
    assert check.status.status_code is StatusCode.ERROR
    assert dict(check.attributes or {})["authz.reason"] == "internal_error"
    assert rig.audit.records[0]["trace_id"] == _metadata(response)["trace_id"] == TRACE
