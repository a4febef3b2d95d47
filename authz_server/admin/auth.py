"""Who is calling the admin API, and what they may do (docs/operations/admin-api.md).

The TLS handshake already demanded a client certificate chaining to *some* trusted CA —
grpc pools the roots of every trust domain. That is not enough: a partner's CA must not be
able to mint our IDs. So the peer certificate is verified again here, exactly as a Check
peer is (docs/concepts/identity.md#verification): X509-SVID leaf rules, and a chain to the bundle
**of the trust domain in its own URI SAN**, at the moment of the call, against the bundles in force
now.

Then, in order, each failing closed:

    authenticate   verified SPIFFE ID from the certificate            → UNAUTHENTICATED
    admin          matches the policy's `admin.principals`            → PERMISSION_DENIED
    not revoked    neither `identity.deny` nor a store revocation     → PERMISSION_DENIED
    approver       (Approve/Reject) matches the rule's `approvers`,   → PERMISSION_DENIED
                   and (Approve) is not the requesting principal

`--admin-insecure-local` (demos only) skips TLS: the caller is the fixed `LOCAL_OPERATOR`,
treated as an admin and an approver of every rule. It can only bind a loopback address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc
from cryptography import x509

from authz_server.core.errors import IdentityError, StoreUnavailable, quote
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.identity.x509 import check_svid_leaf, verify_svid
from authz_server.policy.model import Policy
from authz_server.state.store import Store

__all__ = [
    "LOCAL_OPERATOR",
    "Caller",
    "Refused",
    "authenticate",
    "authorize_admin",
    "authorize_approver",
]

#: How the insecure local operator appears in approval records and logs.
LOCAL_OPERATOR = "local-operator (--admin-insecure-local)"


class Refused(Exception):
    """An admin call is refused with `code`; the message is safe to send to the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated admin caller: a verified SPIFFE ID, or the insecure local operator."""

    spiffe_id: SpiffeId | None

    @property
    def local(self) -> bool:
        return self.spiffe_id is None

    @property
    def name(self) -> str:
        return LOCAL_OPERATOR if self.spiffe_id is None else str(self.spiffe_id)


def authenticate(
    auth_context: Mapping[str, Sequence[bytes]],
    bundles: TrustBundles,
    trust_domains: frozenset[str],
    now: datetime,
) -> Caller:
    """The verified identity behind a TLS peer's certificate; `Refused` otherwise."""
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED, "a client certificate (X509-SVID) is required"
        )
    pem = pems[0]
    try:
        leaf = x509.load_pem_x509_certificate(pem)
        spiffe_id = check_svid_leaf(leaf, now)
        if spiffe_id.trust_domain not in trust_domains:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"trust domain {quote(spiffe_id.trust_domain)} is not trusted by the policy",
            )
        verify_svid(
            pem.decode("ascii"), spiffe_id, bundles, now, _intermediates(auth_context, leaf)
        )
    except IdentityError as error:
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED, f"client certificate rejected: {error}"
        ) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED, f"client certificate does not parse: {error}"
        ) from None
    return Caller(spiffe_id)


def _intermediates(
    auth_context: Mapping[str, Sequence[bytes]], leaf: x509.Certificate
) -> list[x509.Certificate]:
    """The certificates the peer sent after its leaf (SPIRE may issue via intermediates)."""
    chain = b"".join(auth_context.get("x509_pem_cert_chain") or [])
    if not chain:
        return []
    certificates = x509.load_pem_x509_certificates(chain)
    return [c for c in certificates if c != leaf]


def authorize_admin(caller: Caller, policy: Policy) -> None:
    """The caller must match `admin.principals` and not be denied by `identity.deny`."""
    if caller.spiffe_id is None:
        return
    if not _matches(caller.spiffe_id, policy.admin_principals):
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{quote(caller.name)} is not allowed by the policy's admin.principals",
        )
    if _matches(caller.spiffe_id, policy.identity.deny):
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED, f"{quote(caller.name)} is denied by identity.deny"
        )


async def check_not_revoked(caller: Caller, store: Store) -> None:
    """A revoked identity loses its admin rights too; an unreachable store refuses (closed)."""
    if caller.spiffe_id is None:
        return
    try:
        revocation = await store.revoked(caller.spiffe_id)
    except StoreUnavailable as error:
        raise Refused(grpc.StatusCode.UNAVAILABLE, f"state store unavailable: {error}") from None
    if revocation is not None:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{quote(caller.name)} is revoked ({quote(revocation.pattern)}: {revocation.reason})",
        )


def authorize_approver(
    caller: Caller,
    rule_id: str,
    approvers: Sequence[PrincipalMatcher],
    requester: str | None,
) -> None:
    """The caller must match the rule's approvers; `requester` (Approve only) must differ."""
    if not approvers:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"rule {quote(rule_id)} names no approvers in the policy in force",
        )
    if caller.spiffe_id is None:
        return
    if requester is not None and str(caller.spiffe_id) == requester:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            "separation of duties: the requesting principal cannot approve its own action",
        )
    if not _matches(caller.spiffe_id, approvers):
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{quote(caller.name)} is not an approver of rule {quote(rule_id)}",
        )


def _matches(spiffe_id: SpiffeId, patterns: Sequence[PrincipalMatcher]) -> bool:
    return any(p.match(spiffe_id) is not None for p in patterns)
