"""The XFCC header: the strict parser, and the element a trusted proxy wrote
(docs/concepts/identity.md#sources)."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError
from authz_server.identity.model import Identity, IdentityConfig
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.identity.x509 import CertificateVerifier
from authz_server.identity.xfcc import forwarded_identity
from tests.unit.identity.sources_support import (
    ADMIN,
    FRONTEND,
    HOUR,
    NOW,
    TRUST_DOMAIN_ID,
    World,
    identity_config,
    svid,
    url_pem,
    xfcc,
)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _resolve(world: World, header: str, config: IdentityConfig | None = None) -> Identity:
    verifier = CertificateVerifier()
    return forwarded_identity(header, config or identity_config(), world.bundles, verifier, NOW)


def _leaf(world: World, spiffe_id: str = FRONTEND) -> Any:
    return svid(world.ours, spiffe_id)


GOOD: list[Any] = [
    pytest.param(lambda w: xfcc(FRONTEND), False, id="uri-only"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=_leaf(w)), True, id="with-cert-and-hash"),
    pytest.param(lambda w: f"URI={ADMIN}," + xfcc(FRONTEND), False, id="only-the-last-element"),
    pytest.param(lambda w: xfcc(FRONTEND, subject=f'CN=x;URI={ADMIN}'), False, id="quoted-injection-ignored"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "verified"), GOOD)
def test_forwarded_identity(world: World, make: Callable[[World], str], verified: bool) -> None:
    """The last element's single URI is the identity; its certificate verified when sent."""
    identity = _resolve(world, make(world))
    assert identity == Identity(parse_spiffe_id(FRONTEND), "xfcc", verified)


def test_chain_supplies_intermediates(world: World) -> None:
    """A leaf issued by an intermediate verifies with the intermediate from Chain=."""
    leaf = svid(world.intermediate, FRONTEND)
    header = xfcc(FRONTEND, cert=leaf, chain=(leaf, world.intermediate.certificate))
    assert _resolve(world, header).certificate_verified is True


def test_chain_alone_gives_the_leaf(world: World) -> None:
    """Without Cert=, the first certificate of Chain= is the leaf (Envoy's order)."""
    leaf = svid(world.intermediate, FRONTEND)
    header = xfcc(FRONTEND, chain=(leaf, world.intermediate.certificate), hash_of=leaf)
    assert _resolve(world, header).certificate_verified is True


