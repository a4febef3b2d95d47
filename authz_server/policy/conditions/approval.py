"""`when.approval`: a human approves one action before it is allowed, once
(docs/policy/approvals.md).

    approval: {approvers: ["spiffe://example.org/humans/release-managers/*"], ttl: 15m,
               preview_fields: [amount, destination.country]}

The action is the fingerprint of principal, method, host, path, canonical query and body
digest (`state.fingerprint`); its hex form is the approval id. Each Check of an action
asks the store to `consume` an approval for it, atomically:

    no granted approval  → FAILS approval_required (403, `x-authz-approval-id`, id in the
                           body); the store keeps a pending record for `approvals list`
    granted              → HOLDS, once: the record is gone, a replay needs a new approval;
                           the decision names the approval and its approver (audit log)
    rejected             → FAILS approval_denied until `ttl` after the rejection
    too many pending     → FAILS rate_limited (429, `retry-after`), no record and no id:
                           the principal already has `MAX_PENDING_PER_PRINCIPAL` requests
                           waiting for a human (`state.store`)
    store unreachable    → UNKNOWN internal_error (this rule fails closed, others answer)

The body must be the one the backend will get, or an approval for one body would be
spent on another: a partial body (`x-envoy-auth-partial-body`), or a request that
announces a body (`content-length` > 0, `transfer-encoding`) that Envoy did not forward
(no `with_request_body`), is `body_unavailable`.

The Check that creates a pending record announces it (`store.events`, a `pending` event,
handed over without awaiting: the decision never waits for a notification). Its body
preview holds only the `preview_fields` (dotted paths into the JSON body), never a field
that looks like a secret (`preview.py`); without `preview_fields` there is no preview.

Who may approve is decided by the admin API against the policy in force when the approver
acts (the patterns stored with a pending record are only shown to humans). The approvers'
trust domains must be in `identity.trust_domains`; the rule must be an allow rule for
identified callers (the loader checks both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from authz_server.core.decision import Reason
from authz_server.core.durations import parse_duration_s
from authz_server.core.errors import StoreUnavailable, quote
from authz_server.core.yaml_source import Fields, Value
from authz_server.identity.patterns import PrincipalPattern, compile_principal_pattern
from authz_server.policy.conditions.base import ConditionResult, Outcome, RequestContext
from authz_server.policy.conditions.jsonbody import PARTIAL_BODY_HEADER
from authz_server.policy.conditions.preview import body_preview, secret_key_problem
from authz_server.state.events import ApprovalEvent, EventType
from authz_server.state.fingerprint import action_fingerprint, body_digest
from authz_server.state.store import ApprovalState, PendingAction, Store

__all__ = ["ApprovalCondition", "compile_approval"]

_KEYS = frozenset({"approvers", "ttl", "preview_fields"})
DEFAULT_TTL_S = 15 * 60
#: Approvals are for actions about to happen; a day is plenty and bounds stored state.
MAX_TTL_S = 7 * 86400
MAX_PREVIEW_FIELDS = 32


@dataclass(frozen=True, slots=True)
class ApprovalCondition:
    rule_id: str
    approvers: tuple[PrincipalPattern, ...]
    ttl_s: int
    #: Dotted paths into the JSON body shown in notifications (`preview.py`).
    preview_fields: tuple[tuple[str, ...], ...] = ()
    kind: str = "approval"

    def approval_id(self, ctx: RequestContext) -> str | None:
        """The action's approval id; None when the caller has no identity."""
        if ctx.spiffe_id is None:
            return None
        principal = str(ctx.spiffe_id)
        return action_fingerprint(principal, ctx.method, ctx.host, ctx.path, ctx.query, ctx.body)

    async def evaluate(
        self, ctx: RequestContext, params: Mapping[str, str], store: Store
    ) -> ConditionResult:
        problem = _body_problem(ctx)
        if problem is not None:
            return ConditionResult.unknown(Reason.BODY_UNAVAILABLE, problem)
        approval_id = self.approval_id(ctx)
        if approval_id is None:
            # The loader refuses approvals on `unauthenticated` rules; never approve nobody.
            return ConditionResult.unknown(Reason.CONDITION_FAILED, "approval needs an identity")
        # Computed before `consume` so that the record it may create keeps the preview for
        # the console; it is display data, not part of the approval id.
        preview = (
            body_preview(ctx.json_body(), self.preview_fields) if self.preview_fields else None
        )
        action = PendingAction(
            approval_id=approval_id,
            principal=str(ctx.spiffe_id),
            method=ctx.method,
            host=ctx.host,
            path=ctx.path,
            query=ctx.query,
            body_digest=body_digest(ctx.body),
            rule_id=self.rule_id,
            approvers=tuple(p.text for p in self.approvers),
            ttl_s=float(self.ttl_s),
            preview=preview.to_json() if preview is not None else None,
        )
        try:
            consumed = await store.consume(action)
        except StoreUnavailable as error:
            return ConditionResult.unknown(Reason.INTERNAL_ERROR, f"store: {error}")
        if consumed.state is ApprovalState.GRANTED:
            return ConditionResult(
                Outcome.HOLDS,
                detail=f"approved by {consumed.approver}",
                approval_id=approval_id,
                approver=consumed.approver,
            )
        if consumed.state is ApprovalState.DENIED:
            return ConditionResult(
                Outcome.FAILS, Reason.APPROVAL_DENIED, "rejected", approval_id=approval_id
            )
        if consumed.created is not None:
            store.events.emit(ApprovalEvent(EventType.PENDING, consumed.created, preview))
        if consumed.state is ApprovalState.LIMITED:
            # No record was created: handing out its id would promise an approval nobody
            # can see. The principal may retry once one of its pending requests is gone.
            return ConditionResult(
                Outcome.FAILS,
                Reason.RATE_LIMITED,
                "too many pending approvals for this principal",
                retry_after=max(1, math.ceil(consumed.retry_after_s)),
            )
        return ConditionResult(
            Outcome.FAILS, Reason.APPROVAL_REQUIRED, "awaiting approval", approval_id=approval_id
        )

    def preview(self, ctx: RequestContext, params: Mapping[str, str]) -> str:
        approval_id = self.approval_id(ctx)
        return f"approval {approval_id or '(no identity)'}; store not consulted"


