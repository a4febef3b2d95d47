"""MkDocs hook: `concepts/reason-codes.md`, generated from the one reason table.

Statuses come from `authz_server.core.decision.STATUS_BY_REASON`, the table the server itself
answers with, so the page cannot disagree with it. What each reason means is written
here, once per reason; the build fails when a reason has no meaning (a new reason cannot
ship undocumented) or a meaning names a reason that no longer exists.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.rpc import code_pb2
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

from authz_server.core.decision import STATUS_BY_REASON

PAGE = "concepts/reason-codes.md"

#: Where each phase is described; the "decided in" column links there.
PHASES: dict[str, str] = {
    "request view": "request-phases.md#request-view",
    "path check": "request-phases.md#path-check",
    "identity": "request-phases.md#identity",
    "conditions": "request-phases.md#conditions",
    "decision": "request-phases.md#decision",
    "any": "request-phases.md#response",
}

#: reason → (phase that decides it, what it means). Every `Reason` needs an entry.
MEANINGS: dict[str, tuple[str, str]] = {
    "allowed_by_rule": (
        "decision",
        "An allow rule matched the request and every condition of its `when` held; no "
        "deny rule applied.",
    ),
    "allowed_by_default": (
        "decision",
        "No rule decided and `defaults.decision` is `allow`; also the enforced outcome of an "
        "observe-only policy (`defaults.mode: dry_run`), and a verified caller's "
        "connection-level check under `defaults.non_http: allow`.",
    ),
    "malformed_request": (
        "request view",
        "The bytes Envoy sent are not a `CheckRequest`, or the request lacks what every "
        "check needs (an empty `CheckRequest`, no method or path).",
    ),
    "unsupported_request": (
        "request view",
        "A `CheckRequest` without HTTP attributes (Istio also installs the provider as a TCP "
        "filter) while the policy keeps `defaults.non_http: deny`.",
    ),
    "non_canonical_path": (
        "path check",
        "The path is not in canonical form (dot segments, `//`, encoded `/` or `\\`, "
        "control characters, …); it never reaches rule matching.",
    ),
    "invalid_spiffe_id": (
        "identity",
        "The caller's ID breaks the strict SPIFFE ID grammar, or names only a trust domain "
        "(no path, so no workload).",
    ),
    "untrusted_trust_domain": (
        "identity",
        "The caller's trust domain is not listed in `identity.trust_domains`.",
    ),
    "certificate_invalid": (
        "identity",
        "The certificate (or an XFCC `Cert=`, or a JWT-SVID) does not verify against the "
        "bundle of its own trust domain, breaks an X509-SVID leaf rule, or has expired.",
    ),
    "certificate_mismatch": (
        "identity",
        "The certificate's URI SAN is not the principal Envoy reported.",
    ),
    "certificate_required": (
        "identity",
        "`identity.require_certificate: true` and the identity came without a certificate.",
    ),
    "no_identity": (
        "identity",
        "No identity source gave an identity and no `unauthenticated: true` rule allows "
        "the request; a default never admits an anonymous caller.",
    ),
    "revoked": (
        "identity",
        "The caller matches `identity.deny` or a revocation made through the admin API.",
    ),
    "subject_not_caller": (
        "identity",
        "AuthZEN API: the caller asked about another subject without being listed as a "
        "trusted enforcement point.",
    ),
    "denied_by_rule": (
        "decision",
        "A deny rule matched and its conditions held, or could not be judged.",
    ),
    "no_matching_rule": (
        "decision",
        "No rule allowed the request and `defaults.decision` is `deny`.",
    ),
    "approval_required": (
        "conditions",
        "The allow rule needs a human approval of this exact action; a pending request was "
        "recorded and its id is in `x-authz-approval-id`.",
    ),
    "approval_denied": (
        "conditions",
        "An approver rejected this exact action; retries are refused until its ttl ends.",
    ),
    "rate_limited": (
        "conditions",
        "The rule's rate limit is used up, or the caller already has the maximum of "
        "pending approvals; `retry-after` says when to try again.",
    ),
    "outside_schedule": (
        "conditions",
        "None of the rule's schedule windows holds at the time of the request.",
    ),
    "condition_failed": (
        "conditions",
        "A `headers`, `query`, `body` or `expr` condition failed (or a rate-limit key header "
        "is missing), so the allow rule does not grant.",
    ),
    "body_unavailable": (
        "conditions",
        "A condition needs the body but it is absent, partial, not `application/json`, not "
        "UTF-8, not exactly one JSON document, or has duplicate keys.",
    ),
    "internal_error": (
        "any",
        "Fail closed: something unexpected happened, no policy or trust bundle is in force "
        "yet, the store a rule needs is unreachable, or the audit log cannot be written.",
    ),
}

INTRO = """\
# Reason codes

Every decision carries one reason code, a stable snake_case word. The reason alone
decides the HTTP status Envoy gives the client and the gRPC code in the `CheckResponse`:
nothing else in the server picks a status. A deny's reason is in the JSON body Envoy
returns, in the audit log and in the `reason` label of `authz_decisions_total`. See the
[response contract](response-contract.md) for the shape of an answer.

This table is generated from the server's own reason table when the documentation is
built. When several allow rules matched but failed their conditions, the deny carries
the most specific condition reason, in this order: `approval_denied`,
`approval_required`, `rate_limited`, `outside_schedule`, `condition_failed`,
`body_unavailable` (see [evaluation](../policy/reference.md#evaluation)).

| reason | HTTP | gRPC code | decided in | meaning |
|---|---:|---|---|---|
"""


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add the generated page; a committed copy would go stale, so refuse one."""
    if files.get_file_from_path(PAGE) is not None:
        raise PluginError(f"docs/{PAGE} is generated by docs/hooks/reason_codes.py: delete it")
    files.append(File.generated(config, PAGE, content=render_page()))
    return files


def render_page(
    table: Mapping[str, tuple[int, int]] | None = None,
    meanings: Mapping[str, tuple[str, str]] = MEANINGS,
) -> str:
    """The page for `table` (reason → (gRPC code, HTTP status); the server's by default).

    Raises `PluginError` when a reason lacks a meaning or a meaning has no reason.
    """
    if table is None:
        table = {str(reason): codes for reason, codes in STATUS_BY_REASON.items()}
    missing = sorted(set(table) - set(meanings))
    if missing:
        raise PluginError(
            "reason code(s) without a meaning in docs/hooks/reason_codes.py MEANINGS: "
            + ", ".join(missing)
        )
    stale = sorted(set(meanings) - set(table))
    if stale:
        raise PluginError(
            "docs/hooks/reason_codes.py MEANINGS describes reason(s) the server no longer "
            "has: " + ", ".join(stale)
        )
    rows = []
    for reason, (grpc_code, http_status) in table.items():
        phase, meaning = meanings[reason]
        if phase not in PHASES:
            raise PluginError(f"reason {reason!r}: unknown phase {phase!r}")
        rows.append(
            f"| `{reason}`{{#{reason}}} | {http_status} | `{code_pb2.Code.Name(grpc_code)}` "
            f"({grpc_code}) | [{phase}]({PHASES[phase]}) | {meaning} |"
        )
    return INTRO + "\n".join(rows) + "\n"
