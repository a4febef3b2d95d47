"""Identity source `authzen`: a subject vouched for by an authenticated AuthZEN caller.

An AuthZEN request names its subject; the subject is *claimed* by the caller (a Policy
Enforcement Point), never proven by a certificate of its own. The AuthZEN listener
verifies the caller's client certificate (X509-SVID, chained to the bundle of its own
trust domain) and puts the verified ID in `RequestView.vouched_by`. From there the checks
are the identity phase's, in this order, each a deny:

    caller     its trust domain is trusted by the policy        → untrusted_trust_domain
               `identity.deny` does not list it                  → revoked
    subject    a SPIFFE ID naming a workload (it has a path)     → invalid_spiffe_id
               the caller itself, or the caller is listed in
               `authzen.trusted_peps`                            → subject_not_caller
               its trust domain is trusted by the policy        → untrusted_trust_domain
               `identity.deny` does not list it                  → revoked

and then, in the pipeline, the store's revocations of both (the caller as the `proxy`).
`identity.sources` does not apply: it says how to read the identity out of a CheckRequest,
and an AuthZEN request has none of those credentials. The caller `LOCAL_PEP`
(`--authzen-insecure-local`, loopback only) is trusted to vouch for anyone and has no
identity to check.
"""

from __future__ import annotations

from collections.abc import Sequence

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError, quote
from authz_server.core.request import LOCAL_PEP, RequestView
from authz_server.identity.model import Identity, IdentityConfig, check_not_denied
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.identity.spiffe_id import SpiffeId, parse_workload_id

__all__ = ["SOURCE_AUTHZEN", "vouched_identity"]

#: The audit record's `identity_source` of an AuthZEN subject.
SOURCE_AUTHZEN = "authzen"


def vouched_identity(
    view: RequestView, config: IdentityConfig, trusted_peps: Sequence[PrincipalMatcher]
) -> tuple[Identity, Identity | None]:
    """(subject, the caller when it is someone else) or `IdentityError`; see the module."""
    caller: SpiffeId | None = None
    if view.vouched_by != LOCAL_PEP:
        caller = parse_workload_id(view.vouched_by)
        _check_trust_domain(caller, config)
        check_not_denied(caller, config)
    subject = parse_workload_id(view.principal)
    trusted = any(p.match(caller) is not None for p in trusted_peps) if caller else True
    if caller is not None and subject != caller and not trusted:
        raise IdentityError(
            Reason.SUBJECT_NOT_CALLER,
            f"{caller} may ask only about itself, not about {quote(str(subject))} "
            "(it is not listed in authzen.trusted_peps)",
        )
    _check_trust_domain(subject, config)
    check_not_denied(subject, config)
    itself = caller is not None and subject == caller
    vouching = None if caller is None or itself else Identity(caller, SOURCE_AUTHZEN, True)
    return Identity(subject, SOURCE_AUTHZEN, itself), vouching


def _check_trust_domain(spiffe_id: SpiffeId, config: IdentityConfig) -> None:
    if spiffe_id.trust_domain not in config.trust_domains:
        raise IdentityError(
            Reason.UNTRUSTED_TRUST_DOMAIN,
            f"trust domain {quote(spiffe_id.trust_domain)} is not trusted by the policy",
        )
