"""The real grpc.aio server on port 0: Check, health, reflection, bad input, audit."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authz_server.runtime.server import RunningServer, start_server
from authz_server.runtime.settings import Settings
from authz_server.tools import devcerts
from tests.conftest import make_check_request

POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
  require_certificate: true
rules:
  - id: orders-read
    hosts: [orders.internal]
    methods: [GET]
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: health
    paths: ["/healthz"]
    unauthenticated: true
    effect: allow
"""

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
CHECK = "/envoy.service.auth.v3.Authorization/Check"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("pki")
    ca = devcerts.mint_ca("example.org")
    (out / "ca.pem").write_bytes(devcerts.pem(ca.certificate))
    cert, _ = devcerts.mint_svid(ca, FRONTEND)
    compromised, _ = devcerts.mint_svid(ca, "spiffe://example.org/compromised/x")
    return {
        "bundle": str(out / "ca.pem"),
        "frontend": urllib.parse.quote(devcerts.pem(cert).decode(), safe=""),
        "compromised": urllib.parse.quote(devcerts.pem(compromised).decode(), safe=""),
    }


@pytest.fixture
async def server(tmp_path: Path, pki: dict[str, Any]) -> AsyncIterator[RunningServer]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = Settings(
        policy=str(policy),
        listen="127.0.0.1:0",
        trust_bundles={"example.org": pki["bundle"]},
        audit_log=str(tmp_path / "audit.jsonl"),
    )
    running = await start_server(settings)
    yield running
    await running.stop(1.0)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def _check_raw(channel: grpc.aio.Channel, data: bytes) -> Any:
    call = channel.unary_unary(CHECK)
    raw = await call(data, timeout=5)
    return external_auth_pb2.CheckResponse.FromString(raw)


async def test_allow_with_verified_certificate(
    channel: grpc.aio.Channel, pki: dict[str, Any]
) -> None:
    """A verified caller on a matching route is allowed with its identity headers."""
    request = make_check_request(
        path="/v1/orders/42", principal=FRONTEND, certificate=pki["frontend"]
    )
    response = await _check_raw(channel, request.SerializeToString())
    assert response.status.code == 0
    headers = {h.header.key: h.header.value for h in response.ok_response.headers}
    assert headers["x-authz-principal"] == FRONTEND
    assert headers["x-authz-rule"] == "orders-read"


@pytest.mark.parametrize(
    ("build", "status", "reason"),
    [
        pytest.param(
            lambda pki: make_check_request(path="/v1/orders/42", principal=FRONTEND),
            401,
            "certificate_required",
            id="no-certificate",
        ),
        pytest.param(
            lambda pki: make_check_request(path="/v1/orders/42"),
            401,
            "no_identity",
            id="anonymous",
        ),
        pytest.param(
            lambda pki: make_check_request(
                path="/v1/orders/../admin", principal=FRONTEND, certificate=pki["frontend"]
            ),
            400,
            "non_canonical_path",
            id="dot-dot",
        ),
        pytest.param(
            lambda pki: make_check_request(
                method="DELETE",
                path="/v1/orders/42",
                principal=FRONTEND,
                certificate=pki["frontend"],
            ),
            403,
            "no_matching_rule",
            id="wrong-method",
        ),
        pytest.param(
            lambda pki: make_check_request(
                path="/v1/orders/42",
                principal="spiffe://example.org/ns/shop/sa/other",
                certificate=pki["frontend"],
            ),
            401,
            "certificate_mismatch",
            id="principal-not-the-certificate",
        ),
        pytest.param(
            lambda pki: external_auth_pb2.CheckRequest(),
            400,
            "malformed_request",
            id="empty-request",
        ),
        pytest.param(
            lambda pki: external_auth_pb2.CheckRequest(
                attributes={"source": {"principal": FRONTEND, "certificate": pki["frontend"]}}
            ),
            403,
            "unsupported_request",
            id="tcp-check-without-opt-in",
        ),
    ],
)
async def test_denies(
    channel: grpc.aio.Channel, pki: dict[str, Any], build: Any, status: int, reason: str
) -> None:
    """Each refusal carries its HTTP status and reason in the JSON body."""
    response = await _check_raw(channel, build(pki).SerializeToString())
    assert response.denied_response.status.code == status
    body = json.loads(response.denied_response.body)
    assert body["reason"] == reason
    assert body["decision"] == "deny"


async def test_anonymous_health_check_allowed(channel: grpc.aio.Channel) -> None:
    """An `unauthenticated: true` rule admits a caller without identity."""
    response = await _check_raw(channel, make_check_request(path="/healthz").SerializeToString())
    assert response.status.code == 0


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xff\xff\xff", id="garbage"),
        pytest.param(b"\x0a\x05\x0a\x03", id="truncated"),
        pytest.param(b"\x0a" + b"\xff" * 10, id="bad-length"),
    ],
)
async def test_malformed_bytes_are_a_deny_not_an_error(
    channel: grpc.aio.Channel, data: bytes
) -> None:
    """Bytes that are no CheckRequest get a 400 malformed_request deny, not a gRPC error."""
    response = await _check_raw(channel, data)
    assert response.denied_response.status.code == 400
    assert json.loads(response.denied_response.body)["reason"] == "malformed_request"


async def test_server_survives_bad_input_and_keeps_answering(
    channel: grpc.aio.Channel, pki: dict[str, Any]
) -> None:
    """After a burst of junk the server still decides correctly."""
    for data in (
        b"",
        b"\x00",
        b"\xff" * 1000,
        make_check_request(principal="SPIFFE://X").SerializeToString(),
    ):
        await _check_raw(channel, data)
    request = make_check_request(
        path="/v1/orders/1", principal=FRONTEND, certificate=pki["frontend"]
    )
    assert (await _check_raw(channel, request.SerializeToString())).status.code == 0


