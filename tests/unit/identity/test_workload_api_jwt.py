"""Workload API JWT bundles: standard JWK Sets per trust domain, parsed strictly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authz_server.core.errors import ConfigError
from authz_server.identity.bundle_json import parse_jwt_bundle
from authz_server.identity.workload_api_jwt import jwt_bundles_from_response
from tests.unit.identity.test_bundle_json import ec_jwk, rsa_jwk, x509_key
from tests.workload_api_server import jwk

KEY = ec.generate_private_key(ec.SECP256R1()).public_key()


def _set(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def _without_use(key: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in key.items() if k != "use"}


@pytest.mark.parametrize(
    ("data", "kids", "ignored"),
    [
        pytest.param(_set(jwk("k1", KEY)), {"k1"}, [], id="spire-style-no-use"),
        pytest.param(_set(ec_jwk("k1"), _without_use(rsa_jwk("r1"))), {"k1", "r1"}, [],
                     id="with-and-without-use"),
        pytest.param(_set(x509_key(), ec_jwk("k1")), {"k1"},
                     ["key #1: use 'x509-svid' in a JWT bundle"], id="x509-key-ignored"),
        pytest.param(_set({**jwk("o", KEY), "kty": "oct"}), set(), ["key #1: unknown kty 'oct'"],
                     id="symmetric-key-ignored"),
        pytest.param(_set(), set(), [], id="empty-set"),
        pytest.param(b"", set(), [], id="empty-bytes"),
    ],
)  # fmt: skip
def test_parse_jwt_bundle(data: bytes, kids: set[str], ignored: list[str]) -> None:
    """Every key without `use`, or with `use: jwt-svid`, is a JWT authority; the rest is
    ignored and listed; nothing at all trusts nothing."""
    parsed = parse_jwt_bundle(data, "wapi")
    assert set(parsed.jwt_authorities) == kids
    assert list(parsed.ignored) == ignored
    assert parsed.x509_authorities == ()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"{", "wapi: not valid JSON", id="not-json"),
        pytest.param(_set(_without_use({**ec_jwk(), "kid": ""})), "needs a non-empty 'kid'",
                     id="no-kid"),
        pytest.param(_set(jwk("a", KEY), jwk("a", KEY)), "duplicate kid 'a'", id="duplicate-kid"),
        pytest.param(_set({**jwk("a", KEY), "d": "AA"}), "contains a private key",
                     id="private-key"),
    ],
)  # fmt: skip
def test_parse_jwt_bundle_rejects(data: bytes, message: str) -> None:
    """A broken JWK Set is rejected whole, quoting what is wrong."""
    with pytest.raises(ConfigError, match=message):
        parse_jwt_bundle(data, "wapi")


def test_response_by_trust_domain() -> None:
    """Trust domain IDs become names; a bad name is left out; a bad set rejects all."""
    bundles = jwt_bundles_from_response(
        {
            "spiffe://example.org": _set(jwk("k1", KEY)),
            "spiffe://partner.org": b"",
            "spiffe://Bad Domain": _set(jwk("k2", KEY)),
        }
    )
    assert {td: set(keys) for td, keys in bundles.items()} == {
        "example.org": {"k1"},
        "partner.org": set(),
    }
    with pytest.raises(ConfigError, match=r"Workload API JWT bundle of example\.org"):
        jwt_bundles_from_response({"spiffe://example.org": b"[]"})
