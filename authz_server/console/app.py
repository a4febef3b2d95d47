"""The approval console as an aiohttp application: pages, forms, and the rules around them.

    GET  /approvals                      live approvals, newest first, with decide forms
    GET  /approvals/{id}                 one approval (the link notifications carry)
    POST /approvals/{id}/decide          decision=approve|reject, reason, csrf
    GET  /revocations                    revocations in force, revoke / unrevoke forms
    POST /revocations                    pattern, ttl (90s, 15m, 1h30m, 7d), reason, csrf
    POST /revocations/unrevoke           pattern, csrf
    GET  /static/console.css|console.js

Every page and form is for an authenticated admin (`console.auth`); the business logic is
`admin.operations.AdminOperations`, the same code the admin gRPC API runs, so a decision
here is checked (approvers in force, separation of duties) and logged exactly like one from
`authz-server approvals approve`. Every state change is a POST that passes the cross-site
checks and carries a valid CSRF token (`console.csrf`), then redirects (303) to a page.
Every response carries the security headers below and is never cached; refusals are pages
with a status code, never a traceback.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources

import grpc
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from authz_server.admin.auth import Refused, authorize_approver
from authz_server.admin.operations import AdminOperations
from authz_server.console import pages
from authz_server.console.auth import CALLER_NAME, ConsoleAuthenticator, ConsoleUser
from authz_server.console.csrf import CsrfTokens, cross_site_problem
from authz_server.console.markup import Markup
from authz_server.core.clock import Clock, SystemClock
from authz_server.core.durations import parse_duration_s
from authz_server.core.errors import StoreUnavailable
from authz_server.state.store import ApprovalRecord

__all__ = ["SECURITY_HEADERS", "build_console"]

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Strict-Transport-Security": "max-age=31536000",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Server": "authz-server",
}

_HTTP_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 403,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
}
_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Already decided"}
_NOTICES = {
    "approved": "You approved this action.",
    "rejected": "You rejected this action.",
    "revoked": "The revocation is in force.",
    "unrevoked": "The revocation was lifted.",
    "not-revoked": "There was no revocation with exactly that pattern.",
}
_MAX_FORM_BYTES = 16 * 1024
_MAX_TEXT = 2048
#: Decisions made here, remembered to tell "used" from "expired" once the store forgets.
_REMEMBERED = 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _static(name: str) -> bytes:
    return resources.files("authz_server.console").joinpath("static", name).read_bytes()


def _html(body: Markup, status: int = 200) -> web.Response:
    return web.Response(
        body=body.encode(), status=status, content_type="text/html", charset="utf-8"
    )


def _refused_page(refusal: Refused, who: str | None) -> web.Response:
    status = _HTTP_STATUS.get(refusal.code, 500)
    title = _TITLES.get(status, "Unavailable" if status == 503 else "Error")
    return _html(pages.error_page(status, title, refusal.message, who), status)


class _Console:
    def __init__(
        self,
        operations: AdminOperations,
        authenticator: ConsoleAuthenticator,
        tokens: CsrfTokens,
        clock: Clock,
    ) -> None:
        self._operations = operations
        self._authenticator = authenticator
        self._tokens = tokens
        self._clock = clock
        self._decided: OrderedDict[str, ApprovalRecord] = OrderedDict()

    # pages -------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/approvals")

    async def approvals(self, request: web.Request) -> web.StreamResponse:
        user = await self._authenticator.user(request)
        records = await self._operations.list_approvals(user.caller)
        records.sort(key=lambda r: r.created_us, reverse=True)
        csrf = self._tokens.issue(user.fingerprint)
        now = self._clock.now()
        cards = [self._card(user, r, csrf, now, back="list") for r in records]
        notice = _NOTICES.get(request.query.get("done", ""))
        return _html(pages.approvals_page(cards, user.caller.name, notice))

    async def approval(self, request: web.Request) -> web.StreamResponse:
        user = await self._authenticator.user(request)
        approval_id = request.match_info["approval_id"]
        record = await self._operations.get_approval(user.caller, approval_id)
        now = self._clock.now()
        if record is None:
            remembered = self._decided.get(approval_id)
            page = pages.approval_gone_page(approval_id, remembered, now, user.caller.name)
            return _html(page, 404)
        card = self._card(user, record, self._tokens.issue(user.fingerprint), now, back="page")
        notice = _NOTICES.get(request.query.get("done", ""))
        return _html(pages.approval_page(card, user.caller.name, notice))

    async def revocations(self, request: web.Request) -> web.StreamResponse:
        user = await self._authenticator.user(request)
        revocations = await self._operations.list_revocations(user.caller)
        csrf = self._tokens.issue(user.fingerprint)
        notice = _NOTICES.get(request.query.get("done", ""))
        page = pages.revocations_page(
            revocations, csrf, self._clock.now(), user.caller.name, notice
        )
        return _html(page)

    def _card(
        self, user: ConsoleUser, record: ApprovalRecord, csrf: str, now: datetime, back: str
    ) -> Markup:
        rule = next((r for r in user.snapshot.policy.rules if r.id == record.rule_id), None)
        approvers = self._operations.approvers(record.rule_id)
        info = pages.RuleInfo(
            description=rule.description if rule is not None else "(not in the policy in force)",
            approvers=tuple(p.text for p in approvers),
        )
        return pages.approval_card(record, info, self._decidable(user, record), csrf, now, back)

    def _decidable(self, user: ConsoleUser, record: ApprovalRecord) -> pages.Decidable:
        """What the viewer may do, for the buttons only: the POST checks again."""
        approvers = self._operations.approvers(record.rule_id)

        def why_not(requester: str | None) -> str | None:
            try:
                authorize_approver(user.caller, record.rule_id, approvers, requester)
            except Refused as refusal:
                return refusal.message
            return None

        return pages.Decidable(approve=why_not(record.principal), reject=why_not(None))

    # state changes -----------------------------------------------------------------------

    async def _form(self, request: web.Request) -> tuple[ConsoleUser, MultiDictProxy[str]]:
        """The admitted user and the form of a POST that passed the cross-site checks."""
        user = await self._authenticator.user(request)
        problem = cross_site_problem(request.headers, f"https://{request.host}")
        if problem is not None:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, problem)
        posted = await request.post()
        form = MultiDictProxy(MultiDict((k, v) for k, v in posted.items() if isinstance(v, str)))
        problem = self._tokens.problem(user.fingerprint, _one(form, "csrf", required=False))
        if problem is not None:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"CSRF check failed: {problem}")
        return user, form

    async def decide(self, request: web.Request) -> web.StreamResponse:
        user, form = await self._form(request)
        approval_id = request.match_info["approval_id"]
        decision = _one(form, "decision")
        if decision not in ("approve", "reject"):
            raise _bad("decision must be approve or reject")
        reason = _one(form, "reason", required=False, limit=500)
        record = await self._operations.decide(
            user.caller, approval_id, approve=decision == "approve", reason=reason
        )
        self._remember(record)
        done = f"?done={record.status.value}"
        if _one(form, "back", required=False) == "list":
            raise web.HTTPSeeOther(f"/approvals{done}#approval-{approval_id}")
        raise web.HTTPSeeOther(f"/approvals/{approval_id}{done}")

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        user, form = await self._form(request)
        pattern = _one(form, "pattern")
        reason = _one(form, "reason", limit=500)
        try:
            ttl_s = parse_duration_s(_one(form, "ttl", limit=20))
            await self._operations.revoke(user.caller, pattern, ttl_s, reason)
        except ValueError as error:
            raise _bad(str(error)) from None
        raise web.HTTPSeeOther("/revocations?done=revoked")

    async def unrevoke(self, request: web.Request) -> web.StreamResponse:
        user, form = await self._form(request)
        try:
            removed = await self._operations.unrevoke(user.caller, _one(form, "pattern"))
        except ValueError as error:
            raise _bad(str(error)) from None
        raise web.HTTPSeeOther(f"/revocations?done={'unrevoked' if removed else 'not-revoked'}")

    def _remember(self, record: ApprovalRecord) -> None:
        self._decided[record.approval_id] = record
        self._decided.move_to_end(record.approval_id)
        while len(self._decided) > _REMEMBERED:
            self._decided.popitem(last=False)


def _bad(message: str) -> Refused:
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, message)


def _one(
    form: MultiDictProxy[str], name: str, *, required: bool = True, limit: int = _MAX_TEXT
) -> str:
    """One text field, stripped; refused when repeated, too long or holding control codes."""
    values = form.getall(name, [])
    if len(values) > 1:
        raise _bad(f"the form field {name!r} is repeated")
    value = values[0].strip() if values else ""
    if required and not value:
        raise _bad(f"the form field {name!r} is required")
    if len(value) > limit:
        raise _bad(f"the form field {name!r} is longer than {limit} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise _bad(f"the form field {name!r} holds control characters")
    return value


@web.middleware
async def _refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal, HTTP error and failure becomes a page; nothing leaks a traceback."""
    try:
        return await handler(request)
    except Refused as refusal:
        who = request.get(CALLER_NAME)
        log.warning(
            "console %s %s by %s refused: %s",
            request.method, request.path, who or "?", refusal.message,
        )  # fmt: skip
        return _refused_page(refusal, who)
    except StoreUnavailable as error:
        log.error("console %s %s: %s", request.method, request.path, error)
        return _html(pages.error_page(503, "Unavailable", f"state store unavailable: {error}"), 503)
    except web.HTTPRedirection:
        raise
    except web.HTTPException as error:
        title = _TITLES.get(error.status, error.reason)
        return _html(pages.error_page(error.status, title, error.reason), error.status)
    except Exception:
        log.exception("console %s %s failed", request.method, request.path)
        return _html(pages.error_page(500, "Error", "internal error (logged)"), 500)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def build_console(
    operations: AdminOperations,
    authenticator: ConsoleAuthenticator,
    csrf_secret: bytes,
    clock: Clock | None = None,
) -> web.Application:
    """The console application; serve it only over mutual TLS (`console.tls`)."""
    clock = clock or SystemClock()
    console = _Console(operations, authenticator, CsrfTokens(csrf_secret, clock), clock)
    app = web.Application(middlewares=[_refusals], client_max_size=_MAX_FORM_BYTES)
    app.on_response_prepare.append(_headers)
    css, js = _static("console.css"), _static("console.js")

    async def stylesheet(request: web.Request) -> web.StreamResponse:
        return web.Response(body=css, content_type="text/css", charset="utf-8")

    async def script(request: web.Request) -> web.StreamResponse:
        return web.Response(body=js, content_type="text/javascript", charset="utf-8")

    app.router.add_get("/", console.index)
    app.router.add_get("/approvals", console.approvals)
    app.router.add_get("/approvals/{approval_id}", console.approval)
    app.router.add_post("/approvals/{approval_id}/decide", console.decide)
    app.router.add_get("/revocations", console.revocations)
    app.router.add_post("/revocations", console.revoke)
    app.router.add_post("/revocations/unrevoke", console.unrevoke)
    app.router.add_get("/static/console.css", stylesheet)
    app.router.add_get("/static/console.js", script)
    return app