def _body_problem(ctx: RequestContext) -> str | None:
    partial = ctx.headers.get(PARTIAL_BODY_HEADER)
    if partial is not None and partial.strip().lower() != "false":
        return "body is partial: an approval must cover the whole body"
    if ctx.body is None:
        length = ctx.headers.get("content-length", "").strip()
        if (length and length != "0") or "transfer-encoding" in ctx.headers:
            return "the request has a body Envoy did not forward (with_request_body)"
    return None


def compile_approval(
    fields: Fields, value: Value, path: str, trust_domains: frozenset[str] | None
) -> ApprovalCondition | None:
    """`{approvers: [patterns], ttl}`; every bad field is an issue."""
    node = fields.mapping(value, path, _KEYS)
    if node is None:
        return None
    before = len(fields.issues)
    entries = node.entries
    approvers: list[PrincipalPattern] = []
    if "approvers" not in entries:
        fields.issue(node.line, f"{path}.approvers", "required (SPIFFE ID patterns of humans)")
    else:
        where = f"{path}.approvers"
        listed = fields.compiled_list(
            entries["approvers"], where, compile_principal_pattern, empty="needs an approver"
        )
        for item, pattern in listed or ():
            if trust_domains is not None and pattern.trust_domain not in trust_domains:
                fields.issue(
                    item.line,
                    where,
                    f"approver pattern {quote(pattern.text)}: trust domain "
                    f"{quote(pattern.trust_domain)} is not in identity.trust_domains",
                )
            approvers.append(pattern)
    ttl_s = DEFAULT_TTL_S
    if "ttl" in entries and (text := fields.string(entries["ttl"], f"{path}.ttl")) is not None:
        try:
            ttl_s = parse_duration_s(text)
        except ValueError as error:
            fields.issue(entries["ttl"].line, f"{path}.ttl", str(error))
        else:
            if ttl_s > MAX_TTL_S:
                fields.issue(entries["ttl"].line, f"{path}.ttl", f"{text!r} is longer than 7d")
    preview_fields: tuple[tuple[str, ...], ...] = ()
    if "preview_fields" in entries:
        shown = fields.compiled_list(
            entries["preview_fields"], f"{path}.preview_fields", _preview_field, empty=None
        )
        preview_fields = tuple(dict.fromkeys(field for _, field in shown or ()))
        if len(preview_fields) > MAX_PREVIEW_FIELDS:
            fields.issue(
                entries["preview_fields"].line,
                f"{path}.preview_fields",
                f"at most {MAX_PREVIEW_FIELDS} fields",
            )
    if len(fields.issues) != before:
        return None
    return ApprovalCondition(fields.rule_id or "", tuple(approvers), ttl_s, preview_fields)


def _preview_field(text: str) -> tuple[str, ...]:
    """`destination.country` → ("destination", "country"); secret-looking names refused."""
    parts = tuple(text.split("."))
    if not all(parts) or len(parts) > 8:
        raise ValueError(f"preview field {quote(text)}: expected dotted field names, e.g. a.b")
    for part in parts:
        problem = secret_key_problem(part)
        if problem is not None:
            raise ValueError(f"preview field {quote(text)}: {problem}; it is never shown")
    return parts
