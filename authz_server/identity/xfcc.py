"""The `x-forwarded-client-cert` header (source `xfcc`, docs/concepts/identity.md#xfcc): a strict
parser, and the verification of the one element a trusted proxy wrote.

Grammar (Envoy's; keys case-insensitive, values case-sensitive):

    header   = element *("," element)
    element  = pair *(";" pair)
    pair     = key "=" value
    key      = By / Hash / Cert / Chain / Subject / URI / DNS
    value    = DQUOTE *(char / "\\" char) DQUOTE      ; `\\"` is a quote, `\\\\` a backslash
             / *(char except , ; = " \\ space)        ; bare, possibly empty (`URI=`)

Anything else (unknown key, empty element, stray quote, whitespace, a control character,
Hash/Cert/Chain/Subject twice in one element) rejects the whole header with `XfccError`;
the parser raises nothing else, on any input. A `;URI=` inside a quoted value is part of
that value, never a second pair.

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
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.model import Identity, IdentityConfig
from authz_server.identity.spiffe_id import parse_workload_id
from authz_server.identity.x509 import MAX_CHAIN_DEPTH, CertificateVerifier

__all__ = [
    "HEADER",
    "KEYS",
    "SOURCE_XFCC",
    "XfccElement",
    "XfccError",
    "forwarded_identity",
    "parse_xfcc",
]

HEADER = "x-forwarded-client-cert"
SOURCE_XFCC = "xfcc"
KEYS = frozenset({"by", "hash", "cert", "chain", "subject", "uri", "dns"})
#: Keys Envoy writes at most once per element; `By`, `URI` and `DNS` repeat per SAN.
_SINGLE = frozenset({"hash", "cert", "chain", "subject"})

#: Envoy's default limit on all request headers together is 60 KiB.
MAX_HEADER_CHARS = 64 * 1024
MAX_ELEMENTS = 32
MAX_PAIRS = 64

_PAIR = re.compile(
    r"([A-Za-z]+)="
    r'(?:"((?>[^"\\\x00-\x1f\x7f]++|\\[^\x00-\x1f\x7f])*+)"'  # quoted, no backtracking
    r'|([^,;="\\\s\x00-\x1f\x7f]*))'  # bare
)
_UNESCAPE = re.compile(r'\\(["\\])')
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----\s*"
)
_PEM_BEGIN = "-----BEGIN "


class XfccError(IdentityError):
    """The header does not follow the grammar above (`invalid_spiffe_id`)."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.INVALID_SPIFFE_ID, f"x-forwarded-client-cert: {message}")


@dataclass(frozen=True, slots=True)
class XfccElement:
    """One element: its (lower-case key, decoded value) pairs in header order."""

    pairs: tuple[tuple[str, str], ...]

    def values(self, key: str) -> tuple[str, ...]:
        return tuple(value for k, value in self.pairs if k == key)

    def value(self, key: str) -> str | None:
        """The value of a key that appears at most once (the parser checked), or None."""
        for k, value in self.pairs:
            if k == key:
                return value
        return None


def parse_xfcc(header: str) -> tuple[XfccElement, ...]:
    """Every element of `header`, in order; `XfccError` on anything outside the grammar."""
    if len(header) > MAX_HEADER_CHARS:
        raise XfccError(f"longer than {MAX_HEADER_CHARS} characters")
    elements: list[XfccElement] = []
    pairs: list[tuple[str, str]] = []
    position, end = 0, len(header)
    while True:
        match = _PAIR.match(header, position)
        if match is None:
            raise XfccError(
                f"expected KEY=VALUE at character {position}: {_near(header, position)}"
            )
        key = match.group(1).lower()
        if key not in KEYS:
            raise XfccError(f"unknown key {quote(match.group(1), 20)} at character {position}")
        quoted = match.group(2)
        value = _UNESCAPE.sub(r"\1", quoted) if quoted is not None else match.group(3)
        if key in _SINGLE and any(k == key for k, _ in pairs):
            raise XfccError(f"{key!r} appears twice in element {len(elements) + 1}")
        pairs.append((key, value))
        if len(pairs) > MAX_PAIRS:
            raise XfccError(f"more than {MAX_PAIRS} pairs in element {len(elements) + 1}")
        position = match.end()
        if position == end:
            elements.append(XfccElement(tuple(pairs)))
            return tuple(elements)
        separator = header[position]
        if separator == ",":
            elements.append(XfccElement(tuple(pairs)))
            pairs = []
            if len(elements) >= MAX_ELEMENTS:
                raise XfccError(f"more than {MAX_ELEMENTS} elements")
        elif separator != ";":
            raise XfccError(
                f"expected ';' or ',' at character {position}: {_near(header, position)}"
            )
        position += 1


def _near(text: str, position: int) -> str:
    return quote(text[position : position + 20], 20) if position < len(text) else "end of header"


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
