"""Identity source `xfcc`: the `x-forwarded-client-cert` header of a trusted proxy. A
strict parser, the verification of the one element the proxy wrote, and the source.

    identity:
      sources: [xfcc, peer]
      xfcc: {trusted_proxies: ["spiffe://example.org/gateway/*"]}   # required when listed

When the source counts as present: the header was sent *and* the direct peer is a
trusted proxy. That is decided on the peer's own identity, verified as for `peer`
(principal, trust domain, certificate, identity.deny) whether or not `peer` is listed,
and it must have come with its certificate. A peer that fails verification denies with
the peer's reason. A verified peer that is no trusted proxy, or no peer at all, gets its
header *ignored* (the source counts as absent) and the decision carries
`identity_note: xfcc_spoofing`, counted in metrics and written to the audit record;
except when the header merely repeats the peer's own identity (one element whose URI is
the peer's, as a local Envoy with SANITIZE_SET writes), which claims nothing.

The header's grammar is `xfcc_header.py`'s.

Why only the last element: every Envoy that writes the header either replaces it with its
own element (SANITIZE_SET) or appends its element at the end (APPEND_FORWARD). The
direct peer is the trusted proxy, so the element it wrote is the last one; the elements
before it were written by hops it cannot vouch for, or by the client itself. The Envoy in
front of authz-server must therefore pass the header on unchanged
(`forward_client_cert_details: FORWARD_ONLY`): with APPEND_FORWARD the last element would
be its own, describing the proxy.

That element must hold exactly one `URI=` (an X509-SVID has exactly one URI SAN; Envoy
writes one `URI=` per SAN), a strict SPIFFE ID with a path (a bare trust domain names no
workload: `invalid_spiffe_id`) in a trusted domain. When it carries the
certificate (`Cert=`, or `Chain=` whose first certificate is the leaf), the leaf is
verified as an X509-SVID against the bundle of its own trust domain, with the rest of
`Chain=` as intermediates, `Hash=` must be its sha256, and its URI SAN must equal `URI=`.

A limit of the format: Envoy writes `URI=` values unquoted (an Envoy TODO), so a client
certificate whose URI SAN contains `,` or `;` could shape what follows it. SPIRE never
issues such a SAN; a proxy whose CA may must not be a trusted proxy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import unquote

from cryptography import x509

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError, quote
from authz_server.core.yaml_source import Fields, Seq, Value
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.model import Identity, IdentityConfig, check_not_denied
from authz_server.identity.patterns import PrincipalMatcher, compile_principals
from authz_server.identity.peer import verified_peer
from authz_server.identity.source import Attempt, Section, SourceKind
from authz_server.identity.spiffe_id import parse_workload_id
from authz_server.identity.x509 import MAX_CHAIN_DEPTH, CertificateVerifier
from authz_server.identity.xfcc_header import XfccElement, XfccError, parse_xfcc

__all__ = [
    "HEADER",
    "KIND",
    "SOURCE_XFCC",
    "XFCC_SPOOFING",
    "XfccSettings",
    "XfccSource",
    "forwarded_identity",
    "parse_settings",
]

HEADER = "x-forwarded-client-cert"
SOURCE_XFCC = "xfcc"
#: `identity_note` (audit) and `authz_identity_failures_total{reason}` (metrics) of an
#: XFCC header that was ignored because the peer that sent it is no trusted proxy.
XFCC_SPOOFING = "xfcc_spoofing"

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----\s*"
)
_PEM_BEGIN = "-----BEGIN "


def forwarded_identity(
    header: str,
    config: IdentityConfig,
    bundles: TrustBundles,
    verifier: CertificateVerifier,
    now: datetime,
) -> Identity:
    """The identity in the last element of `header`, its certificate verified when sent.

    Called only for a header from a trusted proxy. Raises `IdentityError` (an identity reason
    (docs/concepts/identity.md#verification)) on any problem; never returns a partial answer.
    """
    element = _last_element(header)
    uris = element.values("uri")
    if len(uris) != 1:
        raise IdentityError(
            Reason.INVALID_SPIFFE_ID,
            f"x-forwarded-client-cert: the trusted proxy's element has {len(uris)} URI "
            "values; an X509-SVID has exactly one URI SAN",
        )
    spiffe_id = parse_workload_id(uris[0])
    if spiffe_id.trust_domain not in config.trust_domains:
        raise IdentityError(
            Reason.UNTRUSTED_TRUST_DOMAIN,
            f"forwarded identity's trust domain {quote(spiffe_id.trust_domain)} "
            "is not trusted by the policy",
        )
    leaf, intermediates = _certificates(element)
    if leaf is None:
        if config.require_certificate:
            raise IdentityError(
                Reason.CERTIFICATE_REQUIRED,
                "policy requires the forwarded certificate (Envoy on the trusted proxy: "
                "set_current_client_cert_details: {cert: true})",
            )
        return Identity(spiffe_id, SOURCE_XFCC, certificate_verified=False)
    verifier.verify(leaf, spiffe_id, bundles, now, intermediates)
    return Identity(spiffe_id, SOURCE_XFCC, certificate_verified=True)


# The same few proxies forward the same few clients: decoding is cached by content (the
# results depend on nothing else; failures are not cached). Verification is not: it
# depends on the time and the bundles, and `CertificateVerifier` has its own cache.
@lru_cache(maxsize=256)
def _last_element(header: str) -> XfccElement:
    return parse_xfcc(header)[-1]


@lru_cache(maxsize=256)
def _certificates(element: XfccElement) -> tuple[str | None, tuple[x509.Certificate, ...]]:
    """(URL-encoded PEM leaf or None, intermediates) after the Hash and Chain checks."""
    cert = element.value("cert")
    chain_text = element.value("chain")
    chain = _chain(chain_text) if chain_text is not None else []
    leaf = cert
    if cert is None and chain:
        leaf = chain[0]  # Envoy's Chain starts with the leaf
    if leaf is None:
        return None, ()
    der = _der(leaf, "Cert" if cert is not None else "Chain")
    if cert is not None and chain and _der(chain[0], "Chain") != der:
        raise IdentityError(
            Reason.CERTIFICATE_MISMATCH,
            "x-forwarded-client-cert: Chain does not begin with the Cert certificate",
        )
    digest = element.value("hash")
    if digest is not None:
        if _HEX64.fullmatch(digest) is None:
            raise IdentityError(
                Reason.CERTIFICATE_INVALID,
                f"x-forwarded-client-cert: Hash {quote(digest, 80)} is not a hex sha256",
            )
        if not hmac.compare_digest(digest.lower(), hashlib.sha256(der).hexdigest()):
            raise IdentityError(
                Reason.CERTIFICATE_MISMATCH,
                "x-forwarded-client-cert: Hash is not the sha256 of the forwarded certificate",
            )
    return leaf, tuple(_load(pem) for pem in chain[1:])


def _chain(text: str) -> list[str]:
    """The PEM certificates of a URL-encoded `Chain=` value, each as its own PEM block."""
    decoded = _unquote(text, "Chain")
    blocks: list[str] = []
    position = 0
    while position < len(decoded):
        match = _PEM_CERT.match(decoded, position)
        if match is None:
            raise IdentityError(
                Reason.CERTIFICATE_INVALID,
                "x-forwarded-client-cert: Chain is not a sequence of PEM certificates",
            )
        blocks.append(match.group(0))
        position = match.end()
        if len(blocks) > MAX_CHAIN_DEPTH + 1:
            raise IdentityError(
                Reason.CERTIFICATE_INVALID,
                "x-forwarded-client-cert: Chain holds more than "
                f"{MAX_CHAIN_DEPTH + 1} certificates",
            )
    if not blocks:
        raise IdentityError(Reason.CERTIFICATE_INVALID, "x-forwarded-client-cert: Chain is empty")
    return blocks


def _der(pem: str, field: str) -> bytes:
    """The DER bytes of one URL-encoded PEM certificate, for Hash and Chain comparisons."""
    decoded = _unquote(pem, field)
    match = _PEM_CERT.fullmatch(decoded.strip() + "\n")
    if match is None or decoded.count(_PEM_BEGIN) != 1:
        raise IdentityError(
            Reason.CERTIFICATE_INVALID,
            f"x-forwarded-client-cert: {field} is not exactly one PEM certificate",
        )
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError(
            Reason.CERTIFICATE_INVALID, f"x-forwarded-client-cert: {field} is not valid base64"
        ) from None


def _unquote(text: str, field: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise IdentityError(
            Reason.CERTIFICATE_INVALID, f"x-forwarded-client-cert: {field} is not URL-encoded UTF-8"
        ) from None


def _load(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except ValueError as exc:
        raise IdentityError(
            Reason.CERTIFICATE_INVALID,
            f"x-forwarded-client-cert: a Chain certificate does not parse: {quote(str(exc), 120)}",
        ) from None


# --- the source ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class XfccSettings:
    """`identity.xfcc`."""

    #: `trusted_proxies`: the only direct peers whose XFCC header is believed.
    trusted_proxies: tuple[PrincipalMatcher, ...]

    def trusts(self, peer: Identity) -> bool:
        return any(p.match(peer.spiffe_id) is not None for p in self.trusted_proxies)


def parse_settings(
    fields: Fields, value: Value, path: str, trust_domains: frozenset[str] | None
) -> XfccSettings | None:
    """`identity.xfcc`: `trusted_proxies`, principal patterns in trusted domains."""
    section = fields.mapping(value, path, frozenset({"trusted_proxies"}))
    if section is None:
        return None
    proxies = section.entries.get("trusted_proxies")
    where = f"{path}.trusted_proxies"
    if proxies is None:
        fields.issue(section.line, where, "required")
        return None
    if isinstance(proxies, Seq) and not proxies.items:
        fields.issue(proxies.line, where, "at least one proxy is required")
        return None
    return XfccSettings(compile_principals(fields, proxies, where, trust_domains))


class XfccSource:
    """Implements `IdentitySource`; see the module docstring for when it is present."""

    __slots__ = ()

    def resolve(self, attempt: Attempt, settings: XfccSettings) -> Identity | None:
        """The forwarded identity; None when no header came or it was ignored."""
        header = attempt.view.headers.get(HEADER)
        if header is None:
            return None
        proxy = verified_peer(attempt)
        if proxy is not None:
            check_not_denied(proxy.spiffe_id, attempt.config)
        if proxy is None or not settings.trusts(proxy):
            if not _echoes(header, proxy):
                attempt.note = XFCC_SPOOFING
            return None
        if not proxy.certificate_verified:
            raise IdentityError(
                Reason.CERTIFICATE_REQUIRED,
                f"{proxy.spiffe_id} is a trusted XFCC proxy, but its certificate was not "
                "sent (Envoy: include_peer_certificate: true)",
            )
        attempt.trying(SOURCE_XFCC)
        attempt.proxy = proxy
        return forwarded_identity(
            header, attempt.config, attempt.bundles, attempt.verifier, attempt.now
        )


def _echoes(header: str, peer: Identity | None) -> bool:
    """True when `header` only repeats the peer's own identity (a local SANITIZE_SET)."""
    if peer is None:
        return False
    try:
        elements = parse_xfcc(header)
    except XfccError:
        return False
    return len(elements) == 1 and elements[0].values("uri") == (str(peer.spiffe_id),)


KIND = SourceKind(SOURCE_XFCC, XfccSource, Section("trusted_proxies", parse_settings))
