"""X509-SVID verification of the forwarded peer certificate: accepted, refused, cached."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote as urlencode

import pytest
from cryptography import x509

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.spiffe_id import SpiffeId, parse_spiffe_id
from authz_server.identity.x509 import CertificateVerifier, verify_svid
from authz_server.tools.devcerts import Authority, mint_ca, mint_svid, pem

NOW = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
API = "spiffe://example.org/ns/prod/sa/api"
TRUST_DOMAIN_ID = "spiffe://example.org"


def ca(trust_domain: str, **kwargs: object) -> Authority:
    """A CA valid for a year around NOW unless told otherwise."""
    kwargs.setdefault("not_before", NOW - timedelta(days=1))
    kwargs.setdefault("not_after", NOW + timedelta(days=365))
    return mint_ca(trust_domain, **kwargs)  # type: ignore[arg-type]


def svid(authority: Authority, spiffe_id: str = API, **kwargs: object) -> x509.Certificate:
    """A leaf valid from an hour before to an hour after NOW unless told otherwise."""
    kwargs.setdefault("not_before", NOW - HOUR)
    kwargs.setdefault("not_after", NOW + HOUR)
    return mint_svid(authority, spiffe_id, **kwargs)[0]  # type: ignore[arg-type]


def envoy_field(*certs: x509.Certificate) -> str:
    """What Envoy puts in `source.certificate`: URL-encoded PEM."""
    return urlencode(b"".join(pem(c) for c in certs).decode(), safe="")


@dataclass
class World:
    ours: Authority = field(default_factory=lambda: ca("example.org"))
    partner: Authority = field(default_factory=lambda: ca("partner.org"))
    stranger: Authority = field(default_factory=lambda: ca("example.org", name="stranger"))

    def __post_init__(self) -> None:
        self.intermediate = mint_ca(
            "example.org",
            issuer=self.ours,
            name="intermediate",
            not_before=NOW - timedelta(days=1),
            not_after=NOW + timedelta(days=30),
        )
        self.bundles = TrustBundles(
            {"example.org": (self.ours.certificate,), "partner.org": (self.partner.certificate,)}
        )


@dataclass
class Attempt:
    certificate: str
    principal: str = API
    bundles: TrustBundles | None = None
    intermediates: Sequence[x509.Certificate] = ()
    now: datetime = NOW


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def run(world: World, attempt: Attempt, verifier: CertificateVerifier | None = None) -> None:
    (verifier or CertificateVerifier()).verify(
        attempt.certificate,
        parse_spiffe_id(attempt.principal),
        attempt.bundles or world.bundles,
        attempt.now,
        attempt.intermediates,
    )


def expired_ca_attempt() -> Attempt:
    """A valid leaf whose trusted CA (the one in the bundle) has expired."""
    old = ca("example.org", not_after=NOW - timedelta(minutes=1))
    return Attempt(
        envoy_field(svid(old)), bundles=TrustBundles({"example.org": (old.certificate,)})
    )


ACCEPTED: list[object] = [
    pytest.param(lambda w: Attempt(envoy_field(svid(w.ours))), id="spire-like-svid"),
    pytest.param(lambda w: Attempt(pem(svid(w.ours)).decode()), id="not-url-encoded"),
    pytest.param(lambda w: Attempt(envoy_field(svid(w.ours, eku="none"))), id="no-eku"),
    pytest.param(lambda w: Attempt(envoy_field(svid(w.ours, eku="both"))), id="eku-both"),
    pytest.param(lambda w: Attempt(envoy_field(svid(w.ours, aki=False))), id="no-aki"),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, dns_names=["api.example.org"]))),
        id="extra-dns-san",
    ),
    pytest.param(
        lambda w: Attempt(
            envoy_field(svid(w.partner, "spiffe://partner.org/billing")),
            principal="spiffe://partner.org/billing",
        ),
        id="partner-id-from-partner-ca",
    ),
    pytest.param(
        lambda w: Attempt(
            envoy_field(svid(w.intermediate)), intermediates=[w.intermediate.certificate]
        ),
        id="through-intermediate",
    ),
    pytest.param(lambda w: Attempt(envoy_field(svid(w.ours)), now=NOW + HOUR), id="at-not-after"),
]


@pytest.mark.parametrize("make", ACCEPTED)
def test_valid_svids_verify(world: World, make: Callable[[World], Attempt]) -> None:
    """A well-formed SVID chaining to its own trust domain's bundle passes."""
    run(world, make(world))


