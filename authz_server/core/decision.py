"""Decisions, reason codes and the one table mapping a reason to its statuses.

Every deny carries a stable snake_case reason. The reason alone decides the HTTP
status Envoy sends to the client and the gRPC code in the CheckResponse; nothing
else in the code base picks a status.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import field

from authz_server.core.values import frozen


class Reason(enum.StrEnum):
    ALLOWED_BY_RULE = "allowed_by_rule"
    ALLOWED_BY_DEFAULT = "allowed_by_default"
    # request shape
    MALFORMED_REQUEST = "malformed_request"
    UNSUPPORTED_REQUEST = "unsupported_request"
    NON_CANONICAL_PATH = "non_canonical_path"
    # identity (docs/concepts/identity.md#verification)
    INVALID_SPIFFE_ID = "invalid_spiffe_id"
    UNTRUSTED_TRUST_DOMAIN = "untrusted_trust_domain"
    CERTIFICATE_INVALID = "certificate_invalid"
    CERTIFICATE_MISMATCH = "certificate_mismatch"
    CERTIFICATE_REQUIRED = "certificate_required"
    NO_IDENTITY = "no_identity"
    REVOKED = "revoked"
    #: AuthZEN: the caller asked about another subject without being a trusted PEP.
    SUBJECT_NOT_CALLER = "subject_not_caller"
    # rules (docs/policy/reference.md#evaluation)
    DENIED_BY_RULE = "denied_by_rule"
    NO_MATCHING_RULE = "no_matching_rule"
    APPROVAL_REQUIRED = "approval_required"
    APPROVAL_DENIED = "approval_denied"
    RATE_LIMITED = "rate_limited"
    OUTSIDE_SCHEDULE = "outside_schedule"
    CONDITION_FAILED = "condition_failed"
    BODY_UNAVAILABLE = "body_unavailable"
    # the server itself
    INTERNAL_ERROR = "internal_error"


# gRPC status codes (google.rpc.Code) used in CheckResponse.status.
GRPC_OK = 0
GRPC_INVALID_ARGUMENT = 3
GRPC_PERMISSION_DENIED = 7
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_UNAVAILABLE = 14
GRPC_UNAUTHENTICATED = 16

#: reason → (gRPC code, HTTP status). The only place statuses are chosen.
STATUS_BY_REASON: dict[Reason, tuple[int, int]] = {
    Reason.ALLOWED_BY_RULE: (GRPC_OK, 200),
    Reason.ALLOWED_BY_DEFAULT: (GRPC_OK, 200),
    Reason.MALFORMED_REQUEST: (GRPC_INVALID_ARGUMENT, 400),
    Reason.UNSUPPORTED_REQUEST: (GRPC_PERMISSION_DENIED, 403),
    Reason.NON_CANONICAL_PATH: (GRPC_INVALID_ARGUMENT, 400),
    Reason.INVALID_SPIFFE_ID: (GRPC_UNAUTHENTICATED, 401),
    Reason.UNTRUSTED_TRUST_DOMAIN: (GRPC_UNAUTHENTICATED, 401),
    Reason.CERTIFICATE_INVALID: (GRPC_UNAUTHENTICATED, 401),
    Reason.CERTIFICATE_MISMATCH: (GRPC_UNAUTHENTICATED, 401),
    Reason.CERTIFICATE_REQUIRED: (GRPC_UNAUTHENTICATED, 401),
    Reason.NO_IDENTITY: (GRPC_UNAUTHENTICATED, 401),
    Reason.REVOKED: (GRPC_PERMISSION_DENIED, 403),
    Reason.SUBJECT_NOT_CALLER: (GRPC_PERMISSION_DENIED, 403),
    Reason.DENIED_BY_RULE: (GRPC_PERMISSION_DENIED, 403),
    Reason.NO_MATCHING_RULE: (GRPC_PERMISSION_DENIED, 403),
    Reason.APPROVAL_REQUIRED: (GRPC_PERMISSION_DENIED, 403),
    Reason.APPROVAL_DENIED: (GRPC_PERMISSION_DENIED, 403),
    Reason.RATE_LIMITED: (GRPC_RESOURCE_EXHAUSTED, 429),
    Reason.OUTSIDE_SCHEDULE: (GRPC_PERMISSION_DENIED, 403),
    Reason.CONDITION_FAILED: (GRPC_PERMISSION_DENIED, 403),
    Reason.BODY_UNAVAILABLE: (GRPC_PERMISSION_DENIED, 403),
    Reason.INTERNAL_ERROR: (GRPC_UNAVAILABLE, 503),
}


def new_decision_id() -> str:
    """A 128-bit random id, hex: unique per decision, safe to put in headers and logs."""
    return os.urandom(16).hex()


@frozen
class Decision:
    """The outcome of one Check, before it is rendered for Envoy.

    `allowed` is what the policy decided. `dry_run` marks a decision that is
    recorded as it is (the would-be deny) but enforced as allow (see `enforced_allow`).
    """

    allowed: bool
    reason: Reason
    rule: str | None = None
    principal: str | None = None
    identity_source: str | None = None
    dry_run: bool = False
    approval_id: str | None = None
    retry_after: int | None = None
    decision_id: str = field(default_factory=new_decision_id)
    at: float = field(default_factory=time.time)
    #: Who approved the action this allow consumed (docs/policy/approvals.md), for the audit record.
    approver: str | None = None
    #: Something the identity phase saw besides the identity, e.g. "xfcc_spoofing".
    identity_note: str | None = None
    #: With `dry_run`: the enforced rule that grants the request (upstream `x-authz-rule`),
    #: while `rule` is the would-be deny's; None when a default grants it.
    enforced_rule: str | None = None

    @property
    def enforced_allow(self) -> bool:
        return self.allowed or self.dry_run

    @property
    def grpc_code(self) -> int:
        return STATUS_BY_REASON[self.reason][0]

    @property
    def http_status(self) -> int:
        return STATUS_BY_REASON[self.reason][1]

    @property
    def verdict(self) -> str:
        return "allow" if self.allowed else "deny"
