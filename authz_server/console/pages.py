"""The console's pages, server-rendered; every value goes through `markup.render`.

Pages link one stylesheet and one deferred script, both from `/static/` (no inline style or
script: the Content-Security-Policy forbids them), and every form carries the CSRF token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from authz_server.console.markup import Markup, join, render
from authz_server.state.events import BodyPreview
from authz_server.state.store import ApprovalRecord, ApprovalStatus, Revocation

__all__ = [
    "Decidable",
    "RuleInfo",
    "approval_gone_page",
    "approval_page",
    "approvals_page",
    "error_page",
    "revocations_page",
]

_LAYOUT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · authz-server console</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body>
<header class="top">
<span class="brand">authz-server</span>
<nav>{nav}</nav>
<span class="who">{who}</span>
</header>
<main>
<h1>{title}</h1>
{notice}
{body}
</main>
</body>
</html>
"""

_NAV = (("approvals", "/approvals", "Approvals"), ("revocations", "/revocations", "Revocations"))

_CARD = """<article class="approval state-{state}" id="approval-{approval_id}">
<header>
<span class="badge state-{state}">{state}</span>
<span class="action"><b>{method}</b> <code>{target}</code></span>
<a class="permalink" href="/approvals/{approval_id}">details</a>
</header>
<dl>
<dt>Approval id</dt><dd><code class="id">{approval_id}</code></dd>
<dt>Requested by</dt><dd><code class="principal">{principal}</code></dd>
<dt>Method</dt><dd><code>{method}</code></dd>
<dt>Host</dt><dd><code>{host}</code></dd>
<dt>Path</dt><dd><code class="path">{path}</code></dd>
<dt>Rule</dt><dd><code class="rule">{rule_id}</code>
 <span class="description">{description}</span></dd>
<dt>Body digest</dt><dd><code class="digest">{body_digest}</code></dd>
{preview}<dt>Created</dt><dd>{created}</dd>
<dt>Expires</dt><dd>{expires}</dd>
<dt>State</dt><dd class="state">{state_text}</dd>
<dt>Approvers</dt><dd>{approvers}</dd>
</dl>
{decide}
</article>"""

_PREVIEW = """<dt>Body preview</dt><dd class="preview"><pre><code>{fields}</code></pre>{note}</dd>
"""

_TRUNCATED = (
    '<span class="note truncated">truncated: a field was shortened or left out '
    "to fit the size cap</span>"
)

_DECIDE = """<form class="decide" method="post" action="/approvals/{approval_id}/decide">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="back" value="{back}">
<label>Reason (optional)
 <input type="text" name="reason" maxlength="500" autocomplete="off"></label>
<span class="buttons">{buttons}</span>
</form>
{notes}"""

_BUTTON = '<button type="submit" name="decision" value="{value}" class="{value}">{label}</button>'

_REVOKE_FORM = """<form class="revoke" method="post" action="/revocations">
<input type="hidden" name="csrf" value="{csrf}">
<label>SPIFFE ID pattern <input type="text" name="pattern" required maxlength="2048"
 placeholder="spiffe://example.org/agents/**" autocomplete="off"></label>
<label>For <input type="text" name="ttl" required maxlength="20" value="1h"
 pattern="[0-9dhms]+" title="90s, 15m, 1h30m, 7d"></label>
<label>Reason <input type="text" name="reason" required maxlength="500" autocomplete="off"></label>
<button type="submit" class="revoke">Revoke</button>
</form>"""

_REVOCATION_ROW = """<tr>
<td><code class="pattern">{pattern}</code></td><td>{reason}</td><td><code>{by}</code></td>
<td>{created}</td><td>{expires}</td>
<td><form method="post" action="/revocations/unrevoke">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="pattern" value="{pattern}">
<button type="submit" class="unrevoke">Unrevoke</button>
</form></td>
</tr>"""

_REVOCATIONS = """<section>
<h2>Revoke</h2>
<p class="hint">Every identity matching the pattern is denied (`revoked`) until the
revocation expires or is lifted, including its admin rights.</p>
{form}
</section>
<section>
<h2>In force</h2>
{table}
</section>"""

