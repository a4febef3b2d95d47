"""Workload API updates become plain values; an empty federated bundle distrusts."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from spiffe.bundle.x509_bundle.x509_bundle import X509Bundle
from spiffe.spiffe_id.spiffe_id import TrustDomain
from spiffe.svid.x509_svid import X509Svid
from spiffe.workloadapi.x509_context import X509Context

from authz_server.identity.workload_api import _Client, update_from_context
from authz_server.tools import devcerts
from tests.workload_api_server import Svid, _der


def test_update_carries_svid_and_every_bundle() -> None:
    """Own and federated bundles by trust domain; an empty one has no authorities."""
    ca, partner = devcerts.mint_ca("example.org"), devcerts.mint_ca("partner.org")
    svid = Svid.mint(ca, "spiffe://example.org/authz")
    bundle_set = _Client._create_x509_bundle_set(
        {"spiffe://partner.org": _der([partner.certificate]), "spiffe://gone.org": b""}
    )
    bundle_set.put(X509Bundle(TrustDomain("example.org"), {ca.certificate}))
    key = svid.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    spiffe_svid = X509Svid.parse_raw(_der(svid.chain), key)
    update = update_from_context(X509Context([spiffe_svid], bundle_set))
    assert update.bundles == {
        "example.org": (ca.certificate,),
        "partner.org": (partner.certificate,),
        "gone.org": (),
    }
    assert update.svid.spiffe_id == "spiffe://example.org/authz"
    assert update.svid.chain == (svid.chain[0],)
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert update.svid.private_key.public_key().public_bytes(*public) == (
        svid.key.public_key().public_bytes(*public)
    )
