"""`serve` with its store and admin API wired: approvals, rate limits and revocations
through the real gRPC Check, on the memory store and on a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz_server.admin import authz_admin_pb2 as pb
from authz_server.runtime.server import RunningServer, start_server
from authz_server.tools import devcerts
from tests.integration.serve_support import (
    ALICE,
    Files,
    admin_call,
    approval_id_for,
    approve,
    deny_body,
    header,
    release,
    transfer,
    write_files,
)
from tests.integration.support import CHECK, check, eventually, outcome, readyz, request_for
from tests.redis_server import RedisServer


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return write_files(tmp_path)


@pytest.fixture(params=["memory", "redis"])
async def served(
    request: pytest.FixtureRequest, files: Files
) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    """A running server on the memory store or a real (flushed) Redis, and a channel to it."""
    store = "memory" if request.param == "memory" else request.getfixturevalue("redis_url")
    audit = str(files.dir / "audit.jsonl")
    running = await start_server(files.settings(store=store, audit_log=audit))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield running, channel
    await running.stop(1.0)


async def test_fifty_concurrent_approved_checks_allow_one(
    served: tuple[RunningServer, grpc.aio.Channel], files: Files
) -> None:
    """After one approval, 50 identical concurrent Checks: exactly one allowed, and its
    audit record names the approval and its approver."""
    running, channel = served
    assert running.admin_port is not None
    approval_id = await approval_id_for(channel, release())
    approved = await approve(running.admin_port, files, approval_id)
    assert (approved.status, approved.decided_by) == ("approved", ALICE)
    responses = await asyncio.gather(*(check(channel, release()) for _ in range(50)))
    outcomes = [outcome(r) for r in responses]
    assert outcomes.count("allow") == 1
    assert outcomes.count("approval_required") == 49
    running.audit.flush()
    records = [json.loads(line) for line in (files.dir / "audit.jsonl").read_text().splitlines()]
    allowed = [r for r in records if r.get("decision") == "allow"]
    assert [(r["rule"], r["approval_id"], r["approver"]) for r in allowed] == [
        ("releases-publish", approval_id, ALICE)
    ]


async def test_rate_limit_through_check(served: tuple[RunningServer, grpc.aio.Channel]) -> None:
    """Two per hour: the third Check is 429 rate_limited with retry-after; others unaffected."""
    _, channel = served
    responses = [await check(channel, transfer()) for _ in range(3)]
    assert [outcome(r) for r in responses] == ["allow", "allow", "rate_limited"]
    limited = responses[2]
    assert limited.denied_response.status.code == 429
    retry = header(limited, "retry-after")
    assert retry is not None and 3500 < int(retry) <= 3600
    assert deny_body(limited)["rule"] == "transfers"
    assert outcome(await check(channel, request_for("spiffe://example.org/x"))) == "allow"


async def test_revocation_through_admin_api(
    served: tuple[RunningServer, grpc.aio.Channel], files: Files
) -> None:
    """A Revoke through the admin API denies the next Check `revoked`; Unrevoke lifts it."""
    running, channel = served
    assert running.admin_port is not None
    agent = "spiffe://example.org/agents/acme/bot"
    assert outcome(await check(channel, request_for(agent))) == "allow"
    request = pb.RevokeRequest(pattern="spiffe://example.org/agents/*/*", ttl_seconds=60,
                               reason="leaked key")  # fmt: skip
    alice = files.pair("alice")
    await admin_call(running.admin_port, files, "Revoke", request, pb.Revocation, alice)
    response = await check(channel, request_for(agent))
    assert (outcome(response), response.denied_response.status.code) == ("revoked", 403)
    lift = pb.UnrevokeRequest(pattern="spiffe://example.org/agents/*/*")
    await admin_call(running.admin_port, files, "Unrevoke", lift, pb.UnrevokeResponse, alice)
    await eventually(
        lambda: _allowed(channel, request_for(agent)), "the revocation is lifted", timeout=5
    )


async def _allowed(channel: grpc.aio.Channel, request: object) -> bool:
    return outcome(await check(channel, request)) == "allow"


@pytest.mark.parametrize(
    ("who", "requester", "code", "message"),
    [
        pytest.param(None, "release", grpc.StatusCode.UNAVAILABLE, "", id="no-client-certificate"),
        pytest.param("rogue", "release", grpc.StatusCode.UNAVAILABLE, "", id="untrusted-ca"),
        pytest.param("bob", "release", grpc.StatusCode.PERMISSION_DENIED,
                     "is not an approver of rule 'releases-publish'", id="not-an-approver"),
        pytest.param("alice", "alice", grpc.StatusCode.PERMISSION_DENIED,
                     "separation of duties", id="own-request"),
    ],
)  # fmt: skip
async def test_approve_refusals_with_serve_wiring(
    files: Files,
    who: str | None,
    requester: str,
    code: grpc.StatusCode,
    message: str,
) -> None:
    """The serve-wired admin API refuses callers without a certificate, from an untrusted
    CA, outside the rule's approvers, or approving their own request; nothing is allowed."""
    files.identity("rogue", ALICE, devcerts.mint_ca("example.org", name="rogue CA"))
    running = await start_server(files.settings())
    try:
        assert running.admin_port is not None
        principal = ALICE if requester == "alice" else "spiffe://example.org/ci/release"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            approval_id = await approval_id_for(channel, release(principal))
            identity = files.pair(who) if who else None
            decide = pb.DecideRequest(approval_id=approval_id)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin_call(
                    running.admin_port, files, "Approve", decide, pb.Approval, identity
                )
            assert refused.value.code() is code
            assert message in (refused.value.details() or "")
            assert outcome(await check(channel, release(principal))) == "approval_required"
    finally:
        await running.stop(1.0)


