"""`approvals|revoke|unrevoke` when the connection itself fails: grpc's reason, and the flag
to change (`--server-name`, `--insecure-local`, `--ca`) when the cause is recognisable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from authz_server.admin.server import AdminServer, start_admin_server
from authz_server.admin.service import pipeline_explain
from authz_server.cli.main import main
from authz_server.identity.bundles import TrustBundles
from authz_server.state.memory import MemoryStore
from authz_server.tools import devcerts
from tests.integration.admin_support import ALICE, Pki


async def run(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def _start(pki: Pki, *, cert: tuple[str, str] | None) -> AdminServer:
    return await start_admin_server(
        "127.0.0.1:0",
        tls_cert=cert[0] if cert else None,
        tls_key=cert[1] if cert else None,
        client_ca_bundles=pki.bundles if cert else TrustBundles.empty(),
        insecure_local=cert is None,
        store=MemoryStore(),
        snapshot_source=lambda: None,
        explain=pipeline_explain(lambda: None),
    )


@pytest.fixture
async def named_server(pki: Pki) -> AsyncIterator[AdminServer]:
    """A TLS admin server whose certificate names only `authz.internal`, no IP address."""
    cert, key = devcerts.mint_svid(
        pki.ca, "spiffe://example.org/authz-server", dns_names=["authz.internal"]
    )
    cert_file, key_file = pki.dir / "named-server.pem", pki.dir / "named-server-key.pem"
    cert_file.write_bytes(devcerts.pem(cert))
    key_file.write_bytes(devcerts.key_pem(key))
    server = await _start(pki, cert=(str(cert_file), str(key_file)))
    yield server
    await server.stop(0)


@pytest.fixture
async def plaintext_server(pki: Pki) -> AsyncIterator[AdminServer]:
    """An admin server run with --admin-insecure-local."""
    server = await _start(pki, cert=None)
    yield server
    await server.stop(0)


def tls_flags(pki: Pki, port: int, *extra: str) -> list[str]:
    cert, key = pki.client(ALICE)
    return ["--admin", f"127.0.0.1:{port}", "--cert", cert, "--key", key, "--ca", pki.ca_file,
            *extra]  # fmt: skip


async def test_certificate_without_the_address_suggests_server_name(
    named_server: AdminServer, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    """Connecting by IP to a server whose certificate names a host: the hint names
    --server-name, and with it the same call gets through to the server."""
    assert await run(["approvals", "list", *tls_flags(pki, named_server.port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cannot connect to the admin API at 127.0.0.1:{named_server.port}: ")
    assert "the server's certificate does not name '127.0.0.1': connect by a name it " in err
    assert "give that name with --server-name NAME" in err
    argv = tls_flags(pki, named_server.port, "--server-name", "authz.internal")
    assert await run(["approvals", "list", *argv]) == 1  # connected; refused: no policy
    assert capsys.readouterr().err == "refused: UNAVAILABLE: no policy loaded\n"


async def test_wrong_server_name_is_named(
    named_server: AdminServer, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = tls_flags(pki, named_server.port, "--server-name", "other.internal")
    assert await run(["approvals", "list", *argv]) == 1
    assert "does not name 'other.internal' (--server-name)" in capsys.readouterr().err


async def test_tls_to_a_plaintext_server_suggests_insecure_local(
    plaintext_server: AdminServer, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(["approvals", "list", *tls_flags(pki, plaintext_server.port)]) == 1
    err = capsys.readouterr().err
    assert "does not speak TLS: a server run with --admin-insecure-local" in err
    assert "connect to it with --insecure-local" in err


async def test_plaintext_to_a_tls_server_suggests_certificates(
    named_server: AdminServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["approvals", "list", "--insecure-local", "--admin", f"127.0.0.1:{named_server.port}"]
    assert await run(argv) == 1
    err = capsys.readouterr().err
    assert "closed the plaintext connection: it probably requires mutual TLS" in err
    assert "drop --insecure-local and give --cert, --key and --ca" in err


async def test_certificate_from_another_ca_names_the_ca_flag(
    named_server: AdminServer, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    partner_ca = pki.dir / "partner-ca.pem"
    partner_ca.write_bytes(devcerts.pem(pki.partner.certificate))
    argv = tls_flags(pki, named_server.port, "--server-name", "authz.internal")
    argv[argv.index("--ca") + 1] = str(partner_ca)
    assert await run(["approvals", "list", *argv]) == 1
    assert f"does not chain to --ca {partner_ca}" in capsys.readouterr().err


async def test_nothing_listening(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run(["unrevoke", ALICE, *tls_flags(pki, 1)]) == 1
    assert "nothing listens on 127.0.0.1:1" in capsys.readouterr().err
