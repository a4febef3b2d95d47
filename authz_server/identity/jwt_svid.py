"""Identity source `jwt_svid`: a JWT-SVID bearer token, verified against the JWT bundle
of the trust domain that its own `sub` names.

    authorization: Bearer <header>.<payload>.<signature>       (compact JWS, base64url)

    identity:
      sources: [jwt_svid, peer]
      jwt_svid: {audiences: [orders]}                          # required when listed

The source is present when an `authorization: Bearer …` header came; another scheme
counts as absent.

The checks, in order; each fails closed with an identity reason
(docs/concepts/identity.md#verification) (a JWT-SVID that fails verification is
`certificate_invalid`, as an X509-SVID would be):

    shape      three canonical base64url parts without padding, at most 8 KiB in all;
               header and payload UTF-8 JSON objects without duplicate keys
    header     `alg` in ALGORITHMS (never `none` or HS*: a bundle's public key is no
               shared secret), `kid` required, `typ` absent or JWT/JOSE, no `crit`
    sub        a strict SPIFFE ID with a path, as the JWT-SVID standard requires
               (invalid_spiffe_id), of a trusted domain (untrusted_trust_domain)
    key        bundles.jwt_authorities[trust domain of sub][kid]: another domain's key
               is never tried; its type must fit `alg` (RSA of 2048 bits or more, or the
               curve `alg` names)
    signature  verified with `cryptography`
    claims     `exp` required and now ≤ exp + 60 s; `nbf`, when present, ≤ now + 60 s;
               `aud` (a string or a list) names one of identity.jwt_svid.audiences

`cryptography` rather than a JWT library: the key can only be chosen after reading the
unverified `sub` and `kid`, and the JSON must be parsed strictly (PyJWT, for one, lets a
duplicate claim's last value win, a parser differential with the backend). The token is
never logged nor quoted in an error. A verified signature is cached by (sha256 of the
token, bundle generation); the trust domain and the claims are checked on every call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError, quote
from authz_server.core.yaml_source import Fields, Value
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.model import Identity, IdentityConfig
from authz_server.identity.source import Attempt, Section, SourceKind
from authz_server.identity.spiffe_id import SpiffeId, parse_workload_id

__all__ = [
    "ALGORITHMS",
    "HEADER",
    "KIND",
    "LEEWAY_S",
    "SOURCE_JWT_SVID",
    "JwtSvidSettings",
    "JwtSvidSource",
    "JwtSvidVerifier",
    "bearer_token",
    "parse_settings",
]

HEADER = "authorization"
SOURCE_JWT_SVID = "jwt_svid"
LEEWAY_S = 60
MAX_TOKEN_CHARS = 8 * 1024
MIN_RSA_BITS = 2048
_MAX_AUDIENCE_CHARS = 512
_TYPES = ("JWT", "JOSE")
_PART = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class _Algorithm:
    hash: hashes.HashAlgorithm
    family: str  # "RS", "PS" or "ES"
    curve: type[ec.EllipticCurve] | None = None
    #: Bytes of r and of s in an ES signature.
    coordinate: int = 0


ALGORITHMS: Mapping[str, _Algorithm] = {
    "RS256": _Algorithm(hashes.SHA256(), "RS"),
    "RS384": _Algorithm(hashes.SHA384(), "RS"),
    "RS512": _Algorithm(hashes.SHA512(), "RS"),
    "PS256": _Algorithm(hashes.SHA256(), "PS"),
    "PS384": _Algorithm(hashes.SHA384(), "PS"),
    "PS512": _Algorithm(hashes.SHA512(), "PS"),
    "ES256": _Algorithm(hashes.SHA256(), "ES", ec.SECP256R1, 32),
    "ES384": _Algorithm(hashes.SHA384(), "ES", ec.SECP384R1, 48),
    "ES512": _Algorithm(hashes.SHA512(), "ES", ec.SECP521R1, 66),
}


def _invalid(message: str) -> IdentityError:
    return IdentityError(Reason.CERTIFICATE_INVALID, f"JWT-SVID: {message}")


@dataclass(frozen=True, slots=True)
class JwtSvidSettings:
    """`identity.jwt_svid`."""

    #: `audiences`: a JWT-SVID's `aud` must name one of them.
    audiences: frozenset[str]


def parse_settings(
    fields: Fields, value: Value, path: str, trust_domains: frozenset[str] | None
) -> JwtSvidSettings | None:
    """`identity.jwt_svid`: `audiences`, a non-empty list of strings."""
    section = fields.mapping(value, path, frozenset({"audiences"}))
    if section is None:
        return None
    audiences = section.entries.get("audiences")
    where = f"{path}.audiences"
    if audiences is None:
        fields.issue(section.line, where, "required")
        return None
    listed = fields.compiled_list(
        audiences, where, _audience, empty="at least one audience is required"
    )
    if listed is None:
        return None
    return JwtSvidSettings(frozenset(audience for _, audience in listed))


def _audience(text: str) -> str:
    if not text or text != text.strip() or len(text) > _MAX_AUDIENCE_CHARS:
        raise ValueError(
            f"audience {quote(text)}: expected a non-empty string without surrounding "
            f"whitespace, at most {_MAX_AUDIENCE_CHARS} characters"
        )
    return text


def bearer_token(value: str | None) -> str | None:
    """The token of an `authorization: Bearer …` header; None when no bearer token was sent.

    A Bearer header that is not one plain token (two tokens, a comma from repeated
    headers) is sent but malformed: `certificate_invalid`, never "absent".
    """
    if value is None:
        return None
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip(" ")
    if not token or len(token) > MAX_TOKEN_CHARS or any(c in token for c in " \t,"):
        raise _invalid("the Bearer credential is not one compact JWS")
    return token


@dataclass(frozen=True, slots=True)
class _Claims:
    """What a verified token says; the token itself is not kept."""

    spiffe_id: SpiffeId
    expires: float
    not_before: float | None
    audiences: frozenset[str]


class JwtSvidVerifier:
    """Verifies JWT-SVIDs; caches verified signatures (bounded LRU, one asyncio thread)."""

    __slots__ = ("_cache", "_maxsize")

    def __init__(self, cache_size: int = 1024) -> None:
        self._cache: OrderedDict[tuple[bytes, int], _Claims] = OrderedDict()
        self._maxsize = cache_size

    def verify(
        self,
        token: str,
        config: IdentityConfig,
        settings: JwtSvidSettings,
        bundles: TrustBundles,
        now: datetime,
    ) -> Identity:
        """The identity `token` proves, or `IdentityError` with an identity reason
        (docs/concepts/identity.md#verification)."""
        key = (hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest(), bundles.generation)
        claims = self._cache.get(key)
        if claims is not None:
            self._cache.move_to_end(key)
            _check_trust_domain(claims.spiffe_id, config)
        else:
            claims = _verify_signature(token, config, bundles)
            if self._maxsize:
                self._cache[key] = claims
                if len(self._cache) > self._maxsize:
                    self._cache.popitem(last=False)
        _check_claims(claims, settings, now)
        return Identity(claims.spiffe_id, SOURCE_JWT_SVID, certificate_verified=False)


def _verify_signature(token: str, config: IdentityConfig, bundles: TrustBundles) -> _Claims:
    parts = token.split(".")
    if len(parts) != 3:
        raise _invalid(f"a compact JWS has 3 parts, this token has {len(parts)}")
    header = _json_object(_b64(parts[0], "header"), "header")
    alg = header.get("alg")
    algorithm = ALGORITHMS.get(alg) if isinstance(alg, str) else None
    if algorithm is None:
        allowed = ", ".join(ALGORITHMS)
        raise _invalid(f"alg {quote(str(alg), 20)} is not allowed (allowed: {allowed})")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _invalid("the header has no kid")
    if "typ" in header and header["typ"] not in _TYPES:
        raise _invalid(f"typ {quote(str(header['typ']), 20)} is not JWT or JOSE")
    if "crit" in header:
        raise _invalid("the header has crit extensions, which this server does not implement")
    claims = _claims(_json_object(_b64(parts[1], "payload"), "payload"))
    signature = _b64(parts[2], "signature")
    _check_trust_domain(claims.spiffe_id, config)
    trust_domain = claims.spiffe_id.trust_domain
    authorities = bundles.jwt_authorities.get(trust_domain)
    if not authorities:
        raise _invalid(f"trust domain {quote(trust_domain)} has no JWT-SVID keys")
    public_key = authorities.get(kid)
    if public_key is None:
        raise _invalid(f"kid {quote(kid, 60)} is not a JWT-SVID key of {quote(trust_domain)}")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    _check(algorithm, str(alg), public_key, signature, signing_input)
    return claims


def _b64(part: str, what: str) -> bytes:
    if _PART.fullmatch(part) is None or len(part) % 4 == 1:
        raise _invalid(f"the {what} is not base64url without padding")
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise _invalid(f"the {what} is not base64url") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=") != part.encode("ascii"):
        raise _invalid(f"the {what} is not canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _invalid(f"the {what} is not a UTF-8 JSON object: {quote(str(exc), 80)}") from None
    if not isinstance(value, dict):
        raise _invalid(f"the {what} is not a JSON object")
    return value


def _number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None and name not in payload:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"claim {name!r} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):  # 1e999 parses as infinity: a token that never expires
        raise _invalid(f"claim {name!r} is not a finite number")
    return number


def _claims(payload: Mapping[str, Any]) -> _Claims:
    sub = payload.get("sub")
    if not isinstance(sub, str):
        raise IdentityError(Reason.INVALID_SPIFFE_ID, "JWT-SVID: claim 'sub' is missing")
    spiffe_id = parse_workload_id(sub)
    expires = _number(payload, "exp")
    if expires is None:
        raise _invalid("claim 'exp' is required")
    aud = payload.get("aud")
    if isinstance(aud, str):
        audiences = frozenset({aud})
    elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        audiences = frozenset(aud)
    else:
        raise _invalid("claim 'aud' must be a string or a non-empty list of strings")
    return _Claims(spiffe_id, expires, _number(payload, "nbf"), audiences)


def _check_trust_domain(spiffe_id: SpiffeId, config: IdentityConfig) -> None:
    if spiffe_id.trust_domain not in config.trust_domains:
        raise IdentityError(
            Reason.UNTRUSTED_TRUST_DOMAIN,
            f"JWT-SVID sub's trust domain {quote(spiffe_id.trust_domain)} "
            "is not trusted by the policy",
        )


def _check_claims(claims: _Claims, settings: JwtSvidSettings, now: datetime) -> None:
    at = now.timestamp()
    if at > claims.expires + LEEWAY_S:
        raise _invalid(f"expired at {_when(claims.expires)}")
    if claims.not_before is not None and claims.not_before > at + LEEWAY_S:
        raise _invalid(f"not valid before {_when(claims.not_before)}")
    if not claims.audiences & settings.audiences:
        shown = ", ".join(quote(a, 60) for a in sorted(claims.audiences)[:5])
        raise _invalid(f"aud {shown} names none of identity.jwt_svid.audiences")


def _when(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{timestamp:.0f} (seconds since the epoch)"


def _check(
    algorithm: _Algorithm, alg: str, key: object, signature: bytes, signing_input: bytes
) -> None:
    try:
        if algorithm.family == "ES":
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                key.curve, algorithm.curve or ()
            ):
                raise _invalid(f"the key for this kid does not fit alg {alg}")
            size = algorithm.coordinate
            if len(signature) != 2 * size:
                raise _invalid("bad signature")
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
            key.verify(der, signing_input, ec.ECDSA(algorithm.hash))
            return
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
            raise _invalid(f"the key for this kid does not fit alg {alg}")
        scheme: padding.AsymmetricPadding
        if algorithm.family == "PS":
            scheme = padding.PSS(padding.MGF1(algorithm.hash), algorithm.hash.digest_size)
        else:
            scheme = padding.PKCS1v15()
        key.verify(signature, signing_input, scheme, algorithm.hash)
    except InvalidSignature:
        raise _invalid("bad signature") from None


class JwtSvidSource:
    """Implements `IdentitySource`; keeps its own cache of verified signatures."""

    __slots__ = ("_verifier",)

    def __init__(self) -> None:
        self._verifier = JwtSvidVerifier()

    def resolve(self, attempt: Attempt, settings: JwtSvidSettings) -> Identity | None:
        attempt.trying(SOURCE_JWT_SVID)
        token = bearer_token(attempt.view.headers.get(HEADER))
        if token is None:
            return None
        return self._verifier.verify(token, attempt.config, settings, attempt.bundles, attempt.now)


KIND = SourceKind(SOURCE_JWT_SVID, JwtSvidSource, Section("audiences", parse_settings))