async def test_admin_client_cas_follow_bundle_reloads(files: Files) -> None:
    """A human with an SVID from a CA added to the trust bundle file can call the admin API
    once the server reloads the bundle, without a restart."""
    running = await start_server(files.settings())
    try:
        assert running.admin_port is not None
        rotated = devcerts.mint_ca("example.org", name="rotated CA")
        files.identity("carol", "spiffe://example.org/humans/carol", rotated)
        carol = files.pair("carol")
        info = pb.GetPolicyRequest()
        with pytest.raises(grpc.aio.AioRpcError):
            await admin_call(running.admin_port, files, "GetPolicy", info, pb.PolicyInfo, carol)
        files.ca_file.write_bytes(
            devcerts.pem(files.ca.certificate) + devcerts.pem(rotated.certificate)
        )

        async def accepted() -> bool:
            try:
                port = running.admin_port
                assert port is not None
                await admin_call(port, files, "GetPolicy", info, pb.PolicyInfo, carol)
            except grpc.aio.AioRpcError:
                return False
            return True

        await eventually(accepted, "the admin API accepts the rotated CA", timeout=10)
    finally:
        await running.stop(1.0)


async def test_redis_outage_fails_closed_and_recovers(own_redis: RedisServer, files: Files) -> None:
    """Redis killed mid-run: rules needing it deny internal_error, the others keep answering,
    /readyz and metrics report it; after a restart everything recovers, and the approval
    lost with Redis's data is asked for again: nothing is allowed that should not be."""
    running = await start_server(files.settings(store=own_redis.url))
    try:
        assert running.admin_port is not None and running.metrics_port is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            assert outcome(await check(channel, request_for(ALICE))) == "allow"
            approval_id = await approval_id_for(channel, release())
            await approve(running.admin_port, files, approval_id)

            own_redis.kill()
            assert outcome(await check(channel, request_for(ALICE))) == "allow"
            for request in (release(), transfer()):
                response = await check(channel, request)
                assert (outcome(response), response.denied_response.status.code) == (
                    "internal_error", 503,
                )  # fmt: skip
            status, body = await readyz(running.metrics_port)
            assert status == 503 and body["checks"]["store"].startswith("store unreachable")
            metrics = running.metrics.registry.get_sample_value(
                "authz_store_errors_total", {"operation": "consume"}
            )
            assert metrics is not None and metrics >= 1

            own_redis.restart()
            port = running.metrics_port

            async def ready() -> bool:
                return (await readyz(port))[0] == 200

            await eventually(ready, "/readyz after the restart", timeout=10)
            assert outcome(await check(channel, transfer())) == "allow"
            assert outcome(await check(channel, release())) == "approval_required"
    finally:
        await running.stop(1.0)


async def test_frozen_redis_does_not_stall_checks_on_store_free_rules(
    own_redis: RedisServer, files: Files
) -> None:
    """Redis frozen (SIGSTOP) with a revocation refresh stuck on it: a Check on a rule that
    needs no store still answers allow within Envoy's 0.5 s ext_authz timeout."""
    running = await start_server(files.settings(store=own_redis.url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            assert outcome(await check(channel, request_for(ALICE))) == "allow"
            own_redis.pause()
            await asyncio.sleep(0.7)  # past one refresh interval: a refresh is now stuck
            raw = await channel.unary_unary(CHECK)(
                request_for(ALICE).SerializeToString(), timeout=0.5
            )
            response = external_auth_pb2.CheckResponse.FromString(raw)
            assert outcome(response) == "allow"
    finally:
        own_redis.resume()
        await running.stop(1.0)
