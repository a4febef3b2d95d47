"""The demo's certificates: a fresh CA, an SVID per caller, one with two URI SANs, and the
human's certificate as a PKCS#12 file a browser imports to use the approval console.

A fresh CA every run: the demo's state is its own and nothing outside trusts it. Private
keys are written readable by the owner only.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import load_pem_x509_certificate

from authz_server.tools import devcerts

__all__ = [
    "BROWSER_P12",
    "IDS",
    "P12_PASSWORD",
    "TRUST_DOMAIN",
    "mint_demo_certs",
    "write_private",
]

TRUST_DOMAIN = "example.org"
IDS = {
    "envoy": "spiffe://example.org/envoy/front-proxy",
    "frontend": "spiffe://example.org/ns/shop/sa/frontend",
    "agent": "spiffe://example.org/agents/acme/bot",
    "human": "spiffe://example.org/humans/alice",
    # The server's own certificate (DNS SAN localhost): the admin API and the console.
    "authz-admin": "spiffe://example.org/authz-server",
}
#: The human's certificate and key for a browser, and the password the import asks for.
BROWSER_P12 = "human.p12"
P12_PASSWORD = "demo"  # noqa: S105 - printed for the import; guards a throwaway demo key


def mint_demo_certs(certs: Path) -> None:
    """Every demo certificate in `certs` (replacing the previous run's)."""
    dns = {"envoy": ["localhost"], "authz-admin": ["localhost"]}
    devcerts.write_dev_certs(certs, TRUST_DOMAIN, IDS, dns=dns, force=True)
    key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):  # write_dev_certs mints P-256
        raise TypeError(f"{certs / 'ca.key'}: expected an EC key")
    ca_cert = load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    authority = devcerts.Authority(TRUST_DOMAIN, ca_cert, key)
    cert, leaf_key = devcerts.mint_svid(authority, IDS["frontend"], extra_uris=[IDS["agent"]])
    (certs / "two-uris.pem").write_bytes(devcerts.pem(cert))
    write_private(certs / "two-uris.key", devcerts.key_pem(leaf_key))
    _write_browser_p12(certs)


def _write_browser_p12(certs: Path) -> None:
    human = load_pem_x509_certificate((certs / "human.pem").read_bytes())
    key = serialization.load_pem_private_key((certs / "human.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{certs / 'human.key'}: expected an EC key")
    # The legacy PKCS#12 algorithms: every browser and key store imports them.
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303 - the PKCS#12 MAC browsers accept
        .build(P12_PASSWORD.encode())
    )
    data = pkcs12.serialize_key_and_certificates(
        b"demo human (alice)", key, human, None, encryption
    )
    write_private(certs / BROWSER_P12, data)


def write_private(path: Path, data: bytes) -> None:
    """`data` in a file only its owner can read (keys, secrets)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:  # a private key is never world-readable
        handle.write(data)
