"""State changes through the console's forms: decisions, revocations, and their guards.

Pending approvals come from the real Check pipeline; clients are plain HTTPS clients with
real client certificates, posting what a browser's form would post (or a forgery)."""

from __future__ import annotations

import logging

import pytest

from authz_server.check.pipeline import Pipeline
from authz_server.core.decision import Reason
from authz_server.core.request import RequestView
from authz_server.state.store import ApprovalStatus
from tests.unit.console.support import (
    AGENT,
    ALICE,
    BOB,
    CAROL,
    Console,
    Pki,
    csrf_token,
)

Form = dict[str, str]


async def _pending(console: Console, principal: str = AGENT) -> str:
    decision = await console.check(principal)
    assert decision.reason is Reason.APPROVAL_REQUIRED and decision.approval_id
    return decision.approval_id


async def _token(console: Console, identity: tuple[str, str]) -> str:
    async with console.session(identity) as session, session.get("/revocations") as response:
        return csrf_token(await response.text())


async def _post(
    console: Console,
    identity: tuple[str, str],
    path: str,
    form: Form,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """(status, Location, page) of a form POST, redirects not followed."""
    async with (
        console.session(identity) as session,
        session.post(path, data=form, headers=headers, allow_redirects=False) as response,
    ):
        return response.status, response.headers.get("Location", ""), await response.text()


async def test_approve_lets_the_retry_through_once(
    console: Console, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """An approver's approval lets the identical retry through once, is logged with the
    approver and reason like an admin API approval, and the page then says it was used."""
    approval_id = await _pending(console)
    alice = pki.client(ALICE)
    form = {"csrf": await _token(console, alice), "decision": "approve", "reason": "CAB-42"}
    with caplog.at_level(logging.INFO, logger="authz_server.admin.operations"):
        status, location, _ = await _post(console, alice, f"/approvals/{approval_id}/decide", form)
    assert (status, location) == (303, f"/approvals/{approval_id}?done=approved")
    assert f"admin: {ALICE} approved approval {approval_id}" in caplog.text
    assert ": CAB-42" in caplog.text
    async with console.session(alice) as session, session.get(location) as response:
        page = await response.text()
    assert "You approved this action." in page and f"approved by {ALICE}" in page

    granted = await console.check()
    assert granted.allowed and granted.approver == ALICE
    async with console.session(alice) as session, session.get(location) as response:
        assert response.status == 404
        assert "Used." in await response.text()
    again = await console.check()
    assert again.reason is Reason.APPROVAL_REQUIRED


async def test_reject_denies_the_retry(console: Console, pki: Pki) -> None:
    """A rejection makes the retry approval_denied; back=list returns to the list."""
    approval_id = await _pending(console)
    carol = pki.client(CAROL)
    form = {"csrf": await _token(console, carol), "decision": "reject", "back": "list"}
    status, location, _ = await _post(console, carol, f"/approvals/{approval_id}/decide", form)
    assert (status, location) == (303, f"/approvals?done=rejected#approval-{approval_id}")
    assert (await console.check()).reason is Reason.APPROVAL_DENIED


@pytest.mark.parametrize(
    ("forgery", "message"),
    [
        pytest.param("no-token", "the form carries no CSRF token", id="no-token"),
        pytest.param("wrong-token", "not valid for this client certificate", id="wrong-token"),
        pytest.param("malformed-token", "the CSRF token is malformed", id="malformed-token"),
        pytest.param("other-users-token", "not valid for this client certificate", id="token-of-another-certificate"),
        pytest.param("cross-origin", "cross-origin request from &#x27;https://evil.example&#x27;", id="cross-origin"),
        pytest.param("cross-site-fetch", "Sec-Fetch-Site: &#x27;cross-site&#x27;", id="cross-site-fetch"),
        pytest.param("same-site-fetch", "Sec-Fetch-Site: &#x27;same-site&#x27;", id="same-site-fetch"),
        pytest.param("null-origin", "cross-origin request from &#x27;null&#x27;", id="null-origin"),
    ],
)  # fmt: skip
async def test_forged_posts_refused(console: Console, pki: Pki, forgery: str, message: str) -> None:
    """A POST without this certificate's valid token, or from another origin, changes
    nothing: 403 with the reason."""
    approval_id = await _pending(console)
    alice = pki.client(ALICE)
    token = await _token(console, alice)
    form = {"decision": "approve", "csrf": token}
    headers: dict[str, str] = {}
    if forgery == "no-token":
        del form["csrf"]
    elif forgery == "wrong-token":
        issued, _, mac = token.partition(".")
        form["csrf"] = f"{issued}.{mac[::-1]}"
    elif forgery == "malformed-token":
        form["csrf"] = "garbage"
    elif forgery == "other-users-token":
        form["csrf"] = await _token(console, pki.client(CAROL))
    elif forgery == "cross-origin":
        headers["Origin"] = "https://evil.example"
    elif forgery == "null-origin":
        headers["Origin"] = "null"
    else:
        headers["Sec-Fetch-Site"] = forgery.removesuffix("-fetch")
    status, _, page = await _post(console, alice, f"/approvals/{approval_id}/decide", form, headers)
    assert status == 403
    assert message in page
    record = await console.store.get_approval(approval_id)
    assert record is not None and record.status is ApprovalStatus.PENDING


async def test_same_origin_browser_headers_accepted(console: Console, pki: Pki) -> None:
    """What a browser sends for the console's own form (Origin, Sec-Fetch-Site) passes."""
    approval_id = await _pending(console)
    alice = pki.client(ALICE)
    form = {"csrf": await _token(console, alice), "decision": "approve"}
    headers = {"Origin": console.url, "Sec-Fetch-Site": "same-origin"}
    status, _, _ = await _post(console, alice, f"/approvals/{approval_id}/decide", form, headers)
    assert status == 303


@pytest.mark.parametrize(
    ("approver", "requester", "decision", "message"),
    [
        pytest.param(BOB, AGENT, "approve", "is not an approver of rule &#x27;releases-publish&#x27;", id="admin-not-approver"),
        pytest.param(BOB, AGENT, "reject", "is not an approver of rule &#x27;releases-publish&#x27;", id="admin-not-approver-reject"),
        pytest.param(CAROL, CAROL, "approve", "separation of duties", id="requester-approves-own"),
    ],
)  # fmt: skip
async def test_decision_refused(
    console: Console, pki: Pki, approver: str, requester: str, decision: str, message: str
) -> None:
    """With a valid token, only an approver of the rule who did not request the action may
    approve: the page offers no such button, and a posted decision is refused (403)."""
    approval_id = await _pending(console, requester)
    identity = pki.client(approver)
    async with (
        console.session(identity) as session,
        session.get(f"/approvals/{approval_id}") as response,
    ):
        page = await response.text()
    assert message in page and 'value="approve"' not in page
    form = {"csrf": await _token(console, identity), "decision": decision}
    status, _, refused = await _post(console, identity, f"/approvals/{approval_id}/decide", form)
    assert status == 403 and message in refused
    record = await console.store.get_approval(approval_id)
    assert record is not None and record.status is ApprovalStatus.PENDING


@pytest.mark.parametrize(
    ("form", "message"),
    [
        pytest.param({"decision": "maybe"}, "decision must be approve or reject", id="bad-decision"),
        pytest.param({"decision": "approve", "reason": "a\nb"}, "holds control characters", id="newline-in-reason"),
        pytest.param({"decision": "approve", "reason": "x" * 501}, "longer than 500", id="long-reason"),
    ],
)  # fmt: skip
async def test_bad_decision_forms(console: Console, pki: Pki, form: Form, message: str) -> None:
    """Malformed forms are refused with a 400 that says why; nothing is decided."""
    approval_id = await _pending(console)
    alice = pki.client(ALICE)
    form = {**form, "csrf": await _token(console, alice)}
    status, _, page = await _post(console, alice, f"/approvals/{approval_id}/decide", form)
    assert status == 400 and message in page
    record = await console.store.get_approval(approval_id)
    assert record is not None and record.status is ApprovalStatus.PENDING


async def test_decide_twice_and_get_not_allowed(console: Console, pki: Pki) -> None:
    """A second decision says who decided first (409); a GET never changes state (405)."""
    approval_id = await _pending(console)
    alice, carol = pki.client(ALICE), pki.client(CAROL)
    path = f"/approvals/{approval_id}/decide"
    async with console.session(alice) as session, session.get(path) as response:
        assert response.status == 405
    await _post(console, carol, path, {"csrf": await _token(console, carol), "decision": "reject"})
    form = {"csrf": await _token(console, alice), "decision": "approve"}
    status, _, page = await _post(console, alice, path, form)
    assert status == 409 and f"already rejected by {CAROL}" in page


async def test_revoke_and_unrevoke(
    console: Console, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A revocation from the console denies the agent until it is lifted; both are logged
    with the admin who did it."""
    alice = pki.client(ALICE)
    pattern = "spiffe://example.org/agents/acme/**"
    form = {"csrf": await _token(console, alice), "pattern": pattern, "ttl": "1h", "reason": "leak"}
    with caplog.at_level(logging.INFO, logger="authz_server.admin.operations"):
        status, location, _ = await _post(console, alice, "/revocations", form)
        assert (status, location) == (303, "/revocations?done=revoked")
        assert (await console.check()).reason is Reason.REVOKED
        async with console.session(alice) as session, session.get(location) as response:
            page = await response.text()
        assert pattern in page and "leak" in page and ALICE in page

        form = {"csrf": csrf_token(page), "pattern": pattern}
        status, location, _ = await _post(console, alice, "/revocations/unrevoke", form)
        assert (status, location) == (303, "/revocations?done=unrevoked")
        status, location, _ = await _post(console, alice, "/revocations/unrevoke", form)
        assert location == "/revocations?done=not-revoked"
    assert f"admin: {ALICE} revoked {pattern} for 3600s: leak" in caplog.text
    assert f"admin: {ALICE} lifted the revocation of {pattern}" in caplog.text
    assert (await console.check()).reason is Reason.APPROVAL_REQUIRED


@pytest.mark.parametrize(
    ("form", "message"),
    [
        pytest.param({"pattern": "spiffe://example.org/a", "ttl": "15", "reason": "r"}, "use e.g. 90s, 15m", id="bare-number-ttl"),
        pytest.param({"pattern": "not-a-pattern", "ttl": "1h", "reason": "r"}, "not-a-pattern", id="bad-pattern"),
        pytest.param({"pattern": "spiffe://example.org/a", "ttl": "1h", "reason": ""}, "&#x27;reason&#x27; is required", id="no-reason"),
        pytest.param({"pattern": "spiffe://example.org/a", "ttl": "1h", "reason": "r", "csrf": "x"}, "is repeated", id="repeated-field"),
    ],
)  # fmt: skip
async def test_bad_revocations(console: Console, pki: Pki, form: Form, message: str) -> None:
    """A bad revocation form is a 400 saying what is wrong; nothing is revoked."""
    alice = pki.client(ALICE)
    token = await _token(console, alice)
    fields = [("csrf", token), *form.items()]
    async with (
        console.session(alice) as session,
        session.post("/revocations", data=fields, allow_redirects=False) as response,
    ):
        status, page = response.status, await response.text()
    assert status == 400 and message in page
    assert await console.store.list_revocations() == []


async def test_values_are_escaped(console: Console, pki: Pki) -> None:
    """What the requester controls (here the query string) is shown, escaped, never as HTML."""
    view = RequestView(
        method="POST",
        host="registry.internal",
        path="/v1/releases/acme",
        query='q="><script>alert(1)</script>',
        principal=AGENT,
        certificate=pki.certificate_header(AGENT),
    )
    decision = await Pipeline(store=console.store).evaluate(view, console.snapshot)
    assert decision.reason is Reason.APPROVAL_REQUIRED
    async with (
        console.session(pki.client(ALICE)) as session,
        session.get("/approvals") as response,
    ):
        page = await response.text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