_REVOCATION_TABLE = """<table class="revocations">
<thead><tr><th>Pattern</th><th>Reason</th><th>Revoked by</th><th>Since</th><th>Expires</th>
<th></th></tr></thead>
<tbody>
{rows}
</tbody>
</table>"""


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What the policy in force says about an approval's rule."""

    description: str
    #: The approver patterns in force (they, not the record's copy, decide).
    approvers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decidable:
    """Whether the viewer may approve / reject a record: None when yes, else why not."""

    approve: str | None
    reject: str | None


def _time(us: int, now: datetime) -> Markup:
    at = datetime.fromtimestamp(us / 1_000_000, UTC)
    seconds = int((at - now).total_seconds())
    span = abs(seconds)
    if span < 90:
        amount = f"{span}s"
    elif span < 5400:
        amount = f"{round(span / 60)} min"
    elif span < 2 * 86400:
        amount = f"{round(span / 3600)} h"
    else:
        amount = f"{round(span / 86400)} days"
    relative = "just now" if span < 5 else f"in {amount}" if seconds > 0 else f"{amount} ago"
    return render(
        '<time datetime="{iso}">{text}</time> <span class="relative">({relative})</span>',
        iso=at.isoformat(timespec="seconds"),
        text=at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        relative=relative,
    )


def _state_text(record: ApprovalRecord, now: datetime) -> Markup:
    if record.status is ApprovalStatus.PENDING:
        return Markup("pending: waiting for an approver")
    when = _time(record.decided_us, now) if record.decided_us is not None else Markup("")
    text = (
        "{status} by {by} {when}; the identical request is allowed once"
        if record.status is ApprovalStatus.APPROVED
        else "{status} by {by} {when}; the identical request is denied"
    )
    return render(text, status=record.status.value, by=record.decided_by or "?", when=when)


def _preview(record: ApprovalRecord) -> Markup:
    """The "Body preview" row: the allow-listed, secret-free fields the notification showed
    (`policy.conditions.preview`); nothing when the rule lists no `preview_fields`."""
    if record.preview is None:
        return Markup("")
    preview = BodyPreview.from_json(record.preview)
    if preview is None:
        return render(_PREVIEW, fields="(unreadable)", note="")
    fields = json.dumps(dict(preview.fields), ensure_ascii=False, indent=1)
    return render(_PREVIEW, fields=fields, note=Markup(_TRUNCATED if preview.truncated else ""))


def approval_card(
    record: ApprovalRecord,
    rule: RuleInfo,
    decidable: Decidable,
    csrf: str,
    now: datetime,
    back: str = "page",
) -> Markup:
    """One approval with its context; decide buttons for what the viewer may do.

    `back` is where the form returns: "list" or "page".
    """
    target = record.host + record.path + (f"?{record.query}" if record.query else "")
    approvers = join((render("<code>{p}</code>", p=p) for p in rule.approvers), ", ") or Markup(
        "none in the policy in force"
    )
    return render(
        _CARD,
        state=record.status.value,
        approval_id=record.approval_id,
        method=record.method,
        target=target,
        principal=record.principal,
        host=record.host or "(none)",
        path=record.path + (f"?{record.query}" if record.query else ""),
        rule_id=record.rule_id,
        description=rule.description,
        body_digest=record.body_digest or "(no body)",
        preview=_preview(record),
        created=_time(record.created_us, now),
        expires=_time(record.expires_us, now),
        state_text=_state_text(record, now),
        approvers=approvers,
        decide=_decide_form(record, decidable, csrf, back),
    )


def _decide_form(record: ApprovalRecord, decidable: Decidable, csrf: str, back: str) -> Markup:
    if record.status is not ApprovalStatus.PENDING:
        return Markup("")
    buttons = [
        render(_BUTTON, value=value, label=label)
        for value, label, why_not in (
            ("approve", "Approve", decidable.approve),
            ("reject", "Reject", decidable.reject),
        )
        if why_not is None
    ]
    reasons = {why for why in (decidable.approve, decidable.reject) if why is not None}
    notes = join(render('<p class="note">{why}</p>', why=why) for why in sorted(reasons))
    if not buttons:
        return notes
    return render(
        _DECIDE,
        approval_id=record.approval_id,
        csrf=csrf,
        back=back,
        buttons=join(buttons, " "),
        notes=notes,
    )