REFUSED: list[object] = [
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.stranger))),
        Reason.CERTIFICATE_INVALID,
        "does not chain to the trust bundle of 'example.org'",
        id="wrong-ca",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.partner, API))),
        Reason.CERTIFICATE_INVALID,
        "does not chain to the trust bundle of 'example.org'",
        id="partner-ca-mints-our-id",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, extra_uris=["spiffe://example.org/admin"]))),
        Reason.CERTIFICATE_INVALID,
        "exactly one URI SAN, this one has 2: 'spiffe://example.org/ns/prod/sa/api', "
        "'spiffe://example.org/admin'",
        id="two-uri-sans",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, "spiffe://Example.org/api"))),
        Reason.CERTIFICATE_INVALID,
        "URI SAN refused: invalid SPIFFE ID 'spiffe://Example.org/api'",
        id="uri-san-not-canonical",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, is_ca=True))),
        Reason.CERTIFICATE_INVALID,
        f"certificate for '{API}' is a CA",
        id="leaf-is-ca",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, key_usage="none"))),
        Reason.CERTIFICATE_INVALID,
        "has no keyUsage extension",
        id="key-usage-missing",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, key_usage="cert_sign"))),
        Reason.CERTIFICATE_INVALID,
        "asserts keyCertSign or cRLSign",
        id="key-usage-cert-sign",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, key_usage_critical=False))),
        Reason.CERTIFICATE_INVALID,
        f"keyUsage of '{API}' is not marked critical",
        id="key-usage-not-critical",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, eku="client_auth"))),
        Reason.CERTIFICATE_INVALID,
        f"extendedKeyUsage of '{API}' lacks id-kp-serverAuth",
        id="eku-client-auth-only",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, eku="server_auth"))),
        Reason.CERTIFICATE_INVALID,
        f"extendedKeyUsage of '{API}' lacks id-kp-clientAuth",
        id="eku-server-auth-only",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, eku="code_signing"))),
        Reason.CERTIFICATE_INVALID,
        f"extendedKeyUsage of '{API}' lacks id-kp-serverAuth and id-kp-clientAuth",
        id="eku-neither",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, TRUST_DOMAIN_ID)), principal=TRUST_DOMAIN_ID),
        Reason.CERTIFICATE_INVALID,
        f"URI SAN refused: SPIFFE ID '{TRUST_DOMAIN_ID}' names a trust domain, not a workload",
        id="bare-trust-domain",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours, TRUST_DOMAIN_ID))),
        Reason.CERTIFICATE_INVALID,
        "names a trust domain, not a workload",
        id="bare-trust-domain-other-principal",
    ),
    pytest.param(
        lambda w: Attempt(
            envoy_field(svid(w.intermediate, TRUST_DOMAIN_ID)),
            principal=TRUST_DOMAIN_ID,
            intermediates=[w.intermediate.certificate],
        ),
        Reason.CERTIFICATE_INVALID,
        "names a trust domain, not a workload",
        id="bare-trust-domain-through-intermediate",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours)), now=NOW + 2 * HOUR),
        Reason.CERTIFICATE_INVALID,
        f"certificate for '{API}' expired at {(NOW + HOUR).isoformat()}",
        id="expired",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours)), now=NOW - 2 * HOUR),
        Reason.CERTIFICATE_INVALID,
        f"is not valid before {(NOW - HOUR).isoformat()}",
        id="not-yet-valid",
    ),
    pytest.param(
        lambda w: expired_ca_attempt(),
        Reason.CERTIFICATE_INVALID,
        "does not chain to the trust bundle of 'example.org': "
        "'validation failed: candidates exhausted: cert is not valid at validation time'",
        id="expired-ca",
    ),
    pytest.param(
        lambda w: Attempt(
            envoy_field(svid(w.ours)), principal="spiffe://example.org/ns/prod/sa/web"
        ),
        Reason.CERTIFICATE_MISMATCH,
        f"certificate URI SAN '{API}' does not match principal 'spiffe://example.org/ns/prod/sa/web'",
        id="principal-mismatch",
    ),
    pytest.param(
        lambda w: Attempt("not a certificate"),
        Reason.CERTIFICATE_INVALID,
        "expected exactly one PEM certificate in the peer certificate, found 0",
        id="garbage",
    ),
    pytest.param(
        lambda w: Attempt(""),
        Reason.CERTIFICATE_INVALID,
        "found 0",
        id="empty",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours), svid(w.ours))),
        Reason.CERTIFICATE_INVALID,
        "found 2",
        id="two-certs-in-field",
    ),
    pytest.param(
        lambda w: Attempt("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        Reason.CERTIFICATE_INVALID,
        "peer certificate does not parse",
        id="broken-pem",
    ),
    pytest.param(
        lambda w: Attempt(
            envoy_field(svid(ca("other.org"), "spiffe://other.org/x")),
            principal="spiffe://other.org/x",
        ),
        Reason.CERTIFICATE_INVALID,
        "trust domain 'other.org' has no trust bundle",
        id="no-bundle-for-trust-domain",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.ours)), bundles=TrustBundles({"example.org": ()})),
        Reason.CERTIFICATE_INVALID,
        "trust domain 'example.org' is distrusted (empty bundle)",
        id="empty-bundle-for-trust-domain",
    ),
    pytest.param(
        lambda w: Attempt(envoy_field(svid(w.intermediate))),
        Reason.CERTIFICATE_INVALID,
        "does not chain to the trust bundle of 'example.org'",
        id="intermediate-not-passed",
    ),
    pytest.param(
        lambda w: Attempt(
            envoy_field(svid(w.intermediate)),
            bundles=TrustBundles({"example.org": (w.partner.certificate,)}),
            intermediates=[w.intermediate.certificate],
        ),
        Reason.CERTIFICATE_INVALID,
        "does not chain",
        id="intermediate-to-untrusted-root",
    ),
]


