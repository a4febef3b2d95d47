"""`authz-server approvals|revoke|unrevoke` against a real admin server, and its setup rules."""

from __future__ import annotations

import asyncio

import pytest

from authz_server.admin.server import AdminServer, start_admin_server
from authz_server.admin.service import pipeline_explain
from authz_server.check.snapshot import Snapshot
from authz_server.cli.main import main
from authz_server.core.errors import ConfigError
from authz_server.identity.bundles import TrustBundles
from authz_server.state.memory import MemoryStore
from authz_server.state.store import ApprovalState
from tests.integration.admin_support import (
    ALICE,
    BOB,
    POLICY,
    Pki,
    pending,
)


def flags(server: AdminServer, pki: Pki, identity: str) -> list[str]:
    cert, key = pki.client(identity)
    return [
        "--admin",
        f"127.0.0.1:{server.port}",
        "--cert",
        cert,
        "--key",
        key,
        "--ca",
        pki.ca_file,
    ]


async def run(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def test_approvals_cli(
    admin: AdminServer, pki: Pki, admin_store: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """list shows the pending action; approve grants it once and says until when."""
    action = pending()
    await admin_store.consume(action)
    assert await run(["approvals", "list", *flags(admin, pki, ALICE)]) == 0
    out = capsys.readouterr().out
    assert f"{action.approval_id}  pending  rule releases-publish" in out
    assert "action     POST /v1/releases/7" in out
    assert await run(["approvals", "approve", action.approval_id, *flags(admin, pki, ALICE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"approved {action.approval_id}")
    assert "valid for one use until" in out
    assert (await admin_store.consume(action)).state is ApprovalState.GRANTED


async def test_refusal_exits_1_with_reason(
    admin: AdminServer, pki: Pki, admin_store: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused approve exits 1 and prints the server's code and reason."""
    action = pending()
    await admin_store.consume(action)
    assert await run(["approvals", "reject", action.approval_id, *flags(admin, pki, BOB)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("refused: PERMISSION_DENIED:")
    assert "is not an approver of rule 'releases-publish'" in err


async def test_revoke_and_unrevoke_cli(
    admin: AdminServer, pki: Pki, admin_store: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """revoke prints the revocation; unrevoke lifts it, and exits 1 when there is none."""
    pattern = "spiffe://example.org/agents/**"
    argv = [
        "revoke",
        pattern,
        "--ttl",
        "1h30m",
        "--reason",
        "incident 7",
        *flags(admin, pki, ALICE),
    ]
    assert await run(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"revoked {pattern} until ")
    assert f"reason: incident 7 (by {ALICE})" in out
    [revocation] = await admin_store.list_revocations()
    assert revocation.expires_us - revocation.created_us == 5400 * 1_000_000
    assert await run(["unrevoke", pattern, *flags(admin, pki, ALICE)]) == 0
    assert capsys.readouterr().out == f"unrevoked {pattern}\n"
    assert await run(["unrevoke", pattern, *flags(admin, pki, ALICE)]) == 1
    assert "nothing changed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["revoke", ALICE, "--ttl", "soon", "--reason", "r"], "duration 'soon'", id="bad-ttl"
        ),
        pytest.param(
            ["approvals", "list", "--admin", "127.0.0.1:1"], "needs --cert", id="no-tls-files"
        ),
        pytest.param(
            ["approvals", "list", "--insecure-local", "--admin", "10.0.0.1:9192"],
            "loopback only",
            id="insecure-remote",
        ),
    ],
)
def test_cli_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad local input fails before any connection, exit 1 with the reason."""
    assert main(argv) == 1
    assert message in capsys.readouterr().err


async def test_insecure_local_operator(capsys: pytest.CaptureFixture[str]) -> None:
    """--admin-insecure-local serves plaintext on loopback; the local operator may approve."""
    from authz_server.identity.patterns import compile_principal_pattern
    from authz_server.policy.load import load_policy_text

    store = MemoryStore()
    snap = Snapshot(load_policy_text(POLICY), TrustBundles.empty())
    approvers = (compile_principal_pattern("spiffe://example.org/humans/**"),)
    server = await start_admin_server(
        "127.0.0.1:0",
        tls_cert=None,
        tls_key=None,
        client_ca_bundles=TrustBundles.empty(),
        insecure_local=True,
        store=store,
        snapshot_source=lambda: snap,
        explain=pipeline_explain(lambda: snap),
        approvers_for=lambda rule_id: approvers,
    )
    try:
        action = pending()
        await store.consume(action)
        argv = ["approvals", "approve", action.approval_id, "--insecure-local",
                "--admin", f"127.0.0.1:{server.port}"]  # fmt: skip
        assert await run(argv) == 0
        assert "local-operator" in (await store.list_approvals())[0].decided_by  # type: ignore[operator]
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("listen", "insecure", "tls", "message"),
    [
        pytest.param("0.0.0.0:0", True, False, "loopback only", id="insecure-on-all-interfaces"),
        pytest.param("localhost:0", True, False, "loopback only", id="insecure-by-name"),
        pytest.param("127.0.0.1:0", True, True, "cannot be combined", id="insecure-with-tls"),
        pytest.param("127.0.0.1:0", False, False, "needs --admin-tls-cert", id="no-tls"),
        pytest.param("127.0.0.1", False, True, "HOST:PORT", id="no-port"),
    ],
)
async def test_unsafe_setups_refused(
    pki: Pki, listen: str, insecure: bool, tls: bool, message: str
) -> None:
    """The admin listener refuses to start plaintext off loopback, or without TLS files."""
    cert, key = pki.files["server"] if tls else (None, None)
    with pytest.raises(ConfigError, match=message):
        await start_admin_server(
            listen,
            tls_cert=cert,
            tls_key=key,
            client_ca_bundles=pki.bundles,
            insecure_local=insecure,
            store=MemoryStore(),
            snapshot_source=lambda: None,
            explain=pipeline_explain(lambda: None),
        )
