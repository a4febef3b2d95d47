"""Whether a bundle's CA certificate can sign anything: warned about, never refused.

cryptography's path validation requires every CA of a chain, the trust anchor included, to
carry keyUsage with keyCertSign. A bundle CA without it loads, yet nothing ever chains to
it: every caller it issued for is denied `certificate_invalid`, which looks like a problem
of the callers. So every source of bundles (PEM and SPIFFE JSON files, the Workload API)
runs `authority_problem` over its CAs and logs what it finds, naming itself, and
`TrustBundles` keeps the findings for `/readyz` and `authz_trust_domains{state="unusable"}`.
The CA stays in the bundle: the domain's other CAs may be fine, and refusing the whole
bundle would distrust them too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256

from authz_server.core.errors import quote
from authz_server.identity.bundle_json import not_a_ca

__all__ = ["authority_problem", "authority_warnings", "log_authority_warnings"]

log = logging.getLogger(__name__)


def authority_problem(certificate: x509.Certificate) -> str | None:
    """Why `certificate`, a CA of a bundle, cannot sign certificates; None when it can."""
    problem = not_a_ca(certificate)  # also catches unreadable extensions
    if problem is not None:
        return problem
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "no keyUsage extension (keyCertSign is required)"
    if not usage.key_cert_sign:
        return "keyUsage lacks keyCertSign"
    return None


def authority_warnings(authorities: Iterable[x509.Certificate]) -> tuple[str, ...]:
    """One line per CA of `authorities` that cannot sign: which CA, and why."""
    lines = []
    for certificate in authorities:
        problem = authority_problem(certificate)
        if problem is not None:
            lines.append(
                f"CA {quote(certificate.subject.rfc4514_string(), 120)} "
                f"(sha256 {certificate.fingerprint(SHA256()).hex()[:16]}) cannot sign "
                f"certificates: {problem}; SVIDs it issued are refused (certificate_invalid)"
            )
    return tuple(lines)


def log_authority_warnings(
    source: str, trust_domain: str, authorities: Iterable[x509.Certificate]
) -> tuple[str, ...]:
    """Log a warning per CA that cannot sign, naming `source`; return the lines."""
    lines = authority_warnings(authorities)
    for line in lines:
        log.warning("%s: trust domain %s: %s", source, quote(trust_domain), line)
    return lines