@pytest.mark.parametrize(("make", "reason", "message"), REFUSED)
def test_bad_certificates_are_refused(
    world: World, make: Callable[[World], Attempt], reason: Reason, message: str
) -> None:
    """Each bad certificate is refused with its exact reason and a message saying why."""
    with pytest.raises(IdentityError) as caught:
        run(world, make(world))
    assert caught.value.reason is reason
    assert message in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)


def test_cache_hit_is_counted(world: World) -> None:
    """The second verification of the same chain, bundles and principal is a cache hit."""
    verifier = CertificateVerifier()
    attempt = Attempt(envoy_field(svid(world.ours)))
    run(world, attempt, verifier)
    run(world, attempt, verifier)
    info = verifier.cache_info()
    assert (info.hits, info.misses, info.currsize) == (1, 1, 1)


def test_cache_never_serves_past_leaf_expiry(world: World) -> None:
    """A cached success stops counting once the leaf expires: the retry is refused."""
    verifier = CertificateVerifier()
    cert = envoy_field(svid(world.ours))
    run(world, Attempt(cert), verifier)
    with pytest.raises(IdentityError) as caught:
        run(world, Attempt(cert, now=NOW + HOUR + timedelta(seconds=1)), verifier)
    assert caught.value.reason is Reason.CERTIFICATE_INVALID
    assert "expired at" in str(caught.value)
    assert verifier.cache_info().currsize == 0