async def test_internal_error_fails_closed(
    server: RunningServer, channel: grpc.aio.Channel
) -> None:
    """An unexpected exception inside the pipeline is a 503 internal_error deny."""

    class Broken:
        def evaluate(self, *args: object, **kwargs: object) -> object:
            raise RuntimeError("boom")

    server.service.pipeline = Broken()  # type: ignore[assignment]
    response = await _check_raw(channel, make_check_request().SerializeToString())
    assert response.denied_response.status.code == 503
    assert json.loads(response.denied_response.body)["reason"] == "internal_error"


async def test_health_serving(channel: grpc.aio.Channel) -> None:
    """Health is SERVING once policy and bundles are loaded."""
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "envoy.service.auth.v3.Authorization"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_not_serving_without_bundles(tmp_path: Path) -> None:
    """With require_certificate and no bundle for the trust domain, health says NOT_SERVING
    and Checks are denied."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    running = await start_server(Settings(policy=str(policy), listen="127.0.0.1:0"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            response = await _check_raw(
                channel, make_check_request(path="/healthz").SerializeToString()
            )
            assert response.denied_response.status.code == 503
    finally:
        await running.stop(1.0)


async def test_reflection_lists_services(channel: grpc.aio.Channel) -> None:
    """Server reflection advertises Check and health."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[Any]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for reply in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in reply.list_services_response.service}
    assert "envoy.service.auth.v3.Authorization" in names
    assert "grpc.health.v1.Health" in names


async def test_audit_record_per_decision(
    server: RunningServer, channel: grpc.aio.Channel, pki: dict[str, Any], tmp_path: Path
) -> None:
    """Every decision writes one chained JSON line; no body or authorization value."""
    secret = "Bearer super-secret-token"
    allowed = make_check_request(
        method="GET",
        path="/v1/orders/7",
        principal=FRONTEND,
        certificate=pki["frontend"],
        headers={"authorization": secret, "x-request-id": "req-7"},
        body=b'{"card":"4111111111111111"}',
    )
    first = await _check_raw(channel, allowed.SerializeToString())
    second = await _check_raw(channel, make_check_request(path="/nope").SerializeToString())
    server.audit.flush()
    text = (tmp_path / "audit.jsonl").read_text()
    assert "super-secret-token" not in text
    assert "4111111111111111" not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 2
    ids = [
        h.header.value for h in first.ok_response.headers if h.header.key == "x-authz-decision-id"
    ]
    assert records[0]["decision_id"] == ids[0]
    assert records[0]["request_id"] == "req-7"
    assert records[0]["decision"] == "allow"
    assert records[0]["principal"] == FRONTEND
    assert records[0]["identity_source"] == "peer"
    assert records[0]["body_digest"].startswith("sha256:")
    assert records[1]["reason"] == json.loads(second.denied_response.body)["reason"]
    assert records[1]["prev"] == records[0]["hash"]
    expected_keys = {
        "time",
        "decision_id",
        "request_id",
        "principal",
        "identity_source",
        "method",
        "host",
        "path",
        "rule",
        "decision",
        "reason",
        "status",
        "dry_run",
        "policy_version",
        "latency_us",
        "body_digest",
        "approval_id",
        "approver",
        "prev",
        "hash",
    }
    assert set(records[0]) == expected_keys


NON_HTTP_POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
  require_certificate: true
  deny: ["spiffe://example.org/compromised/**"]
defaults:
  non_http: allow
rules: []
"""


def _tcp_check(principal: str = "", certificate: str = "") -> Any:
    """A CheckRequest as Envoy's network (TCP) ext_authz filter sends it: no HTTP part."""
    return external_auth_pb2.CheckRequest(
        attributes={"source": {"principal": principal, "certificate": certificate}}
    )


@pytest.mark.parametrize(
    ("build", "status", "reason"),
    [
        pytest.param(lambda pki: _tcp_check(FRONTEND, pki["frontend"]), 200, "allowed_by_default", id="verified-peer"),
        pytest.param(lambda pki: external_auth_pb2.CheckRequest(), 400, "malformed_request", id="empty-request"),
        pytest.param(lambda pki: _tcp_check(), 401, "no_identity", id="anonymous"),
        pytest.param(lambda pki: _tcp_check("spiffe://evil.com/x"), 401, "untrusted_trust_domain", id="foreign-domain"),
        pytest.param(lambda pki: _tcp_check(FRONTEND), 401, "certificate_required", id="no-certificate"),
        pytest.param(lambda pki: _tcp_check("spiffe://example.org/compromised/x", pki["compromised"]), 403, "revoked", id="revoked"),
    ],
)  # fmt: skip
async def test_non_http_opt_in_still_requires_identity(
    tmp_path: Path, pki: dict[str, Any], build: Any, status: int, reason: str
) -> None:
    """`defaults.non_http: allow` admits TCP-filter checks only from a verified, unrevoked
    identity; an empty CheckRequest is never one of them."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(NON_HTTP_POLICY)
    settings = Settings(
        policy=str(policy),
        listen="127.0.0.1:0",
        trust_bundles={"example.org": pki["bundle"]},
    )
    running = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            response = await _check_raw(channel, build(pki).SerializeToString())
    finally:
        await running.stop(1.0)
    if status == 200:
        assert response.status.code == 0
        headers = {h.header.key: h.header.value for h in response.ok_response.headers}
        assert headers["x-authz-principal"] == FRONTEND
    else:
        assert response.denied_response.status.code == status
        assert json.loads(response.denied_response.body)["reason"] == reason
