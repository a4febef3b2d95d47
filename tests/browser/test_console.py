"""The approval console in a real browser (chromium), with real client certificates.

The agent's requests go through the real Check pipeline over the store the console shows;
the approver works the console as a person would: open the link, read, click.
"""

from __future__ import annotations

import html
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import ConsoleMessage, Page, Response

from authz_server.admin.auth import Caller
from authz_server.core.decision import Reason
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.state.store import ApprovalStatus
from tests.browser.conftest import OpenAs
from tests.unit.console.support import AGENT, ALICE, CAROL, FRONTEND, Console, Pki

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "console.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def _pending(console: Console, principal: str = AGENT, **kwargs: object) -> str:
    decision = await console.check(principal, **kwargs)  # type: ignore[arg-type]
    assert decision.reason is Reason.APPROVAL_REQUIRED and decision.approval_id
    return decision.approval_id


def _watch(page: Page) -> list[str]:
    """Console errors (CSP violations among them) of `page`, and failed static assets.

    Chromium also logs a document answered with an error status ("Failed to load
    resource"); the tests check those statuses themselves.
    """
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)

    def on_response(response: Response) -> None:
        if "/static/" in response.url and response.status != 200:
            problems.append(f"{response.url}: {response.status}")

    page.on("response", on_response)
    return problems


async def test_approve_from_the_notification_link(
    console: Console, pki: Pki, open_as: OpenAs
) -> None:
    """The approver opens /approvals/<id>, sees who wants what under which rule, approves
    with a reason; the agent's identical retry passes once, the console then shows the
    approval used, and the next retry needs a new approval."""
    approval_id = await _pending(console)
    context = await open_as(pki.client(ALICE))
    page = await context.new_page()
    problems = _watch(page)
    response = await page.goto(f"{console.url}/approvals/{approval_id}")
    assert response is not None and response.status == 200
    card = page.locator(f"#approval-{approval_id}")
    assert await card.locator(".principal").inner_text() == AGENT
    assert await card.locator(".path").inner_text() == "/v1/releases/acme"
    assert await card.locator(".rule").inner_text() == "releases-publish"
    assert "public package registry" in await card.locator(".description").inner_text()
    assert (await card.locator(".digest").inner_text()).startswith("sha256:")
    assert await card.locator(".badge").inner_text() == "PENDING"

    await card.get_by_label("Reason (optional)").fill("release train 14, CAB-42")
    await card.get_by_role("button", name="Approve").click()
    await page.wait_for_url(f"**/approvals/{approval_id}?done=approved")
    assert await page.locator(".notice").inner_text() == "You approved this action."
    assert f"approved by {ALICE}" in await page.locator("dd.state").inner_text()

    granted = await console.check()
    assert granted.allowed and granted.approver == ALICE
    await page.goto(f"{console.url}/approvals/{approval_id}")
    assert "Used." in await page.locator("main").inner_text()

    again = await console.check()
    assert again.reason is Reason.APPROVAL_REQUIRED and again.approval_id == approval_id
    await page.reload()
    assert await page.locator(".badge").inner_text() == "PENDING"
    assert problems == []
    await context.close()


async def test_listing_page(console: Console, pki: Pki, open_as: OpenAs) -> None:
    """The list shows live approvals newest first with their state, styled by the
    stylesheet (served under the CSP), without a single console error; its screenshot is
    docs/images/console.png (rewritten with UPDATE_SCREENSHOTS=1)."""
    decided = await _pending(console, body=b'{"tag": "v1.3.9"}')
    await console.operations.reject(Caller(parse_spiffe_id(CAROL)), decided, "wrong branch")
    older = await _pending(console, CAROL, path="/v1/releases/console")
    newest = await _pending(console, body=b'{"tag": "v1.4.0-rc1"}')
    context = await open_as(pki.client(ALICE))
    page = await context.new_page()
    problems = _watch(page)
    await page.goto(f"{console.url}/approvals")
    ids = await page.locator("article.approval").evaluate_all("cards => cards.map(c => c.id)")
    assert ids == [f"approval-{i}" for i in (newest, older, decided)]
    states = await page.locator("article.approval .badge").all_inner_texts()
    assert states == ["PENDING", "PENDING", "REJECTED"]
    header = page.locator("header.top")
    assert await header.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(29, 36, 48)"
    loaded = await page.evaluate("() => document.scripts.length")
    assert loaded == 1
    shot = await page.screenshot(full_page=True)
    assert shot.startswith(PNG_MAGIC)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(shot)
    assert problems == []
    await context.close()


