"""The admin API on a real grpc.aio server with mutual TLS: who may do what, and the effects."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from authz_server.admin import authz_admin_pb2 as pb
from authz_server.admin.server import AdminServer
from authz_server.check.snapshot import Snapshot
from authz_server.state.memory import MemoryStore
from authz_server.state.redis import RedisStore
from authz_server.state.store import ApprovalState
from authz_server.tools import devcerts
from authz_server.tools.stack import free_port
from tests.integration.admin_support import (
    ALICE,
    BOB,
    CAROL,
    FRONTEND,
    RELEASE,
    Pki,
    call,
    pending,
    refused,
    start_admin,
)


async def test_admin_lists_and_reads_policy(
    admin: AdminServer, pki: Pki, snapshot: Snapshot
) -> None:
    """An admin principal with a valid SVID lists approvals and reads the policy status."""
    alice = pki.client(ALICE)
    listed = await call(
        admin, pki, "ListApprovals", pb.ListApprovalsRequest(), pb.ListApprovalsResponse, alice
    )
    assert list(listed.approvals) == []
    info = await call(admin, pki, "GetPolicy", pb.GetPolicyRequest(), pb.PolicyInfo, alice)
    assert (info.version, info.rule_count) == (snapshot.policy.version, 1)
    assert info.last_reload_error == "policy.yaml:3: bad"


async def test_client_certificate_required(admin: AdminServer, pki: Pki) -> None:
    """Without a client certificate the TLS handshake fails: nothing is served."""
    error = await refused(admin, pki, "GetPolicy", pb.GetPolicyRequest(), pb.PolicyInfo, None)
    assert error.code() is grpc.StatusCode.UNAVAILABLE


async def test_untrusted_ca_refused(admin: AdminServer, pki: Pki) -> None:
    """A certificate from a CA in no trust bundle fails the handshake."""
    rogue = pki.client(ALICE, pki.rogue)
    error = await refused(admin, pki, "GetPolicy", pb.GetPolicyRequest(), pb.PolicyInfo, rogue)
    assert error.code() is grpc.StatusCode.UNAVAILABLE


async def test_partner_ca_cannot_mint_our_ids(admin: AdminServer, pki: Pki) -> None:
    """A trusted partner CA's SVID naming an example.org admin is refused (per-domain roots)."""
    forged = pki.client(ALICE, pki.partner)
    error = await refused(admin, pki, "GetPolicy", pb.GetPolicyRequest(), pb.PolicyInfo, forged)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "does not chain to the trust bundle of 'example.org'" in (error.details() or "")


@pytest.mark.parametrize(
    ("spiffe_id", "options", "message"),
    [
        pytest.param("spiffe://example.org", {}, "names a trust domain, not a workload", id="bare-trust-domain"),
        pytest.param(ALICE, {"eku": "client_auth"}, "lacks id-kp-serverAuth", id="eku-client-auth-only"),
        pytest.param(ALICE, {"key_usage_critical": False}, "is not marked critical", id="key-usage-not-critical"),
    ],
)  # fmt: skip
async def test_svid_rules_apply_to_admins(
    admin: AdminServer, pki: Pki, spiffe_id: str, options: dict[str, Any], message: str
) -> None:
    """A certificate that passes the TLS handshake but breaks an X509-SVID leaf rule is
    UNAUTHENTICATED, whatever `admin.principals` says."""
    cert, key = devcerts.mint_svid(pki.ca, spiffe_id, **options)
    identity = pki._write(f"bad-{len(pki.files)}", cert, key)
    error = await refused(admin, pki, "GetPolicy", pb.GetPolicyRequest(), pb.PolicyInfo, identity)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert message in (error.details() or "")


