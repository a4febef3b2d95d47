"""Dev certificates: what `authz-server dev-certs` writes, and the variants tests mint."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from authz_server.devcerts import mint_ca, mint_svid, parse_id_spec, write_dev_certs
from authz_server.errors import ConfigError
from authz_server.identity.bundles import load_pem_bundles
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.identity.x509 import CertificateVerifier

IDS = {"api": "spiffe://example.org/ns/prod/sa/api", "web": "spiffe://example.org/ns/prod/sa/web"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_parse_and_verify(tmp_path: Path) -> None:
    """The CA loads as a trust bundle and every SVID verifies against it with its key."""
    paths = write_dev_certs(tmp_path / "certs", "example.org", IDS, {"api": ["api.local"]})
    assert set(paths) == {"ca.pem", "ca.key", "api.pem", "api.key", "web.pem", "web.key"}
    bundles = load_pem_bundles({"example.org": paths["ca.pem"]})
    verifier = CertificateVerifier()
    for name, spiffe_id in IDS.items():
        text = paths[f"{name}.pem"].read_text()
        verifier.verify(text, parse_spiffe_id(spiffe_id), bundles, datetime.now(UTC))
        cert = x509.load_pem_x509_certificate(text.encode())
        key = load_pem_private_key(paths[f"{name}.key"].read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key() == cert.public_key()
    api = x509.load_pem_x509_certificate(paths["api.pem"].read_bytes())
    san = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.local"]


def test_keys_are_private(tmp_path: Path) -> None:
    """Private keys are 0600, also when they overwrite an existing world-readable file."""
    (tmp_path / "api.key").write_text("old")
    (tmp_path / "api.key").chmod(0o644)
    paths = write_dev_certs(tmp_path, "example.org", IDS)
    for name, path in paths.items():
        assert _mode(path) == (0o600 if name.endswith(".key") else 0o644), name


def test_default_svid_looks_like_spire(tmp_path: Path) -> None:
    """A default leaf carries what SPIRE sets: one URI SAN, no CA, signature keyUsage, both EKUs."""
    authority = mint_ca("example.org")
    cert, _ = mint_svid(authority, "spiffe://example.org/a")
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    ) == ["spiffe://example.org/a"]
    assert ext.get_extension_for_class(x509.BasicConstraints).critical
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert cert.issuer == authority.certificate.subject
    ca_ext = authority.certificate.extensions
    assert ca_ext.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca_ext.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


@pytest.mark.parametrize(
    ("trust_domain", "ids", "dns", "message"),
    [
        pytest.param("Example.org", IDS, {}, "trust domain 'Example.org'", id="bad-trust-domain"),
        pytest.param("example.org", {}, {}, "at least one --id", id="no-ids"),
        pytest.param(
            "example.org", {"API": IDS["api"]}, {}, "--id name 'API'", id="upper-case-name"
        ),
        pytest.param(
            "example.org", {"../x": IDS["api"]}, {}, "--id name '../x'", id="path-in-name"
        ),
        pytest.param("example.org", {"ca": IDS["api"]}, {}, "not be 'ca'", id="name-ca"),
        pytest.param(
            "example.org",
            {"api": "spiffe://example.org/api/"},
            {},
            "--id api: invalid SPIFFE ID 'spiffe://example.org/api/'",
            id="non-canonical-id",
        ),
        pytest.param(
            "example.org",
            {"api": "spiffe://other.org/api"},
            {},
            "'spiffe://other.org/api' is not in trust domain 'example.org'",
            id="foreign-trust-domain",
        ),
        pytest.param(
            "example.org", {"api": "spiffe://example.org"}, {}, "has no path", id="trust-domain-id"
        ),
        pytest.param(
            "example.org", IDS, {"db": ["db.local"]}, "unknown ids: 'db'", id="dns-for-unknown"
        ),
    ],
)
def test_write_dev_certs_rejects(
    tmp_path: Path,
    trust_domain: str,
    ids: dict[str, str],
    dns: dict[str, list[str]],
    message: str,
) -> None:
    """Bad names and IDs raise ConfigError before anything is written."""
    out = tmp_path / "certs"
    with pytest.raises(ConfigError) as caught:
        write_dev_certs(out, trust_domain, ids, dns)
    assert message in str(caught.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "api=spiffe://example.org/api", ("api", "spiffe://example.org/api"), id="plain"
        ),
        pytest.param(
            "q=spiffe://example.org/a=b", ("q", "spiffe://example.org/a=b"), id="first-equals"
        ),
    ],
)
def test_parse_id_spec(text: str, expected: tuple[str, str]) -> None:
    """NAME=SPIFFE_ID splits at the first '=' (the ID itself is checked when writing)."""
    assert parse_id_spec(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("spiffe://example.org/api", id="no-name"),
        pytest.param("api=", id="no-id"),
        pytest.param("=spiffe://example.org/api", id="empty-name"),
    ],
)
def test_parse_id_spec_rejects(text: str) -> None:
    """A malformed --id flag raises ConfigError quoting it."""
    with pytest.raises(ConfigError, match="expected NAME=SPIFFE_ID") as caught:
        parse_id_spec(text)
    assert repr(text) in str(caught.value)
