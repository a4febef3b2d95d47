"""The whole approval round trip through a real `serve`, approved in a real browser.

The agent's Checks go over the real gRPC listener (mutual TLS, as Envoy); the notification
arrives signed at a real webhook receiver and is verified by the documented receiver
snippet; the approver opens the link taken from that notification in chromium, presenting
a client certificate, and clicks Approve.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser

from tests.browser.conftest import chromium, open_context
from tests.integration.serve_features_support import (
    Served,
    received,
    serve_with_features,
    verified,
)
from tests.integration.serve_support import ALICE, RELEASE, approval_id_for, release
from tests.integration.support import check, eventually, outcome
from tests.unit.notify.receiver import SECRET, documented_receiver


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_with_features(tmp_path) as running:
        yield running


@pytest.fixture
async def approver_browser(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Browser]:
    async with chromium(str(served.files.ca_file), monkeypatch) as launched:
        yield launched


def _accepted_by_documented_receiver(served: Served) -> Callable[[], None]:
    """A check that every delivery so far passes the documented receiver's `accept`
    (signature, freshness, first sight of its event id), each delivery checked once."""
    accept = documented_receiver()["accept"]
    checked = 0

    def check_new() -> None:
        nonlocal checked
        for delivery in served.hook.received[checked:]:
            assert accept(SECRET, delivery.headers, delivery.body), delivery.json()
            checked += 1

    return check_new


def _audit_records(served: Served) -> list[dict[str, Any]]:
    return [json.loads(line) for line in served.audit_log.read_text().splitlines()]


def _ok_header(response: Any, name: str) -> str | None:
    for option in response.ok_response.headers:
        if option.header.key == name:
            return str(option.header.value)
    return None


async def test_approval_round_trip_from_notification_link_in_browser(
    served: Served, approver_browser: Browser
) -> None:
    """An agent's request needs approval, the signed `pending` event links the approver to
    the console where chromium shows the request and approves it by a click, the agent's
    identical retry is allowed once (audited with the approver), the `approved` event
    arrives, the reloaded page shows the approval used, and the next retry needs approval
    again."""
    documented_accept = _accepted_by_documented_receiver(served)
    async with served.channel() as channel:
        approval_id = await approval_id_for(channel, release())

        await eventually(lambda: received(served.hook, "pending"), "the pending event")
        documented_accept()
        (pending,) = verified(served.hook, "pending")
        assert (pending["approval_id"], pending["requester"]) == (approval_id, RELEASE)
        link = pending["console_url"]
        assert link == served.url("console", f"/approvals/{approval_id}")

        parts = urlsplit(link)
        cert, key = served.files.pair("alice")
        origin = f"{parts.scheme}://{parts.netloc}"
        context = await open_context(approver_browser, origin, (str(cert), str(key)))
        page = await context.new_page()
        response = await page.goto(link)
        assert response is not None and response.status == 200
        assert await page.locator("header.top .who").inner_text() == ALICE
        card = page.locator(f"#approval-{approval_id}")
        assert await card.locator(".principal").inner_text() == RELEASE
        assert await card.locator(".action b").inner_text() == "POST"
        assert await card.locator(".path").inner_text() == "/v1/releases/7"
        assert await card.locator(".rule").inner_text() == "releases-publish"
        assert "public package registry" in await card.locator(".description").inner_text()
        assert await card.locator(".badge").inner_text() == "PENDING"

        await card.get_by_label("Reason (optional)").fill("release v7, CAB-42")
        await card.get_by_role("button", name="Approve").click()
        await page.wait_for_url(f"**/approvals/{approval_id}?done=approved")
        assert await page.locator(".notice").inner_text() == "You approved this action."
        assert f"approved by {ALICE}" in await page.locator("dd.state").inner_text()

        allowed = await check(channel, release())
        assert outcome(allowed) == "allow"
        decision_id = _ok_header(allowed, "x-authz-decision-id")
        assert decision_id
        await eventually(lambda: received(served.hook, "approved"), "the approved event")
        documented_accept()
        (approved,) = verified(served.hook, "approved")
        assert (approved["approval_id"], approved["decided_by"]) == (approval_id, ALICE)
        assert approved["console_url"] == link

        await page.reload()
        assert "Used." in await page.locator("main").inner_text()
        assert await page.locator(f"#approval-{approval_id}").count() == 0

        again = await approval_id_for(channel, release())  # single use: a new pending record
        assert again == approval_id  # the id names the action, so the identical retry's too
        await eventually(lambda: received(served.hook, "pending", 2), "a second pending event")
        documented_accept()
        first, second = verified(served.hook, "pending", 2)
        assert second["approval_id"] == approval_id
        assert second["event_id"] != first["event_id"]
        await page.reload()
        assert await page.locator(f"#approval-{approval_id} .badge").inner_text() == "PENDING"
        await context.close()
    assert served.stop()[0] == 0, served.log_tail()

    decided = f"{ALICE} approved approval {approval_id} (rule releases-publish, POST"
    assert any(
        decided in line and line.endswith(": release v7, CAB-42")
        for line in served.log.read_text().splitlines()
    ), served.log_tail()
    audited = [r for r in _audit_records(served) if "decision" in r]  # not chain markers
    assert [(r["decision"], r["reason"], r["approver"]) for r in audited] == [
        ("deny", "approval_required", None),
        ("allow", "allowed_by_rule", ALICE),
        ("deny", "approval_required", None),
    ]
    assert audited[1]["decision_id"] == decision_id
    assert all(
        (r["approval_id"], r["principal"], r["rule"]) == (approval_id, RELEASE, "releases-publish")
        for r in audited
    )
