"""TLS material from files, the rotating credentials, and CallerGuard's refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from authz_server.core.errors import ConfigError
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.patterns import compile_principal_pattern
from authz_server.tools import devcerts
from authz_server.transport.tls import (
    CallerGuard,
    TlsCredentials,
    load_certificate_files,
    placeholder_certificate,
)

OURS, PARTNER = devcerts.mint_ca("example.org"), devcerts.mint_ca("partner.org")
ALLOWED = "spiffe://example.org/envoy/front"
TRUST_DOMAIN_ID = "spiffe://example.org"


def _write(tmp: Path, cert: bytes, key: bytes) -> tuple[str, str]:
    (tmp / "c.pem").write_bytes(cert)
    (tmp / "k.pem").write_bytes(key)
    return str(tmp / "c.pem"), str(tmp / "k.pem")


def test_certificate_files_load_with_their_chain(tmp_path: Path) -> None:
    """Leaf and intermediate are served; the SPIFFE ID and expiry are kept for logs."""
    inter = devcerts.mint_ca("example.org", issuer=OURS, name="inter")
    leaf, key = devcerts.mint_svid(inter, "spiffe://example.org/authz")
    chain = devcerts.pem(leaf) + devcerts.pem(inter.certificate)
    loaded = load_certificate_files(*_write(tmp_path, chain, devcerts.key_pem(key)))
    assert loaded.chain_pem == chain
    assert loaded.spiffe_id == "spiffe://example.org/authz"
    assert loaded.not_after == leaf.not_valid_after_utc


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: (b"junk", b"junk"), "--tls-cert", id="no-certificate"),
        pytest.param(
            lambda: (devcerts.pem(OURS.certificate), b"junk"),
            "unreadable private key",
            id="bad-key",
        ),
        pytest.param(
            lambda: (devcerts.pem(OURS.certificate), devcerts.key_pem(PARTNER.key)),
            "is not the key of the first certificate",
            id="key-of-another-certificate",
        ),
    ],
)
def test_bad_certificate_files(
    tmp_path: Path, make: Callable[[], tuple[bytes, bytes]], message: str
) -> None:
    """A certificate without its own key is refused with the file names."""
    with pytest.raises(ConfigError, match=message):
        load_certificate_files(*_write(tmp_path, *make()))


def test_credentials_fetcher_reports_changes_once() -> None:
    """gRPC's fetcher gets a new configuration once per update, then "unchanged"."""
    credentials = TlsCredentials(placeholder_certificate(), b"")
    assert credentials._fetch() is not None
    assert credentials._fetch() is None
    credentials.update(roots_pem=devcerts.pem(OURS.certificate))
    assert credentials._fetch() is not None
    assert credentials._fetch() is None


def _auth(
    spiffe_id: str | None, authority: devcerts.Authority = OURS, **kw: object
) -> dict[str, list[bytes]]:
    leaf, _ = devcerts.mint_svid(authority, spiffe_id or "spiffe://example.org/x", **kw)  # type: ignore[arg-type]
    auth = {"x509_pem_cert": [devcerts.pem(leaf)]}
    if spiffe_id is not None:
        auth["peer_spiffe_id"] = [spiffe_id.encode()]
    return auth


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        pytest.param(lambda: _auth(ALLOWED), None, id="allowed"),
        pytest.param(lambda: {}, "no_certificate", id="no-certificate"),
        pytest.param(lambda: _auth(None), "certificate_invalid", id="no-spiffe-id"),
        pytest.param(
            lambda: {**_auth(ALLOWED), "peer_spiffe_id": [b"SPIFFE://example.org/envoy/front"]},
            "invalid_spiffe_id",
            id="non-canonical-id",
        ),
        pytest.param(lambda: _auth("spiffe://example.org/other"), "not_allowed", id="not-allowed"),
        pytest.param(
            lambda: _auth(ALLOWED, PARTNER), "certificate_invalid", id="foreign-ca-mints-our-id"
        ),
        pytest.param(
            lambda: {
                **_auth("spiffe://example.org/envoy/other"),
                "peer_spiffe_id": [ALLOWED.encode()],
            },
            "certificate_mismatch",
            id="claimed-id-not-the-certificate",
        ),
        pytest.param(lambda: _auth(TRUST_DOMAIN_ID), "invalid_spiffe_id", id="bare-trust-domain"),
        pytest.param(
            lambda: {**_auth(TRUST_DOMAIN_ID), "peer_spiffe_id": [ALLOWED.encode()]},
            "certificate_invalid",
            id="leaf-san-bare-trust-domain",
        ),
        pytest.param(
            lambda: _auth(ALLOWED, eku="client_auth"), "certificate_invalid", id="eku-client-only"
        ),
        pytest.param(
            lambda: _auth(ALLOWED, key_usage_critical=False),
            "certificate_invalid",
            id="key-usage-not-critical",
        ),
    ],
)
def test_caller_guard_refusals(
    auth: Callable[[], dict[str, list[bytes]]], reason: str | None
) -> None:
    """Only a certificate chaining to its own trust domain's bundle, whose SPIFFE ID is
    allowed, may call."""
    bundles = TrustBundles(
        {"example.org": (OURS.certificate,), "partner.org": (PARTNER.certificate,)}
    )
    guard = CallerGuard(
        [compile_principal_pattern("spiffe://example.org/envoy/*")], lambda: bundles
    )
    refusal = guard.refusal(auth())
    assert (refusal[0] if refusal else None) == reason


@pytest.mark.parametrize(
    "pattern", [pytest.param(TRUST_DOMAIN_ID, id="exact"), pytest.param(f"{TRUST_DOMAIN_ID}/**", id="whole-domain")]
)  # fmt: skip
def test_bare_trust_domain_is_never_an_allowed_caller(pattern: str) -> None:
    """Whatever `--allowed-caller` says, a trust domain ID names no workload: refused."""
    bundles = TrustBundles({"example.org": (OURS.certificate,)})
    guard = CallerGuard([compile_principal_pattern(pattern)], lambda: bundles)
    refusal = guard.refusal(_auth(TRUST_DOMAIN_ID))
    assert refusal is not None
    assert refusal[0] == "invalid_spiffe_id"
    assert "names a trust domain, not a workload" in refusal[1]