async def test_non_admin_refused(admin: AdminServer, pki: Pki) -> None:
    """A verified principal outside admin.principals gets PERMISSION_DENIED."""
    frontend = pki.client(FRONTEND)
    error = await refused(
        admin, pki, "ListApprovals", pb.ListApprovalsRequest(), pb.ListApprovalsResponse, frontend
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "admin.principals" in (error.details() or "")


@pytest.mark.parametrize(
    ("approver", "requester", "message"),
    [
        pytest.param(
            BOB, RELEASE, "is not an approver of rule 'releases-publish'", id="not-an-approver"
        ),
        pytest.param(CAROL, CAROL, "separation of duties", id="own-action"),
    ],
)
async def test_approve_refused(
    admin: AdminServer,
    pki: Pki,
    admin_store: MemoryStore,
    approver: str,
    requester: str,
    message: str,
) -> None:
    """Only a matching approver who is not the requester may approve; nothing changes otherwise."""
    action = pending(requester)
    await admin_store.consume(action)
    request = pb.DecideRequest(approval_id=action.approval_id)
    error = await refused(admin, pki, "Approve", request, pb.Approval, pki.client(approver))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert message in (error.details() or "")
    assert (await admin_store.consume(action)).state is ApprovalState.REQUIRED


async def test_approve_then_single_use(
    admin: AdminServer, pki: Pki, admin_store: MemoryStore
) -> None:
    """An approval by an approver lets the identical action through exactly once."""
    action = pending()
    await admin_store.consume(action)
    request = pb.DecideRequest(approval_id=action.approval_id)
    approval = await call(admin, pki, "Approve", request, pb.Approval, pki.client(ALICE))
    assert (approval.status, approval.decided_by, approval.principal) == (
        "approved",
        ALICE,
        RELEASE,
    )
    assert (await admin_store.consume(action)).state is ApprovalState.GRANTED
    assert (await admin_store.consume(action)).state is ApprovalState.REQUIRED


async def test_reject_denies_retries(
    admin: AdminServer, pki: Pki, admin_store: MemoryStore
) -> None:
    """A rejected action is denied on retry (approval_denied), not merely pending."""
    action = pending()
    await admin_store.consume(action)
    request = pb.DecideRequest(approval_id=action.approval_id)
    approval = await call(admin, pki, "Reject", request, pb.Approval, pki.client(CAROL))
    assert approval.status == "rejected"
    assert (await admin_store.consume(action)).state is ApprovalState.DENIED
    again = await refused(admin, pki, "Approve", request, pb.Approval, pki.client(ALICE))
    assert again.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert f"already rejected by {CAROL}" in (again.details() or "")


@pytest.mark.parametrize(
    ("approval_id", "code"),
    [
        pytest.param("0" * 64, grpc.StatusCode.NOT_FOUND, id="unknown"),
        pytest.param("../../etc", grpc.StatusCode.INVALID_ARGUMENT, id="malformed"),
        pytest.param("A" * 64, grpc.StatusCode.INVALID_ARGUMENT, id="upper-case"),
    ],
)
async def test_approve_bad_ids(
    admin: AdminServer, pki: Pki, approval_id: str, code: grpc.StatusCode
) -> None:
    """Unknown and malformed approval ids are refused with distinct codes."""
    request = pb.DecideRequest(approval_id=approval_id)
    error = await refused(admin, pki, "Approve", request, pb.Approval, pki.client(ALICE))
    assert error.code() is code


async def test_revocations(admin: AdminServer, pki: Pki, admin_store: MemoryStore) -> None:
    """Revoke, list and unrevoke; a revoked admin loses its admin rights at once."""
    alice, bob = pki.client(ALICE), pki.client(BOB)
    revoke = pb.RevokeRequest(pattern=BOB, ttl_seconds=600, reason="laptop stolen")
    made = await call(admin, pki, "Revoke", revoke, pb.Revocation, alice)
    assert (made.pattern, made.revoked_by, made.reason) == (BOB, ALICE, "laptop stolen")
    listed = await call(
        admin,
        pki,
        "ListRevocations",
        pb.ListRevocationsRequest(),
        pb.ListRevocationsResponse,
        alice,
    )
    assert [r.pattern for r in listed.revocations] == [BOB]
    error = await refused(admin, pki, "GetPolicy", pb.GetPolicyRequest(), pb.PolicyInfo, bob)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "laptop stolen" in (error.details() or "")
    lifted = await call(
        admin, pki, "Unrevoke", pb.UnrevokeRequest(pattern=BOB), pb.UnrevokeResponse, alice
    )
    assert lifted.removed is True
    await call(admin, pki, "GetPolicy", pb.GetPolicyRequest(), pb.PolicyInfo, bob)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(
            pb.RevokeRequest(pattern="spiffe://Example.org/x", ttl_seconds=60, reason="r"),
            id="bad-pattern",
        ),
        pytest.param(pb.RevokeRequest(pattern=BOB, ttl_seconds=0, reason="r"), id="no-ttl"),
        pytest.param(pb.RevokeRequest(pattern=BOB, ttl_seconds=60, reason=""), id="no-reason"),
    ],
)
async def test_revoke_invalid(admin: AdminServer, pki: Pki, request_: Any) -> None:
    """A bad pattern, ttl or reason is INVALID_ARGUMENT."""
    error = await refused(admin, pki, "Revoke", request_, pb.Revocation, pki.client(ALICE))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_explain(admin: AdminServer, pki: Pki) -> None:
    """Explain evaluates a described request against the live policy and returns the trace."""
    request = pb.ExplainRequest(principal=RELEASE, method="POST", path="/v1/releases/7?x=1")
    explained = await call(admin, pki, "Explain", request, pb.ExplainResponse, pki.client(ALICE))
    assert (explained.decision, explained.reason, explained.rule) == (
        "allow",
        "allowed_by_rule",
        "releases-publish",
    )
    assert explained.trace[0]["rule"] == "releases-publish"


async def test_store_down_is_unavailable(pki: Pki, snapshot: Snapshot) -> None:
    """When the store cannot be reached, calls fail with UNAVAILABLE, never a silent success."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    server = await start_admin(pki, store, lambda: snapshot)
    try:
        error = await refused(
            server,
            pki,
            "ListApprovals",
            pb.ListApprovalsRequest(),
            pb.ListApprovalsResponse,
            pki.client(ALICE),
        )
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "state store unavailable" in (error.details() or "")
    finally:
        await server.stop(0)
        await store.close()


async def test_no_policy_is_unavailable(pki: Pki, admin_store: MemoryStore) -> None:
    """Before a policy is loaded nobody can be authorized: UNAVAILABLE."""
    server = await start_admin(pki, admin_store, lambda: None)
    try:
        error = await refused(
            server, pki, "GetPolicy", pb.GetPolicyRequest(), pb.PolicyInfo, pki.client(ALICE)
        )
        assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, "no policy loaded")
    finally:
        await server.stop(0)