REFUSED: list[Any] = [
    pytest.param(lambda w: xfcc(None), None, Reason.INVALID_SPIFFE_ID, "the trusted proxy's element has 0 URI values", id="no-uri"),
    pytest.param(lambda w: xfcc(FRONTEND) + f";URI={ADMIN}", None, Reason.INVALID_SPIFFE_ID, "the trusted proxy's element has 2 URI values", id="two-uris"),
    pytest.param(lambda w: xfcc(f"{FRONTEND};URI={ADMIN}"), None, Reason.INVALID_SPIFFE_ID, "the trusted proxy's element has 2 URI values", id="unquoted-uri-injection"),
    pytest.param(lambda w: xfcc(""), None, Reason.INVALID_SPIFFE_ID, "invalid SPIFFE ID ''", id="empty-uri"),
    pytest.param(lambda w: xfcc("spiffe://example.org/a/../admin"), None, Reason.INVALID_SPIFFE_ID, "'.' and '..' segments", id="dot-segments"),
    pytest.param(lambda w: xfcc("spiffe://evil.org/x"), None, Reason.UNTRUSTED_TRUST_DOMAIN, "'evil.org' is not trusted", id="untrusted-domain"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=_leaf(w), hash_of=_leaf(w)), None, Reason.CERTIFICATE_MISMATCH, "Hash is not the sha256", id="hash-mismatch"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=_leaf(w)).replace("Hash=", "Hash=zz"), None, Reason.CERTIFICATE_INVALID, "is not a hex sha256", id="hash-malformed"),
    pytest.param(lambda w: xfcc(ADMIN, cert=_leaf(w)), None, Reason.CERTIFICATE_MISMATCH, "does not match principal", id="cert-of-someone-else"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=svid(w.stranger, FRONTEND)), None, Reason.CERTIFICATE_INVALID, "does not chain", id="cert-from-stranger-ca"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=svid(w.partner, FRONTEND)), None, Reason.CERTIFICATE_INVALID, "does not chain", id="partner-ca-mints-our-id"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=svid(w.intermediate, FRONTEND)), None, Reason.CERTIFICATE_INVALID, "does not chain", id="intermediate-missing"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=_leaf(w), chain=(_leaf(w),)), None, Reason.CERTIFICATE_MISMATCH, "Chain does not begin with the Cert", id="chain-of-another-leaf"),
    pytest.param(lambda w: xfcc(FRONTEND) + ';Chain="garbage"', None, Reason.CERTIFICATE_INVALID, "Chain is not a sequence of PEM certificates", id="chain-garbage"),
    pytest.param(lambda w: xfcc(FRONTEND) + ';Cert="garbage"', None, Reason.CERTIFICATE_INVALID, "Cert is not exactly one PEM certificate", id="cert-garbage"),
    pytest.param(lambda w: xfcc(FRONTEND) + f';Cert="{url_pem(_leaf(w), _leaf(w))}"', None, Reason.CERTIFICATE_INVALID, "Cert is not exactly one PEM certificate", id="cert-two-pems"),
    pytest.param(lambda w: xfcc(FRONTEND) + ';Cert="%FF"', None, Reason.CERTIFICATE_INVALID, "Cert is not URL-encoded UTF-8", id="cert-bad-encoding"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=svid(w.ours, FRONTEND, not_before=NOW - 2 * HOUR, not_after=NOW - HOUR)), None, Reason.CERTIFICATE_INVALID, "expired", id="cert-expired"),
    pytest.param(lambda w: xfcc(FRONTEND), identity_config(require_certificate=True), Reason.CERTIFICATE_REQUIRED, "requires the forwarded certificate", id="certificate-required"),
    pytest.param(lambda w: "URI=a;;", None, Reason.INVALID_SPIFFE_ID, "expected KEY=VALUE", id="malformed"),
    pytest.param(lambda w: xfcc(TRUST_DOMAIN_ID), None, Reason.INVALID_SPIFFE_ID, "names a trust domain, not a workload", id="uri-bare-trust-domain"),
    pytest.param(lambda w: xfcc(TRUST_DOMAIN_ID, cert=_leaf(w, TRUST_DOMAIN_ID)), None, Reason.INVALID_SPIFFE_ID, "names a trust domain, not a workload", id="uri-and-cert-bare-trust-domain"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=_leaf(w, TRUST_DOMAIN_ID)), None, Reason.CERTIFICATE_INVALID, "URI SAN refused: SPIFFE ID 'spiffe://example.org' names a trust domain", id="cert-bare-trust-domain"),
    pytest.param(lambda w: xfcc(FRONTEND, chain=(_leaf(w, TRUST_DOMAIN_ID),)), None, Reason.CERTIFICATE_INVALID, "names a trust domain, not a workload", id="chain-leaf-bare-trust-domain"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=svid(w.ours, FRONTEND, eku="client_auth")), None, Reason.CERTIFICATE_INVALID, "extendedKeyUsage of 'spiffe://example.org/ns/shop/sa/frontend' lacks id-kp-serverAuth", id="cert-eku-client-auth-only"),
    pytest.param(lambda w: xfcc(FRONTEND, cert=svid(w.ours, FRONTEND, key_usage_critical=False)), None, Reason.CERTIFICATE_INVALID, "is not marked critical", id="cert-key-usage-not-critical"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "config", "reason", "message"), REFUSED)
def test_forwarded_identity_refused(
    world: World,
    make: Callable[[World], str],
    config: IdentityConfig | None,
    reason: Reason,
    message: str,
) -> None:
    """Each problem in the trusted element is a deny with its identity reason
    (docs/concepts/identity.md#verification)."""
    with pytest.raises(IdentityError) as raised:
        _resolve(world, make(world), config)
    assert raised.value.reason is reason
    assert message in str(raised.value)
