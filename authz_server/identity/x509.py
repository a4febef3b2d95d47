"""X509-SVID verification of the peer certificate Envoy forwards
(docs/concepts/identity.md#verification).

Envoy reports `source.principal` from the first URI SAN of a certificate it accepted, and
it accepts certificates that are not valid X509-SVIDs (two URI SANs, say), so the
principal is never trusted as is: the leaf is parsed again, held to the X509-SVID rules,
compared with the principal, and its chain verified against the trust store of **its own
trust domain** only, at the moment of the request.

The steps, each failing closed with `certificate_invalid` (or `certificate_mismatch`):

    decode   URL-decoded PEM, exactly one certificate
    leaf     exactly one URI SAN, a strict SPIFFE ID with a path (a bare trust domain
             names no workload); not a CA; keyUsage present, critical, digitalSignature
             without keyCertSign/cRLSign; extendedKeyUsage, when present, with both
             serverAuth and clientAuth; valid now
    match    URI SAN == principal                          → certificate_mismatch
    chain    cryptography's path validation against bundles.store_for(SAN trust domain)

Successful results are cached (see `CertificateVerifier`); failures never are.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    VerificationError,
)

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError, quote
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.spiffe_id import SpiffeId, parse_workload_id

__all__ = ["CacheInfo", "CertificateVerifier", "check_svid_leaf", "verify_svid"]

#: Intermediate CAs allowed between the leaf and a trust anchor (SPIRE nests a few).
MAX_CHAIN_DEPTH = 5
_PEM_BEGIN = b"-----BEGIN "

# cryptography's WebPKI end-entity defaults already enforce what an SVID must satisfy
# (no cA, no keyCertSign, clientAuth when an EKU is present, SAN present) but also demand
# an authorityKeyIdentifier, which the X509-SVID standard does not: relax just that one.
# The CA defaults stay: a CA with URI name constraints is rejected ("unsupported name
# constraint") rather than having its constraints ignored.
_EE_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None
)
_POLICY = (
    PolicyBuilder()
    .max_chain_depth(MAX_CHAIN_DEPTH)
    .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_EE_POLICY)
)

_CacheKey = tuple[str | bytes, int, SpiffeId]
#: A certificate field up to this long, without intermediates, is its own cache key:
#: hashing the string costs a fifth of sha256 over it. At most 4096 entries of 4096
#: characters (16 MiB) of keys; a P-256 leaf as Envoy sends it is ~850.
_MAX_KEY_CHARS = 4096
_E = TypeVar("_E", bound=x509.ExtensionType)
#: When an SVID carries extendedKeyUsage, both must be set (a workload is client and server).
_REQUIRED_EKU = (
    (ExtendedKeyUsageOID.SERVER_AUTH, "id-kp-serverAuth"),
    (ExtendedKeyUsageOID.CLIENT_AUTH, "id-kp-clientAuth"),
)


def _invalid(message: str) -> IdentityError:
    return IdentityError(Reason.CERTIFICATE_INVALID, message)


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """Counters of a `CertificateVerifier` cache, as `functools.lru_cache` reports them."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


