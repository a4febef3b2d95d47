"""Who gets in: the console over real mutual TLS, clients presenting real certificates."""

from __future__ import annotations

import aiohttp
import pytest

from authz_server.console.app import SECURITY_HEADERS
from authz_server.identity.bundles import TrustBundles
from authz_server.state.redis import RedisStore
from authz_server.tools import devcerts
from authz_server.tools.stack import free_port
from tests.unit.console.support import (
    ALICE,
    BOB,
    FRONTEND,
    Console,
    Pki,
    start_test_console,
)


async def _get(console: Console, identity: tuple[str, str] | None, path: str) -> tuple[int, str]:
    async with console.session(identity) as session, session.get(path) as response:
        return response.status, await response.text()


@pytest.mark.parametrize(
    "who",
    [
        pytest.param("none", id="no-client-certificate"),
        pytest.param("rogue", id="ca-in-no-bundle"),
    ],
)
async def test_handshake_refuses(console: Console, pki: Pki, who: str) -> None:
    """Without a certificate from a trusted CA the TLS handshake fails: no page at all."""
    identity = None if who == "none" else pki.client(ALICE, pki.rogue)
    with pytest.raises(aiohttp.ClientError):
        await _get(console, identity, "/approvals")


@pytest.mark.parametrize(
    ("who", "message"),
    [
        pytest.param("partner-minted", "does not chain to the trust bundle of &#x27;example.org&#x27;", id="partner-ca-mints-our-id"),
        pytest.param("frontend", "is not allowed by the policy&#x27;s admin.principals", id="not-an-admin"),
        pytest.param("revoked", "is revoked", id="revoked-admin"),
    ],
)  # fmt: skip
async def test_refused_users_get_403(console: Console, pki: Pki, who: str, message: str) -> None:
    """A handshake is not admission: the certificate is verified per trust domain (a partner
    CA cannot mint our admins), then admin.principals and revocations apply (403 page)."""
    if who == "partner-minted":
        identity = pki.client(ALICE, pki.partner)
    elif who == "frontend":
        identity = pki.client(FRONTEND)
    else:
        await console.store.revoke(BOB, 60, "laptop stolen", "test")
        identity = pki.client(BOB)
    for path in ("/approvals", "/revocations", "/approvals/" + "0" * 64):
        status, page = await _get(console, identity, path)
        assert status == 403
        assert message in page
        assert "Approve" not in page


async def test_admin_with_intermediate_issued_svid(console: Console, pki: Pki) -> None:
    """An approver whose SVID comes from an intermediate CA (as SPIRE may issue) is admitted:
    the intermediates the client sends take part in path building."""
    intermediate = devcerts.mint_ca("example.org", issuer=pki.ca, name="intermediate")
    identity = pki.client(ALICE, intermediate, intermediate.certificate)
    status, page = await _get(console, identity, "/approvals")
    assert status == 200
    assert ALICE in page


async def test_client_cas_follow_the_bundles(console: Console, pki: Pki) -> None:
    """After a bundle reload the handshake accepts clients of the new bundles only."""
    alice = pki.client(ALICE)
    assert (await _get(console, alice, "/approvals"))[0] == 200
    console.server.update_client_cas(TrustBundles({"partner.org": (pki.partner.certificate,)}))
    with pytest.raises(aiohttp.ClientError):
        await _get(console, alice, "/approvals")
    console.server.update_client_cas(pki.bundles)
    assert (await _get(console, alice, "/approvals"))[0] == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/approvals", 200, id="page"),
        pytest.param("/static/console.css", 200, id="stylesheet"),
        pytest.param("/static/console.js", 200, id="script"),
        pytest.param("/nowhere", 404, id="unknown-path"),
        pytest.param("/approvals/not-an-id", 400, id="malformed-id"),
        pytest.param("/approvals/" + "0" * 64, 404, id="unknown-id"),
    ],
)
async def test_security_headers_everywhere(
    console: Console, pki: Pki, path: str, status: int
) -> None:
    """Every response, pages, assets and errors alike, carries the security headers and is
    never cached."""
    async with (
        console.session(pki.client(ALICE)) as session,
        session.get(path) as response,
    ):
        assert response.status == status
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "Traceback" not in await response.text()


async def test_unknown_and_malformed_ids(console: Console, pki: Pki) -> None:
    """An unknown id says what may have happened; a malformed one is a 400 that says why."""
    alice = pki.client(ALICE)
    status, page = await _get(console, alice, "/approvals/" + "0" * 64)
    assert status == 404 and "unknown, has expired, or was already used" in page
    status, page = await _get(console, alice, "/approvals/ABC")
    assert status == 400 and "is not 64 lower-case hex characters" in page


async def test_no_policy_loaded(console: Console, pki: Pki) -> None:
    """Before a policy is in force nobody can be admitted: 503, closed."""
    console.holder.snapshot = None
    status, page = await _get(console, pki.client(ALICE), "/approvals")
    assert status == 503
    assert "no policy loaded" in page


async def test_store_unreachable_is_503(pki: Pki) -> None:
    """When the store cannot say whether the admin is revoked, the console refuses (503)."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    console = await start_test_console(pki, store)
    try:
        status, page = await _get(console, pki.client(ALICE), "/approvals")
    finally:
        await console.server.stop()
        await store.close()
    assert status == 503
    assert "state store unavailable" in page
