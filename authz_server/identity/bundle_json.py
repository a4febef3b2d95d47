"""SPIFFE bundle JSON (a JWK Set, SPIFFE Trust Domain and Bundle §4) for one trust domain.

    {"spiffe_sequence": 3, "keys": [
        {"use": "x509-svid", "kty": "EC", "crv": "P-256", "x": …, "y": …, "x5c": ["<DER>"]},
        {"use": "jwt-svid", "kid": "k1", "kty": "EC", "crv": "P-256", "x": …, "y": …}]}

- `x509-svid` keys carry exactly one CA certificate in `x5c`; when the JWK also states the
  key parameters they must be the certificate's key (a document whose two halves disagree
  has been tampered with or is broken: reject it rather than pick one).
- `jwt-svid` keys need a unique `kid`; they are kept for the JWT-SVID verifier.
- Keys with an unknown `use` or `kty` are ignored, as the standard requires, and listed in
  `ParsedBundle.ignored` so that the loader can log them: an ignored key grants nothing.
- `"keys": []` is a valid bundle that trusts nothing: it distrusts the domain.

Any other problem rejects the whole document (`ConfigError` quoting the key index), so a
reload keeps the last good bundle instead of trusting half a file.

`parse_jwt_bundle` reads what the Workload API's `FetchJWTBundles` streams: a standard
RFC 7517 JWK Set per trust domain, whose keys are all JWT authorities. SPIRE omits the
SPIFFE `use` member there, so a key without `use` counts as `jwt-svid`; a key that names
another use is ignored, and every other rule above applies unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authz_server.core.errors import ConfigError, quote

__all__ = [
    "JwtAuthority",
    "ParsedBundle",
    "parse_bundle_json",
    "parse_jwt_bundle",
    "public_key_from_jwk",
]

USE_X509 = "x509-svid"
USE_JWT = "jwt-svid"

JwtAuthority = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_CURVES: Mapping[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_KNOWN_KTY = frozenset({"EC", "RSA", "OKP"})


class _Unsupported(Exception):
    """A key of a type this server does not know: ignored, never trusted."""


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    """The trusted keys of one SPIFFE bundle document."""

    x509_authorities: tuple[x509.Certificate, ...]
    jwt_authorities: Mapping[str, JwtAuthority]
    sequence: int | None = None
    #: "key #3: unknown use 'x509_svid'" for every JWK skipped by the rules above.
    ignored: tuple[str, ...] = field(default=())


def parse_bundle_json(data: bytes, where: str) -> ParsedBundle:
    """Parse a SPIFFE bundle document; `ConfigError` (prefixed with `where`) when invalid."""
    return _parse(data, where, jwt_only=False)


def parse_jwt_bundle(data: bytes, where: str) -> ParsedBundle:
    """Parse a Workload API JWT bundle (a JWK Set of JWT authorities); `ConfigError` when
    invalid. Empty bytes, like `"keys": []`, trust nothing: the domain is distrusted."""
    if not data:
        return ParsedBundle((), MappingProxyType({}))
    return _parse(data, where, jwt_only=True)


def _parse(data: bytes, where: str, *, jwt_only: bool) -> ParsedBundle:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: a SPIFFE bundle is a JSON object with a 'keys' array")
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ConfigError(f"{where}: 'keys' must be present and be an array")
    sequence = document.get("spiffe_sequence")
    if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool)):
        raise ConfigError(f"{where}: 'spiffe_sequence' must be an integer")

    authorities: list[x509.Certificate] = []
    jwt: dict[str, JwtAuthority] = {}
    ignored: list[str] = []
    for index, key in enumerate(keys, start=1):
        at = f"{where}: key #{index}"
        if not isinstance(key, dict):
            raise ConfigError(f"{at}: must be a JSON object")
        use = key.get("use", USE_JWT) if jwt_only else key.get("use")
        if jwt_only and use != USE_JWT:
            ignored.append(f"key #{index}: use {quote(str(use))} in a JWT bundle")
            continue
        if use not in (USE_X509, USE_JWT):
            ignored.append(f"key #{index}: unknown use {quote(str(use))}")
            continue
        try:
            if use == USE_X509:
                authorities.append(_x509_authority(key, at))
            else:
                kid, public_key = _jwt_authority(key, at)
                if kid in jwt:
                    raise ConfigError(f"{at}: duplicate kid {quote(kid)}")
                jwt[kid] = public_key
        except _Unsupported as exc:
            ignored.append(f"key #{index}: {exc}")
    return ParsedBundle(tuple(authorities), MappingProxyType(jwt), sequence, tuple(ignored))


def _x509_authority(key: Mapping[str, Any], at: str) -> x509.Certificate:
    chain = key.get("x5c")
    if not isinstance(chain, list) or len(chain) != 1 or not isinstance(chain[0], str):
        raise ConfigError(f"{at}: an x509-svid key has 'x5c' with exactly one certificate")
    try:
        der = base64.b64decode(chain[0], validate=True)
        certificate = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{at}: 'x5c' is not a base64 DER certificate: {exc}") from None
    problem = not_a_ca(certificate)
    if problem:
        raise ConfigError(f"{at}: certificate is not a CA: {problem}")
    if "kty" in key:
        try:
            stated = public_key_from_jwk(key, at)
        except _Unsupported:
            stated = None
        if stated is not None and _spki(stated) != _spki(certificate.public_key()):
            raise ConfigError(f"{at}: the JWK key parameters are not the x5c certificate's key")
    return certificate


def _jwt_authority(key: Mapping[str, Any], at: str) -> tuple[str, JwtAuthority]:
    kid = key.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ConfigError(f"{at}: a jwt-svid key needs a non-empty 'kid'")
    return kid, public_key_from_jwk(key, at)


def public_key_from_jwk(key: Mapping[str, Any], at: str) -> JwtAuthority:
    """The public key a JWK describes (EC P-256/384/521, RSA, Ed25519)."""
    kty = key.get("kty")
    if kty not in _KNOWN_KTY:
        raise _Unsupported(f"unknown kty {quote(str(kty))}")
    if "d" in key:
        raise ConfigError(f"{at}: contains a private key ('d'); a bundle holds public keys only")
    try:
        if kty == "EC":
            curve = _CURVES.get(str(key.get("crv")))
            if curve is None:
                raise _Unsupported(f"unknown EC curve {quote(str(key.get('crv')))}")
            numbers = ec.EllipticCurvePublicNumbers(_uint(key, "x", at), _uint(key, "y", at), curve)
            return numbers.public_key()
        if kty == "RSA":
            return rsa.RSAPublicNumbers(_uint(key, "e", at), _uint(key, "n", at)).public_key()
        if key.get("crv") != "Ed25519":
            raise _Unsupported(f"unknown OKP curve {quote(str(key.get('crv')))}")
        return ed25519.Ed25519PublicKey.from_public_bytes(_bytes(key, "x", at))
    except ValueError as exc:  # a point not on the curve, a bad key size, …
        raise ConfigError(f"{at}: invalid {kty} key: {exc}") from None


def _bytes(key: Mapping[str, Any], name: str, at: str) -> bytes:
    value = key.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{at}: missing {name!r}")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ConfigError(f"{at}: {name!r} is not base64url") from None


def _uint(key: Mapping[str, Any], name: str, at: str) -> int:
    return int.from_bytes(_bytes(key, name, at), "big")


def _spki(public_key: object) -> bytes:
    encode = getattr(public_key, "public_bytes")  # noqa: B009 - any key type
    data: bytes = encode(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return data


def not_a_ca(certificate: x509.Certificate) -> str | None:
    """Why `certificate` cannot be a trust anchor, or None."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return "no basicConstraints extension"
    except ValueError as exc:  # duplicate or malformed extensions
        return f"unreadable extensions: {exc}"
    if not constraints.value.ca:
        return "basicConstraints cA is false"
    return None