def test_cache_window_is_bounded_by_the_chain(world: World) -> None:
    """An intermediate expiring before the leaf ends the cached window at its own expiry."""
    short = mint_ca(
        "example.org",
        issuer=world.ours,
        not_before=NOW - HOUR,
        not_after=NOW + timedelta(minutes=30),
    )
    verifier = CertificateVerifier()
    attempt = Attempt(envoy_field(svid(short)), intermediates=[short.certificate])
    run(world, attempt, verifier)
    attempt.now = NOW + timedelta(minutes=45)
    with pytest.raises(IdentityError) as caught:
        run(world, attempt, verifier)
    assert "does not chain" in str(caught.value)
    assert verifier.cache_info().hits == 0


def test_cache_is_keyed_on_bundle_generation(world: World) -> None:
    """A new bundle set misses the cache, and one that drops the trust domain refuses."""
    verifier = CertificateVerifier()
    cert = envoy_field(svid(world.ours))
    run(world, Attempt(cert), verifier)
    reloaded = TrustBundles(dict(world.bundles.authorities))
    assert reloaded.generation > world.bundles.generation
    run(world, Attempt(cert, bundles=reloaded), verifier)
    assert verifier.cache_info().misses == 2
    with pytest.raises(IdentityError) as caught:
        run(world, Attempt(cert, bundles=TrustBundles({"partner.org": ()})), verifier)
    assert "trust domain 'example.org' has no trust bundle" in str(caught.value)


def test_cache_is_keyed_on_principal(world: World) -> None:
    """A cached success for one principal is not served for another."""
    verifier = CertificateVerifier()
    cert = envoy_field(svid(world.ours))
    run(world, Attempt(cert), verifier)
    with pytest.raises(IdentityError) as caught:
        run(world, Attempt(cert, principal="spiffe://example.org/other"), verifier)
    assert caught.value.reason is Reason.CERTIFICATE_MISMATCH


def test_failures_are_not_cached(world: World) -> None:
    """A refused certificate is verified again, in full, every time."""
    verifier = CertificateVerifier()
    attempt = Attempt(envoy_field(svid(world.stranger)))
    for _ in range(2):
        with pytest.raises(IdentityError):
            run(world, attempt, verifier)
    info = verifier.cache_info()
    assert (info.hits, info.misses, info.currsize) == (0, 2, 0)


def test_cache_is_bounded_lru(world: World) -> None:
    """The least recently used entry is evicted once the cache is full."""
    verifier = CertificateVerifier(cache_size=2)
    first, second, third = (Attempt(envoy_field(svid(world.ours))) for _ in range(3))
    for attempt in (first, second, first, third):  # `second` is now least recently used
        run(world, attempt, verifier)
    run(world, first, verifier)
    run(world, second, verifier)
    info = verifier.cache_info()
    assert (info.hits, info.misses, info.currsize, info.maxsize) == (2, 4, 2, 2)


def test_zero_cache_size_disables_caching(world: World) -> None:
    """With cache_size=0 every call verifies in full."""
    verifier = CertificateVerifier(cache_size=0)
    attempt = Attempt(envoy_field(svid(world.ours)))
    run(world, attempt, verifier)
    run(world, attempt, verifier)
    assert verifier.cache_info().currsize == 0
    assert verifier.cache_info().misses == 2


def test_verify_svid_returns_the_chain_window(world: World) -> None:
    """The window is the latest not_before and the earliest not_after over the chain."""
    leaf = svid(world.ours, not_after=NOW + timedelta(days=400))
    start, end = verify_svid(
        envoy_field(leaf), SpiffeId("example.org", ("ns", "prod", "sa", "api")), world.bundles, NOW
    )
    assert start == NOW - HOUR
    assert end == world.ours.certificate.not_valid_after_utc


def test_naive_time_is_a_programming_error(world: World) -> None:
    """A naive `now` is refused loudly instead of being guessed to be UTC."""
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_svid(
            envoy_field(svid(world.ours)),
            parse_spiffe_id(API),
            world.bundles,
            NOW.replace(tzinfo=None),
        )
