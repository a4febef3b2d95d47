"""SPIFFE bundle JSON: x509-svid and jwt-svid keys, ignored keys, rejected documents."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from authz_server.core.errors import ConfigError
from authz_server.identity.bundle_json import parse_bundle_json
from authz_server.identity.bundles import load_bundle_file, load_bundles
from authz_server.runtime.reload import compose_bundles
from authz_server.tools.devcerts import mint_ca, mint_svid, pem

CA = mint_ca("example.org")
OTHER = mint_ca("example.org")


def _b64u(number: int, size: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(size, "big")).rstrip(b"=").decode()


def x509_key(
    authority: Any = CA, *, with_params: bool = True, der: bytes | None = None
) -> dict[str, Any]:
    data = der if der is not None else authority.certificate.public_bytes(Encoding.DER)
    key: dict[str, Any] = {"use": "x509-svid", "x5c": [base64.b64encode(data).decode()]}
    if with_params:
        numbers = authority.certificate.public_key().public_numbers()
        key.update(kty="EC", crv="P-256", x=_b64u(numbers.x, 32), y=_b64u(numbers.y, 32))
    return key


def ec_jwk(kid: str = "k1") -> dict[str, Any]:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return {"use": "jwt-svid", "kid": kid, "kty": "EC", "crv": "P-256",
            "x": _b64u(numbers.x, 32), "y": _b64u(numbers.y, 32)}  # fmt: skip


def rsa_jwk(kid: str = "r1") -> dict[str, Any]:
    numbers = rsa.generate_private_key(65537, 2048).public_key().public_numbers()
    return {"use": "jwt-svid", "kid": kid, "kty": "RSA",
            "n": _b64u(numbers.n, 256), "e": _b64u(numbers.e, 3)}  # fmt: skip


def okp_jwk(kid: str = "o1") -> dict[str, Any]:
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"use": "jwt-svid", "kid": kid, "kty": "OKP", "crv": "Ed25519", "x": x}


def doc(*keys: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"keys": list(keys), **extra}).encode()


def test_x509_and_jwt_keys_are_read() -> None:
    """x509-svid keys become CA certificates; jwt-svid keys public keys by kid."""
    parsed = parse_bundle_json(
        doc(x509_key(), x509_key(OTHER, with_params=False), ec_jwk(), rsa_jwk(), okp_jwk(),
            spiffe_sequence=7),
        "b",
    )  # fmt: skip
    assert parsed.x509_authorities == (CA.certificate, OTHER.certificate)
    assert set(parsed.jwt_authorities) == {"k1", "r1", "o1"}
    assert isinstance(parsed.jwt_authorities["r1"], rsa.RSAPublicKey)
    assert parsed.sequence == 7
    assert parsed.ignored == ()


@pytest.mark.parametrize(
    ("key", "ignored"),
    [
        pytest.param(
            {"use": "x509_svid", "kty": "EC"}, "unknown use 'x509_svid'", id="unknown-use"
        ),
        pytest.param({"kty": "EC"}, "unknown use 'None'", id="missing-use"),
        pytest.param({**ec_jwk(), "kty": "oct"}, "unknown kty 'oct'", id="unknown-kty"),
        pytest.param({**ec_jwk(), "crv": "P-192"}, "unknown EC curve 'P-192'", id="unknown-curve"),
    ],
)
def test_unknown_keys_are_ignored(key: dict[str, Any], ignored: str) -> None:
    """Keys of an unknown use or type are skipped (as the standard says) and listed."""
    parsed = parse_bundle_json(doc(key, x509_key()), "b")
    assert parsed.x509_authorities == (CA.certificate,)
    assert parsed.jwt_authorities == {}
    assert parsed.ignored == (f"key #1: {ignored}",)


def test_empty_key_list_is_a_valid_bundle_that_trusts_nothing() -> None:
    """`"keys": []` distrusts the domain rather than being an error."""
    parsed = parse_bundle_json(doc(), "b")
    assert parsed.x509_authorities == () and parsed.jwt_authorities == {}


LEAF, _ = mint_svid(CA, "spiffe://example.org/a")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"{", "not valid JSON", id="not-json"),
        pytest.param(b"[]", "JSON object with a 'keys' array", id="not-an-object"),
        pytest.param(
            b'{"keys": {}}', "'keys' must be present and be an array", id="keys-not-array"
        ),
        pytest.param(b"{}", "'keys' must be present", id="no-keys"),
        pytest.param(
            doc(spiffe_sequence="1"), "'spiffe_sequence' must be an integer", id="bad-sequence"
        ),
        pytest.param(doc("x"), "key #1: must be a JSON object", id="key-not-object"),  # type: ignore[arg-type]
        pytest.param(doc({"use": "x509-svid"}), "exactly one certificate", id="no-x5c"),
        pytest.param(
            doc({**x509_key(), "x5c": x509_key()["x5c"] * 2}),
            "exactly one certificate",
            id="two-x5c",
        ),
        pytest.param(doc({"use": "x509-svid", "x5c": ["@@"]}), "not a base64 DER", id="bad-base64"),
        pytest.param(
            doc(x509_key(der=LEAF.public_bytes(Encoding.DER), with_params=False)),
            "is not a CA",
            id="leaf-not-ca",
        ),
        pytest.param(
            doc(
                {
                    **x509_key(OTHER, with_params=False),
                    **{k: v for k, v in x509_key().items() if k != "x5c"},
                }
            ),
            "not the x5c certificate's key",
            id="params-mismatch",
        ),
        pytest.param(doc({**ec_jwk(), "kid": ""}), "needs a non-empty 'kid'", id="no-kid"),
        pytest.param(doc(ec_jwk("a"), ec_jwk("a")), "duplicate kid 'a'", id="duplicate-kid"),
        pytest.param(doc({**ec_jwk(), "d": "AA"}), "contains a private key", id="private-key"),
        pytest.param(doc({**ec_jwk(), "x": _b64u(1, 32)}), "invalid EC key", id="point-off-curve"),
        pytest.param(
            doc({k: v for k, v in ec_jwk().items() if k != "y"}), "missing 'y'", id="missing-y"
        ),
    ],
)
def test_invalid_documents_are_rejected_whole(data: bytes, message: str) -> None:
    """Any other problem rejects the document, quoting where it is."""
    with pytest.raises(ConfigError, match=r"^b: ") as error:
        parse_bundle_json(data, "b")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        pytest.param(lambda: pem(CA.certificate), "pem", id="pem"),
        pytest.param(lambda: b"\n  " + doc(x509_key(), ec_jwk()), "json", id="json"),
    ],
)
def test_bundle_files_are_told_apart_by_content(tmp_path: Path, content: Any, kind: str) -> None:
    """`--trust-bundle` takes PEM or SPIFFE JSON whatever the file name."""
    path = tmp_path / "bundle"
    path.write_bytes(content())
    bundle = load_bundle_file(path)
    assert bundle.x509_authorities == (CA.certificate,)
    assert (set(bundle.jwt_authorities) == {"k1"}) is (kind == "json")


def test_load_bundles_keeps_jwt_keys_per_domain(tmp_path: Path) -> None:
    """JWT-SVID keys land in TrustBundles.jwt_authorities of their trust domain."""
    (tmp_path / "b.json").write_bytes(doc(ec_jwk("k9")))
    bundles = compose_bundles(load_bundles({"example.org": tmp_path / "b.json"}), None)
    assert set(bundles.jwt_authorities["example.org"]) == {"k9"}
    assert bundles.store_for("example.org") is None  # no x509-svid key: X.509 distrusted