async def test_non_admin_gets_403(console: Console, pki: Pki, open_as: OpenAs) -> None:
    """A verified workload that is not an admin sees a 403 page, nothing else."""
    approval_id = await _pending(console)
    context = await open_as(pki.client(FRONTEND))
    page = await context.new_page()
    for path in ("/approvals", f"/approvals/{approval_id}", "/revocations"):
        response = await page.goto(console.url + path)
        assert response is not None and response.status == 403
        assert await page.locator("h1").inner_text() == "Not allowed"
        assert "admin.principals" in await page.locator(".error").inner_text()
        assert await page.locator("form").count() == 0
    await context.close()


async def test_requester_cannot_approve_own_request(
    console: Console, pki: Pki, open_as: OpenAs
) -> None:
    """An approver who requested the action is offered Reject only; a hand-made POST of
    Approve with a valid token is refused (403) and the request stays pending."""
    approval_id = await _pending(console, CAROL)
    context = await open_as(pki.client(CAROL))
    page = await context.new_page()
    await page.goto(f"{console.url}/approvals/{approval_id}")
    assert await page.get_by_role("button", name="Approve").count() == 0
    assert await page.get_by_role("button", name="Reject").count() == 1
    assert "separation of duties" in await page.locator(".note").inner_text()
    token = await page.locator('input[name="csrf"]').first.get_attribute("value")
    assert token
    posted = await context.request.post(
        f"{console.url}/approvals/{approval_id}/decide",
        form={"csrf": token, "decision": "approve"},
        max_redirects=0,
    )
    assert posted.status == 403
    assert "separation of duties" in html.unescape(await posted.text())
    record = await console.store.get_approval(approval_id)
    assert record is not None and record.status is ApprovalStatus.PENDING
    await context.close()


@pytest.fixture
async def hostile_site(console: Console, pki: Pki) -> AsyncIterator[str]:
    """Another origin whose page posts an approval to the console (no token: it cannot
    read one), the way a phishing page would."""
    approval_id = await _pending(console)
    page = (
        "<!doctype html><title>win a prize</title>"
        f'<form method="post" action="{console.url}/approvals/{approval_id}/decide">'
        '<input type="hidden" name="decision" value="approve">'
        '<input type="hidden" name="csrf" value="1.forged">'
        "<button>Claim your prize</button></form>"
    )

    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/#{approval_id}"
    await runner.cleanup()


async def test_cross_site_form_refused(
    console: Console, pki: Pki, open_as: OpenAs, hostile_site: str
) -> None:
    """A hostile page makes the approver's browser post an approval with its certificate:
    the console refuses it (403) and the request stays pending."""
    approval_id = hostile_site.rpartition("#")[2]
    context = await open_as(pki.client(ALICE))
    page = await context.new_page()
    await page.goto(hostile_site)
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Claim your prize").click()
    response = await navigation.value
    assert response is not None and response.status == 403
    assert "request from another site refused" in await page.locator(".error").inner_text()
    record = await console.store.get_approval(approval_id)
    assert record is not None and record.status is ApprovalStatus.PENDING
    await context.close()


async def test_revoke_and_unrevoke(console: Console, pki: Pki, open_as: OpenAs) -> None:
    """An admin revokes the agent from the revocations page (its Checks are then denied
    `revoked`) and lifts it again with the row's Unrevoke button."""
    pattern = "spiffe://example.org/agents/acme/**"
    context = await open_as(pki.client(ALICE))
    page = await context.new_page()
    problems = _watch(page)
    await page.goto(f"{console.url}/revocations")
    assert "No revocations are in force." in await page.locator("main").inner_text()
    await page.get_by_label("SPIFFE ID pattern").fill(pattern)
    await page.get_by_label("For").fill("2h")
    await page.get_by_label("Reason", exact=True).fill("token leaked in CI logs")
    await page.get_by_role("button", name="Revoke").click()
    await page.wait_for_url("**/revocations?done=revoked")
    row = page.locator("table.revocations tbody tr")
    assert await row.count() == 1
    assert await row.locator(".pattern").inner_text() == pattern
    assert "token leaked in CI logs" in await row.inner_text()
    assert (await console.check()).reason is Reason.REVOKED

    await row.get_by_role("button", name="Unrevoke").click()
    await page.wait_for_url("**/revocations?done=unrevoked")
    assert await page.locator(".notice").inner_text() == "The revocation was lifted."
    assert await page.locator("table.revocations").count() == 0
    assert (await console.check()).reason is Reason.APPROVAL_REQUIRED
    assert problems == []
    await context.close()
