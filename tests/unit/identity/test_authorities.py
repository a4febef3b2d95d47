"""Bundle CAs that cannot sign certificates: kept, but warned about at load and reported."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from authz_server.check.snapshot import SnapshotHolder
from authz_server.identity.authorities import authority_problem, authority_warnings
from authz_server.identity.bundles import DomainBundle, TrustBundles, load_bundles
from authz_server.policy.load import load_policy_text
from authz_server.runtime.reload import LiveState
from authz_server.telemetry.metrics import Metrics
from authz_server.tools.devcerts import mint_ca, mint_svid, pem

GOOD = mint_ca("example.org")
NO_KEY_USAGE = mint_ca("example.org", name="no keyUsage CA", key_usage="none")
NO_CERT_SIGN = mint_ca("example.org", name="no keyCertSign CA", key_usage="no_cert_sign")
PARTNER_NO_CERT_SIGN = mint_ca("partner.org", key_usage="no_cert_sign")
LEAF = mint_svid(GOOD, "spiffe://example.org/x")[0]


@pytest.mark.parametrize(
    ("certificate", "problem"),
    [
        pytest.param(GOOD.certificate, None, id="dev-ca"),
        pytest.param(mint_ca("example.org", issuer=GOOD).certificate, None, id="intermediate"),
        pytest.param(NO_KEY_USAGE.certificate, "no keyUsage extension (keyCertSign is required)", id="no-key-usage"),
        pytest.param(NO_CERT_SIGN.certificate, "keyUsage lacks keyCertSign", id="no-key-cert-sign"),
        pytest.param(LEAF, "basicConstraints cA is false", id="leaf-not-a-ca"),
    ],
)  # fmt: skip
def test_authority_problem(certificate: x509.Certificate, problem: str | None) -> None:
    """Only a CA whose keyUsage asserts keyCertSign can sign what the verifier accepts."""
    assert authority_problem(certificate) == problem


def test_warning_names_the_ca_and_the_consequence() -> None:
    """The line says which CA (subject, fingerprint), why, and what callers will see."""
    (line,) = authority_warnings([GOOD.certificate, NO_CERT_SIGN.certificate])
    assert line.startswith("CA 'CN=no keyCertSign CA,O=SPIFFE' (sha256 ")
    assert line.endswith(
        "cannot sign certificates: keyUsage lacks keyCertSign; "
        "SVIDs it issued are refused (certificate_invalid)"
    )


SETS: list[Any] = [
    pytest.param({"example.org": (GOOD.certificate,)}, set(), set(), id="all-good"),
    pytest.param({"example.org": (NO_CERT_SIGN.certificate,)}, {"example.org"}, {"example.org"}, id="only-ca-cannot-sign"),
    pytest.param({"example.org": (NO_KEY_USAGE.certificate, NO_CERT_SIGN.certificate)}, {"example.org"}, {"example.org"}, id="no-ca-can-sign"),
    pytest.param({"example.org": (GOOD.certificate, NO_KEY_USAGE.certificate)}, {"example.org"}, set(), id="one-of-two-cannot-sign"),
    pytest.param({"example.org": (GOOD.certificate,), "partner.org": (PARTNER_NO_CERT_SIGN.certificate,)}, {"partner.org"}, {"partner.org"}, id="partner-unusable"),
    pytest.param({"example.org": ()}, set(), set(), id="distrusted-is-not-unusable"),
]  # fmt: skip


@pytest.mark.parametrize(("authorities", "warned", "unusable"), SETS)
def test_trust_bundles_keep_and_report_unusable_cas(
    authorities: dict[str, tuple[x509.Certificate, ...]], warned: set[str], unusable: set[str]
) -> None:
    """A CA that cannot sign stays in its domain's store (never refused) and is reported;
    a domain is unusable only when none of its CAs can sign."""
    bundles = TrustBundles(authorities)
    assert set(bundles.authority_warnings) == warned
    assert bundles.unusable_domains == unusable
    for trust_domain, certificates in authorities.items():
        assert bundles.authorities[trust_domain] == certificates
        assert (bundles.store_for(trust_domain) is not None) == bool(certificates)


def _pem_file(path: Path, *certificates: x509.Certificate) -> None:
    path.write_bytes(b"".join(pem(c) for c in certificates))


def _json_file(path: Path, *certificates: x509.Certificate) -> None:
    keys = [
        {"use": "x509-svid", "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode()]}
        for c in certificates
    ]
    path.write_text(json.dumps({"keys": keys}))


@pytest.mark.parametrize(
    ("write", "bad", "problem"),
    [
        pytest.param(_pem_file, NO_KEY_USAGE, "no keyUsage extension", id="pem-no-key-usage"),
        pytest.param(_pem_file, NO_CERT_SIGN, "keyUsage lacks keyCertSign", id="pem-no-key-cert-sign"),
        pytest.param(_json_file, NO_KEY_USAGE, "no keyUsage extension", id="json-no-key-usage"),
        pytest.param(_json_file, NO_CERT_SIGN, "keyUsage lacks keyCertSign", id="json-no-key-cert-sign"),
    ],
)  # fmt: skip
def test_bundle_files_warn_at_load(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    write: Callable[..., None],
    bad: Any,
    problem: str,
) -> None:
    """Loading a bundle file logs each CA that cannot sign, naming the file and the
    problem, and keeps every CA of the file."""
    path = tmp_path / "bundle"
    write(path, GOOD.certificate, bad.certificate)
    with caplog.at_level(logging.WARNING, "authz_server.identity.authorities"):
        loaded = load_bundles({"example.org": path})
    assert loaded["example.org"].x509_authorities == (GOOD.certificate, bad.certificate)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith(f"trust bundle '{path}': trust domain 'example.org': CA ")
    assert problem in message


def test_good_bundle_files_log_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No warning for CAs that can sign."""
    _pem_file(tmp_path / "ours.pem", GOOD.certificate)
    with caplog.at_level(logging.WARNING, "authz_server.identity.authorities"):
        load_bundles({"example.org": tmp_path / "ours.pem"})
    assert caplog.records == []


POLICY = "version: 1\nidentity: {trust_domains: [example.org, partner.org]}\nrules: []\n"


@pytest.mark.parametrize(
    ("files", "states"),
    [
        pytest.param({"example.org": (GOOD.certificate,)}, (1, 0, 0), id="trusted"),
        pytest.param({"example.org": (GOOD.certificate,), "partner.org": (PARTNER_NO_CERT_SIGN.certificate,)}, (1, 1, 0), id="partner-unusable"),
        pytest.param({"example.org": (GOOD.certificate, NO_CERT_SIGN.certificate)}, (1, 0, 0), id="one-bad-ca-still-trusted"),
        pytest.param({"example.org": (GOOD.certificate,), "partner.org": ()}, (1, 0, 1), id="partner-distrusted"),
    ],
)  # fmt: skip
def test_trust_domain_gauge_counts_each_domain_once(
    files: dict[str, tuple[x509.Certificate, ...]], states: tuple[int, int, int]
) -> None:
    """authz_trust_domains{state}: trusted, unusable and distrusted partition the domains."""
    metrics = Metrics()
    bundles = {td: DomainBundle(certificates) for td, certificates in files.items()}
    LiveState(SnapshotHolder(), load_policy_text(POLICY), bundles, metrics=metrics)
    got = tuple(
        metrics.registry.get_sample_value("authz_trust_domains", {"state": state})
        for state in ("trusted", "unusable", "distrusted")
    )
    assert got == states
