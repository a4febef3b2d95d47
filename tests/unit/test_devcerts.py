"""Dev certificates: what `authz-server dev-certs` writes, and the variants tests mint."""

from __future__ import annotations

import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from authz_server.core.errors import ConfigError, IdentityError
from authz_server.identity.bundles import load_pem_bundles
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.identity.x509 import CertificateVerifier
from authz_server.tools.devcerts import (
    key_pem,
    load_authority,
    mint_ca,
    mint_svid,
    parse_id_spec,
    pem,
    write_dev_certs,
)

IDS = {"api": "spiffe://example.org/ns/prod/sa/api", "web": "spiffe://example.org/ns/prod/sa/web"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_parse_and_verify(tmp_path: Path) -> None:
    """The CA loads as a trust bundle and every SVID verifies against it with its key."""
    paths = write_dev_certs(tmp_path / "certs", "example.org", IDS, {"api": ["api.local"]}).paths
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
    paths = write_dev_certs(tmp_path, "example.org", IDS).paths
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


def _verifies(leaf: Path, ca: Path, spiffe_id: str) -> bool:
    """Whether the SVID in `leaf` verifies against the CA file `ca` now."""
    bundles = load_pem_bundles({"example.org": ca})
    try:
        CertificateVerifier().verify(
            leaf.read_text(), parse_spiffe_id(spiffe_id), bundles, datetime.now(UTC)
        )
    except IdentityError:
        return False
    return True


def test_second_run_reuses_the_ca(tmp_path: Path) -> None:
    """A second run signs with the CA already there: earlier SVIDs keep verifying."""
    first = write_dev_certs(tmp_path, "example.org", {"api": IDS["api"]})
    old_leaf = tmp_path / "old-api.pem"
    old_leaf.write_bytes(first.paths["api.pem"].read_bytes())
    ca_before = (tmp_path / "ca.pem").read_bytes(), (tmp_path / "ca.key").read_bytes()
    second = write_dev_certs(tmp_path, "example.org", {"web": IDS["web"]})
    assert (first.ca, second.ca) == ("new", "reused")
    assert ((tmp_path / "ca.pem").read_bytes(), (tmp_path / "ca.key").read_bytes()) == ca_before
    assert _verifies(old_leaf, tmp_path / "ca.pem", IDS["api"])
    assert _verifies(second.paths["web.pem"], tmp_path / "ca.pem", IDS["web"])


def test_force_mints_a_new_ca(tmp_path: Path) -> None:
    """`force` replaces the CA: the old SVIDs no longer verify, the new ones do."""
    write_dev_certs(tmp_path, "example.org", {"api": IDS["api"]})
    old_leaf = tmp_path / "old-api.pem"
    old_leaf.write_bytes((tmp_path / "api.pem").read_bytes())
    ca_before = (tmp_path / "ca.pem").read_bytes()
    again = write_dev_certs(tmp_path, "example.org", {"api": IDS["api"]}, force=True)
    assert again.ca == "replaced"
    assert (tmp_path / "ca.pem").read_bytes() != ca_before
    assert not _verifies(old_leaf, tmp_path / "ca.pem", IDS["api"])
    assert _verifies(again.paths["api.pem"], tmp_path / "ca.pem", IDS["api"])


def test_svid_does_not_outlive_a_reused_ca(tmp_path: Path) -> None:
    """An SVID signed by a CA that ends sooner than a default SVID ends with the CA."""
    now = datetime.now(UTC)  # the code under test mints with the real clock
    ca = mint_ca(
        "example.org", not_before=now - timedelta(days=1), not_after=now + timedelta(days=2)
    )
    (tmp_path / "ca.pem").write_bytes(pem(ca.certificate))
    (tmp_path / "ca.key").write_bytes(key_pem(ca.key))
    written = write_dev_certs(tmp_path, "example.org", {"api": IDS["api"]})
    leaf = x509.load_pem_x509_certificate(written.paths["api.pem"].read_bytes())
    assert written.ca == "reused"
    assert leaf.not_valid_after_utc == ca.certificate.not_valid_after_utc


def _other_key_ca(directory: Path) -> None:
    ca = mint_ca("example.org")
    (directory / "ca.pem").write_bytes(pem(ca.certificate))
    (directory / "ca.key").write_bytes(key_pem(mint_ca("example.org").key))


def _expired_ca(directory: Path) -> None:
    now = datetime.now(UTC)  # load_authority judges expiry by the real clock
    ca = mint_ca(
        "example.org", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )
    (directory / "ca.pem").write_bytes(pem(ca.certificate))
    (directory / "ca.key").write_bytes(key_pem(ca.key))


def _foreign_ca(directory: Path) -> None:
    ca = mint_ca("other.org")
    (directory / "ca.pem").write_bytes(pem(ca.certificate))
    (directory / "ca.key").write_bytes(key_pem(ca.key))


def _ca_pem_only(directory: Path) -> None:
    (directory / "ca.pem").write_bytes(pem(mint_ca("example.org").certificate))


def _garbage_ca(directory: Path) -> None:
    (directory / "ca.pem").write_text("not a certificate")
    (directory / "ca.key").write_text("not a key")


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        pytest.param(
            _foreign_ca, "CA is for trust domain 'other.org', not 'example.org'", id="other-domain"
        ),
        pytest.param(_other_key_ca, "is not the EC private key of", id="key-of-another-ca"),
        pytest.param(_expired_ca, "the CA expired at", id="expired"),
        pytest.param(_ca_pem_only, "ca.pem is there without ca.key", id="ca-pem-alone"),
        pytest.param(_garbage_ca, "not a usable CA", id="not-pem"),
    ],
)
def test_unusable_existing_ca_is_refused(
    tmp_path: Path, prepare: Callable[[Path], None], message: str
) -> None:
    """A CA that cannot sign for the trust domain is refused, nothing written; --force helps."""
    prepare(tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match="--force mints a new CA") as caught:
        write_dev_certs(tmp_path, "example.org", {"api": IDS["api"]})
    assert message in str(caught.value)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert write_dev_certs(tmp_path, "example.org", {"api": IDS["api"]}, force=True).ca == (
        "replaced"
    )


def test_load_authority_signs_like_the_minted_one(tmp_path: Path) -> None:
    """The loaded CA is the written one: same certificate and key."""
    written = write_dev_certs(tmp_path, "example.org", {"api": IDS["api"]})
    loaded = load_authority(tmp_path, "example.org")
    assert loaded.certificate == written.authority.certificate
    assert loaded.key.private_numbers() == written.authority.key.private_numbers()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        pytest.param("file/certs", "Not a directory", id="under-a-file"),
        pytest.param("file", "a file, not a directory, has that name", id="is-a-file"),
        pytest.param("/proc/authz-certs", "cannot write there", id="proc"),
    ],
)
def test_unwritable_out_directory(tmp_path: Path, out: str, message: str) -> None:
    """A directory that cannot be created is one ConfigError naming it."""
    (tmp_path / "file").write_text("a regular file")
    target = tmp_path / out
    with pytest.raises(ConfigError, match="choose a directory you can create and write") as caught:
        write_dev_certs(target, "example.org", IDS)
    assert message in str(caught.value)
    assert repr(str(target)) in str(caught.value)
