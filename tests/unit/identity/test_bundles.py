"""Trust bundles: one store per trust domain, loaded from PEM files with clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from authz_server.core.errors import ConfigError
from authz_server.identity.bundles import TrustBundles, load_pem_bundles, parse_bundle_spec
from authz_server.tools.devcerts import key_pem, mint_ca, mint_svid, pem


def test_each_trust_domain_gets_its_own_store() -> None:
    """Stores are per trust domain; an absent or empty domain has no store."""
    ours, partner = mint_ca("example.org"), mint_ca("partner.org")
    bundles = TrustBundles(
        {"example.org": (ours.certificate,), "partner.org": (partner.certificate,), "gone.org": ()}
    )
    assert bundles.store_for("example.org") is not None
    assert bundles.store_for("example.org") is bundles.store_for("example.org")  # built once
    assert bundles.store_for("example.org") is not bundles.store_for("partner.org")
    assert bundles.store_for("gone.org") is None
    assert bundles.store_for("other.org") is None
    assert "gone.org" in bundles
    assert "other.org" not in bundles
    assert bundles.domains == {"example.org", "partner.org", "gone.org"}


def test_generations_increase_and_are_never_reused() -> None:
    """Every constructed set, even with the same content, has a newer generation."""
    first = TrustBundles.empty()
    second = TrustBundles(dict(first.authorities))
    third = TrustBundles.empty()
    assert first.generation < second.generation < third.generation
    assert first != second


def test_bundles_are_immutable() -> None:
    """Neither the set nor its mapping can be changed after construction."""
    bundles = TrustBundles({"example.org": (mint_ca("example.org").certificate,)})
    with pytest.raises(AttributeError):
        bundles.generation = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        bundles.authorities["evil.org"] = ()  # type: ignore[index]


def test_load_pem_bundles_reads_one_file_per_trust_domain(tmp_path: Path) -> None:
    """A file with several CA certificates becomes that trust domain's authorities."""
    old, new, partner = mint_ca("example.org"), mint_ca("example.org"), mint_ca("partner.org")
    (tmp_path / "ours.pem").write_bytes(pem(old.certificate) + pem(new.certificate))
    (tmp_path / "partner.pem").write_bytes(pem(partner.certificate))
    bundles = load_pem_bundles(
        {"example.org": tmp_path / "ours.pem", "partner.org": str(tmp_path / "partner.pem")}
    )
    assert bundles.authorities["example.org"] == (old.certificate, new.certificate)
    assert bundles.authorities["partner.org"] == (partner.certificate,)


def _leaf_pem(path: Path) -> None:
    path.write_bytes(pem(mint_svid(mint_ca("example.org"), "spiffe://example.org/a")[0]))


def _key_only(path: Path) -> None:
    path.write_bytes(key_pem(mint_ca("example.org").key))


def _ca_then_leaf(path: Path) -> None:
    authority = mint_ca("example.org")
    leaf, _ = mint_svid(authority, "spiffe://example.org/a")
    path.write_bytes(pem(authority.certificate) + pem(leaf))


@pytest.mark.parametrize(
    ("prepare", "trust_domain", "message"),
    [
        pytest.param(None, "example.org", "file not found", id="missing-file"),
        pytest.param(lambda p: p.mkdir(), "example.org", "cannot read", id="unreadable"),
        pytest.param(lambda p: p.write_bytes(b""), "example.org", "no PEM certificate", id="empty"),
        pytest.param(_key_only, "example.org", "no PEM certificate", id="only-a-key"),
        pytest.param(
            lambda p: p.write_bytes(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ),
            "example.org",
            "unparsable PEM certificate",
            id="unparsable",
        ),
        pytest.param(
            _leaf_pem,
            "example.org",
            "certificate #1 (O=SPIFFE) is not a CA: basicConstraints cA is false",
            id="leaf-not-ca",
        ),
        pytest.param(
            _ca_then_leaf, "example.org", "certificate #2 (O=SPIFFE) is not a CA", id="ca-then-leaf"
        ),
        pytest.param(
            _leaf_pem,
            "Example.org",
            "invalid trust domain 'Example.org'",
            id="upper-case-trust-domain",
        ),
        pytest.param(_leaf_pem, "", "invalid trust domain ''", id="empty-trust-domain"),
        pytest.param(
            _leaf_pem, "example.org:443", "invalid trust domain", id="port-in-trust-domain"
        ),
        pytest.param(_leaf_pem, "t" * 256, "longer than 255 bytes", id="trust-domain-too-long"),
    ],
)
def test_load_errors_quote_the_file(
    tmp_path: Path, prepare: Callable[[Path], object] | None, trust_domain: str, message: str
) -> None:
    """Every unusable bundle raises ConfigError naming the file and the problem."""
    path = tmp_path / "bundle.pem"
    if prepare is not None:
        prepare(path)
    with pytest.raises(ConfigError) as caught:
        load_pem_bundles({trust_domain: path})
    assert str(caught.value).startswith(f"trust bundle {str(path)!r}: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "example.org=/etc/spire/bundle.pem",
            ("example.org", "/etc/spire/bundle.pem"),
            id="plain",
        ),
        pytest.param("example.org=a=b.pem", ("example.org", "a=b.pem"), id="equals-in-path"),
    ],
)
def test_parse_bundle_spec(text: str, expected: tuple[str, str]) -> None:
    """TRUST_DOMAIN=PEM_FILE splits at the first '='."""
    assert parse_bundle_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("bundle.pem", "expected TRUST_DOMAIN=PEM_FILE", id="no-equals"),
        pytest.param("example.org=", "expected TRUST_DOMAIN=PEM_FILE", id="no-path"),
        pytest.param("=bundle.pem", "invalid trust domain ''", id="no-trust-domain"),
        pytest.param(
            "spiffe://example.org=b.pem",
            "invalid trust domain 'spiffe://example.org'",
            id="spiffe-uri",
        ),
        pytest.param("Example.org=b.pem", "invalid trust domain 'Example.org'", id="upper-case"),
    ],
)
def test_parse_bundle_spec_rejects(text: str, message: str) -> None:
    """A malformed --trust-bundle flag raises ConfigError quoting the flag."""
    with pytest.raises(ConfigError) as caught:
        parse_bundle_spec(text)
    assert str(caught.value).startswith(f"--trust-bundle {text!r}")
    assert message in str(caught.value)
