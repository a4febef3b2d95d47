"""Certificates, XFCC headers and JWT-SVIDs minted for the identity-source tests.

Everything is made here with `cryptography` keys: an XFCC element rendered the way Envoy
writes it, and compact JWS tokens signed with any allowed algorithm (or forged ones).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote as urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authz_server.identity.bundles import TrustBundles
from authz_server.identity.jwt_svid import JwtSvidSettings
from authz_server.identity.model import IdentityConfig
from authz_server.identity.patterns import compile_principal_pattern
from authz_server.identity.xfcc import XfccSettings
from authz_server.tools.devcerts import Authority, mint_ca, mint_svid, pem

NOW = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
ADMIN = "spiffe://example.org/humans/admin"
GATEWAY = "spiffe://example.org/gateway/edge"
PARTNER_APP = "spiffe://partner.org/billing/app"
#: A valid SPIFFE ID that names a trust domain, never a workload.
TRUST_DOMAIN_ID = "spiffe://example.org"
AUDIENCE = "orders"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def ca(trust_domain: str, **kwargs: Any) -> Authority:
    kwargs.setdefault("not_before", NOW - timedelta(days=1))
    kwargs.setdefault("not_after", NOW + timedelta(days=365))
    return mint_ca(trust_domain, **kwargs)


def svid(authority: Authority, spiffe_id: str, **kwargs: Any) -> x509.Certificate:
    kwargs.setdefault("not_before", NOW - HOUR)
    kwargs.setdefault("not_after", NOW + HOUR)
    return mint_svid(authority, spiffe_id, **kwargs)[0]


def url_pem(*certificates: x509.Certificate) -> str:
    """URL-encoded PEM, as Envoy writes `source.certificate`, `Cert=` and `Chain=`."""
    return urlencode(b"".join(pem(c) for c in certificates).decode(), safe="")


def sha256_hex(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def xfcc(
    uri: str | None = FRONTEND,
    *,
    cert: x509.Certificate | None = None,
    chain: tuple[x509.Certificate, ...] = (),
    hash_of: x509.Certificate | None = None,
    subject: str | None = None,
    by: str = GATEWAY,
) -> str:
    """One element in Envoy's order: By, Hash, Cert, Chain, Subject, URI."""
    pairs = [f"By={by}"]
    if hash_of is not None or cert is not None:
        pairs.append(f"Hash={sha256_hex(hash_of or cert)}")  # type: ignore[arg-type]
    if cert is not None:
        pairs.append(f'Cert="{url_pem(cert)}"')
    if chain:
        pairs.append(f'Chain="{url_pem(*chain)}"')
    if subject is not None:
        pairs.append('Subject="' + subject.replace("\\", "\\\\").replace('"', '\\"') + '"')
    if uri is not None:
        pairs.append(f"URI={uri}")
    return ";".join(pairs)


def identity_config(
    *,
    sources: tuple[str, ...] = ("peer",),
    proxies: tuple[str, ...] = (GATEWAY,),
    audiences: tuple[str, ...] = (AUDIENCE,),
    require_certificate: bool = False,
    deny: tuple[str, ...] = (),
) -> IdentityConfig:
    """Built directly, as the loader would: each source's settings under its name."""
    return IdentityConfig(
        frozenset({"example.org", "partner.org"}),
        sources,
        require_certificate,
        tuple(compile_principal_pattern(p) for p in deny),
        {
            "xfcc": XfccSettings(tuple(compile_principal_pattern(p) for p in proxies)),
            "jwt_svid": JwtSvidSettings(frozenset(audiences)),
        },
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value).encode())


_HASHES: Mapping[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}


def sign(alg: str, key: PrivateKey | bytes, signing_input: bytes) -> bytes:
    """A JWS signature over `signing_input` (HS* with `key` as the shared secret)."""
    digest = _HASHES[alg[2:]]
    if alg.startswith("HS"):
        assert isinstance(key, bytes)
        return hmac.new(key, signing_input, digest.name).digest()
    if alg.startswith("ES"):
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(digest)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    assert isinstance(key, rsa.RSAPrivateKey)
    if alg.startswith("PS"):
        return key.sign(
            signing_input, padding.PSS(padding.MGF1(digest), digest.digest_size), digest
        )
    return key.sign(signing_input, padding.PKCS1v15(), digest)


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid JWT-SVID payload for FRONTEND at NOW; `None` values remove a claim."""
    payload: dict[str, Any] = {
        "sub": FRONTEND,
        "aud": [AUDIENCE],
        "exp": int((NOW + timedelta(minutes=5)).timestamp()),
        "iat": int(NOW.timestamp()),
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def jwt(
    key: PrivateKey | bytes,
    *,
    alg: str = "ES256",
    kid: str | None = "ours-es256",
    payload: Mapping[str, Any] | None = None,
    header: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS; `header` entries override (None removes) the defaults."""
    fields: dict[str, Any] = {"alg": alg, "typ": "JWT", "kid": kid}
    fields.update(header or {})
    head = b64json({k: v for k, v in fields.items() if v is not None})
    body = b64json(dict(payload) if payload is not None else claims())
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{b64url(sign(alg, key, signing_input))}"


@dataclass
class Keys:
    """JWT-SVID signing keys: ours by kid, the partner's, and the bundles holding them."""

    ours: dict[str, PrivateKey] = field(default_factory=dict)
    partner: dict[str, PrivateKey] = field(default_factory=dict)

    def bundles(self, x509_authorities: Mapping[str, tuple[x509.Certificate, ...]]) -> TrustBundles:
        return TrustBundles(
            x509_authorities,
            jwt_authorities={
                "example.org": {kid: k.public_key() for kid, k in self.ours.items()},
                "partner.org": {kid: k.public_key() for kid, k in self.partner.items()},
            },
        )


def make_keys() -> Keys:
    return Keys(
        ours={
            "ours-es256": ec.generate_private_key(ec.SECP256R1()),
            "ours-es384": ec.generate_private_key(ec.SECP384R1()),
            "ours-rsa": rsa.generate_private_key(65537, 2048),
            "shared": ec.generate_private_key(ec.SECP256R1()),
            "weak-rsa": rsa.generate_private_key(65537, 1024),
        },
        partner={
            "partner-es256": ec.generate_private_key(ec.SECP256R1()),
            "shared": ec.generate_private_key(ec.SECP256R1()),
        },
    )


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


@dataclass
class World:
    """Our CA with an intermediate, the partner's CA, a stranger CA claiming our domain."""

    ours: Authority = field(default_factory=lambda: ca("example.org"))
    partner: Authority = field(default_factory=lambda: ca("partner.org"))
    stranger: Authority = field(default_factory=lambda: ca("example.org", name="stranger"))
    keys: Keys = field(default_factory=make_keys)

    def __post_init__(self) -> None:
        self.intermediate = ca("example.org", issuer=self.ours, name="intermediate")
        self.bundles = self.keys.bundles(
            {"example.org": (self.ours.certificate,), "partner.org": (self.partner.certificate,)}
        )