class CertificateVerifier:
    """Verifies forwarded peer certificates, caching successes per chain and bundle set.

    The cache key is (the certificate field as received, or a sha256 over it and the
    intermediates' DER, bundle generation, principal); the value is the chain's validity
    window. A hit outside the window is evicted and verified again, so nothing is served
    past expiry, and a new bundle set (new generation) never sees an old result. Meant
    for one asyncio thread: no locking.
    """

    __slots__ = ("_cache", "_maxsize", "hits", "misses")

    def __init__(self, cache_size: int = 4096) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._cache: OrderedDict[_CacheKey, tuple[datetime, datetime]] = OrderedDict()
        self._maxsize = cache_size
        self.hits = 0
        self.misses = 0

    def verify(
        self,
        certificate: str,
        principal: SpiffeId,
        bundles: TrustBundles,
        now: datetime,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> tuple[datetime, datetime]:
        """Raise `IdentityError` unless `certificate` is a valid X509-SVID for `principal`;
        return the chain's validity window (not before, not after).

        `certificate` is the URL-encoded PEM leaf from `source.certificate`; `now` must be
        timezone-aware.
        """
        key = (_fingerprint(certificate, intermediates), bundles.generation, principal)
        window = self._cache.get(key)
        if window is not None:
            if window[0] <= now < window[1]:
                self._cache.move_to_end(key)
                self.hits += 1
                return window
            del self._cache[key]  # outside its window: verify from scratch
        self.misses += 1
        window = verify_svid(certificate, principal, bundles, now, intermediates)
        if self._maxsize:
            self._cache[key] = window
            if len(self._cache) > self._maxsize:
                self._cache.popitem(last=False)
        return window

    @property
    def caches(self) -> bool:
        """Whether successes are cached (a cache size of 0 verifies every time)."""
        return self._maxsize > 0

    def cache_info(self) -> CacheInfo:
        """Hits, misses and sizes of the verification cache."""
        return CacheInfo(self.hits, self.misses, self._maxsize, len(self._cache))


def _fingerprint(certificate: str, intermediates: Sequence[x509.Certificate]) -> str | bytes:
    # The field as received, not decoded: the same bytes always decode the same way, and
    # the hit path then skips the decoding. A str key never equals a bytes digest.
    if not intermediates and len(certificate) <= _MAX_KEY_CHARS:
        return certificate
    digest = hashlib.sha256(certificate.encode("utf-8", "surrogatepass"))
    for intermediate in intermediates:
        der = intermediate.public_bytes(Encoding.DER)
        digest.update(len(der).to_bytes(4, "big"))
        digest.update(der)
    return digest.digest()


def verify_svid(
    certificate: str,
    principal: SpiffeId,
    bundles: TrustBundles,
    now: datetime,
    intermediates: Sequence[x509.Certificate] = (),
) -> tuple[datetime, datetime]:
    """Verify without caching; return the window (max not_before, min not_after) of the chain."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    leaf = _decode(certificate)
    svid_id = check_svid_leaf(leaf, now)
    if svid_id != principal:
        raise IdentityError(
            Reason.CERTIFICATE_MISMATCH,
            f"certificate URI SAN {quote(str(svid_id))} does not match "
            f"principal {quote(str(principal))}",
        )
    trust_domain = svid_id.trust_domain
    store = bundles.store_for(trust_domain)
    if store is None:
        why = "is distrusted (empty bundle)" if trust_domain in bundles else "has no trust bundle"
        raise _invalid(f"trust domain {quote(trust_domain)} {why}")
    verifier = _POLICY.store(store).time(now).build_client_verifier()
    try:
        verified = verifier.verify(leaf, list(intermediates))
    except VerificationError as exc:
        raise _invalid(
            f"certificate for {quote(str(svid_id))} does not chain to the trust bundle of "
            f"{quote(trust_domain)}: {quote(str(exc), 200)}"
        ) from None
    chain = verified.chain
    return (
        max(c.not_valid_before_utc for c in chain),
        min(c.not_valid_after_utc for c in chain),
    )


def _decode(certificate: str) -> x509.Certificate:
    data = unquote(certificate).encode("utf-8", "replace")
    count = data.count(_PEM_BEGIN)
    if count != 1:
        raise _invalid(
            f"expected exactly one PEM certificate in the peer certificate, found {count}"
        )
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise _invalid(f"peer certificate does not parse: {quote(str(exc), 200)}") from None


def check_svid_leaf(leaf: x509.Certificate, now: datetime) -> SpiffeId:
    """Hold `leaf` to the X509-SVID leaf rules at `now`; return the SPIFFE ID of its URI SAN."""
    try:
        extensions = leaf.extensions
    except ValueError as exc:  # duplicate or malformed extensions
        raise _invalid(f"certificate extensions do not parse: {quote(str(exc), 200)}") from None

    san = _find(extensions, x509.SubjectAlternativeName)
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier) if san else []
    if len(uris) != 1:
        shown = ", ".join(quote(u, 80) for u in uris) or "none"
        raise _invalid(f"an X509-SVID has exactly one URI SAN, this one has {len(uris)}: {shown}")
    try:
        svid_id = parse_workload_id(uris[0])
    except IdentityError as exc:
        raise _invalid(f"URI SAN refused: {exc}") from None
    shown_id = quote(str(svid_id))

    constraints = _find(extensions, x509.BasicConstraints)
    if constraints is not None and constraints.value.ca:
        raise _invalid(f"certificate for {shown_id} is a CA (basicConstraints cA is true)")
    usage = _find(extensions, x509.KeyUsage)
    if usage is None:
        raise _invalid(f"certificate for {shown_id} has no keyUsage extension")
    if not usage.critical:
        raise _invalid(f"keyUsage of {shown_id} is not marked critical")
    if not usage.value.digital_signature:
        raise _invalid(f"keyUsage of {shown_id} lacks digitalSignature")
    if usage.value.key_cert_sign or usage.value.crl_sign:
        raise _invalid(f"keyUsage of {shown_id} asserts keyCertSign or cRLSign")
    eku = _find(extensions, x509.ExtendedKeyUsage)
    if eku is not None:  # absent is allowed: the usage is then unrestricted
        missing = [name for oid, name in _REQUIRED_EKU if oid not in eku.value]
        if missing:
            raise _invalid(f"extendedKeyUsage of {shown_id} lacks {' and '.join(missing)}")

    if now < leaf.not_valid_before_utc:
        raise _invalid(
            f"certificate for {shown_id} is not valid before "
            f"{leaf.not_valid_before_utc.isoformat()}"
        )
    if now > leaf.not_valid_after_utc:
        raise _invalid(
            f"certificate for {shown_id} expired at {leaf.not_valid_after_utc.isoformat()}"
        )
    return svid_id


def _find(extensions: x509.Extensions, kind: type[_E]) -> x509.Extension[_E] | None:
    try:
        return extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None