def layout(
    title: str,
    body: Markup,
    who: str | None = None,
    active: str | None = None,
    notice: str | None = None,
) -> Markup:
    nav = join(
        render(
            '<a href="{href}"{current}>{label}</a>',
            href=href,
            label=label,
            current=Markup(' aria-current="page"' if key == active else ""),
        )
        for key, href, label in _NAV
    )
    return render(
        _LAYOUT,
        title=title,
        nav=nav if who is not None else Markup(""),
        who=render("<code>{who}</code>", who=who) if who is not None else Markup(""),
        notice=render('<p class="notice" role="status">{n}</p>', n=notice) if notice else "",
        body=body,
    )


def approvals_page(cards: Sequence[Markup], who: str, notice: str | None = None) -> Markup:
    body = (
        join(cards)
        if cards
        else Markup('<p class="empty">No approvals are waiting or decided right now.</p>')
    )
    intro = Markup(
        '<p class="hint">Live approvals, newest first. An approved action is let through '
        "once, for the identical request (same caller, method, host, path, query and body).</p>"
    )
    return layout("Approvals", join([intro, body]), who, "approvals", notice)


def approval_page(card: Markup, who: str, notice: str | None = None) -> Markup:
    return layout("Approval", card, who, "approvals", notice)


def approval_gone_page(
    approval_id: str, remembered: ApprovalRecord | None, now: datetime, who: str
) -> Markup:
    """The page of an id the store no longer holds; what this console knows of it, if any."""
    now_us = int(now.timestamp() * 1_000_000)
    if remembered is None:
        text = render(
            "There is no live approval {id}: it is unknown, has expired, or was already used.",
            id=approval_id,
        )
    elif remembered.status is ApprovalStatus.APPROVED and now_us < remembered.expires_us:
        text = render(
            '<span class="used">Used.</span> Approved by {by} {when}, and gone from the store '
            "before its approval expired: the requester's identical retry was let through. "
            "Approvals are single-use; a further retry needs a new approval.",
            by=remembered.decided_by or "?",
            when=_time(remembered.decided_us or remembered.created_us, now),
        )
    else:
        text = render(
            "{status} by {by} {when}; that decision has expired.",
            status=remembered.status.value.capitalize(),
            by=remembered.decided_by or "?",
            when=_time(remembered.decided_us or remembered.created_us, now),
        )
    body = render(
        '<article class="approval gone"><p><code class="id">{id}</code></p><p>{text}</p>'
        '<p><a href="/approvals">All approvals</a></p></article>',
        id=approval_id,
        text=text,
    )
    return layout("Approval", body, who, "approvals")


def revocations_page(
    revocations: Sequence[Revocation],
    csrf: str,
    now: datetime,
    who: str,
    notice: str | None = None,
) -> Markup:
    rows = [
        render(
            _REVOCATION_ROW,
            pattern=r.pattern,
            reason=r.reason,
            by=r.by,
            created=_time(r.created_us, now),
            expires=_time(r.expires_us, now),
            csrf=csrf,
        )
        for r in revocations
    ]
    table = (
        render(_REVOCATION_TABLE, rows=join(rows))
        if rows
        else Markup('<p class="empty">No revocations are in force.</p>')
    )
    body = render(_REVOCATIONS, form=render(_REVOKE_FORM, csrf=csrf), table=table)
    return layout("Revocations", body, who, "revocations", notice)


def error_page(status: int, title: str, message: str, who: str | None = None) -> Markup:
    body = render(
        '<p class="error" data-status="{status}">{message}</p><p><a href="/approvals">'
        "Approvals</a></p>",
        status=status,
        message=message,
    )
    return layout(title, body, who)
