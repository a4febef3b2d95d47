"""Admin callers are held to the same X509-SVID leaf rules as Check peers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cryptography import x509

from authz_server.admin.auth import Caller, Refused, authenticate
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.tools.devcerts import Authority, mint_ca, mint_svid, pem

NOW = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
ALICE = "spiffe://example.org/humans/alice"
TRUST_DOMAIN_ID = "spiffe://example.org"

CA = mint_ca("example.org", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=365))
BUNDLES = TrustBundles({"example.org": (CA.certificate,)})


def svid(spiffe_id: str = ALICE, authority: Authority = CA, **kwargs: Any) -> x509.Certificate:
    """A leaf valid from an hour before to an hour after NOW unless told otherwise."""
    kwargs.setdefault("not_before", NOW - HOUR)
    kwargs.setdefault("not_after", NOW + HOUR)
    return mint_svid(authority, spiffe_id, **kwargs)[0]


def _authenticate(leaf: x509.Certificate) -> Caller:
    """What grpc's auth context holds for a TLS peer that sent `leaf`."""
    auth = {"x509_pem_cert": [pem(leaf)], "x509_pem_cert_chain": [pem(leaf)]}
    return authenticate(auth, BUNDLES, frozenset({"example.org"}), NOW)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: svid(), id="spire-like"),
        pytest.param(lambda: svid(eku="none"), id="no-eku"),
    ],
)
def test_valid_admin_svid_authenticates(make: Callable[[], x509.Certificate]) -> None:
    """A well-formed SVID of a trusted domain is the caller."""
    assert _authenticate(make()) == Caller(parse_spiffe_id(ALICE))


REFUSED: list[Any] = [
    pytest.param(lambda: svid(TRUST_DOMAIN_ID), "SPIFFE ID 'spiffe://example.org' names a trust domain, not a workload", id="bare-trust-domain"),
    pytest.param(lambda: svid(eku="client_auth"), f"extendedKeyUsage of '{ALICE}' lacks id-kp-serverAuth", id="eku-client-auth-only"),
    pytest.param(lambda: svid(eku="server_auth"), f"extendedKeyUsage of '{ALICE}' lacks id-kp-clientAuth", id="eku-server-auth-only"),
    pytest.param(lambda: svid(key_usage_critical=False), f"keyUsage of '{ALICE}' is not marked critical", id="key-usage-not-critical"),
    pytest.param(lambda: svid(key_usage="none"), "has no keyUsage extension", id="key-usage-missing"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "message"), REFUSED)
def test_bad_admin_svid_is_unauthenticated(
    make: Callable[[], x509.Certificate], message: str
) -> None:
    """A leaf breaking an X509-SVID rule never becomes an admin caller."""
    with pytest.raises(Refused) as refused:
        _authenticate(make())
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.message.startswith("client certificate rejected: ")
    assert message in refused.value.message
