"""JWT-SVIDs: compact JWS checked against the JWT bundle of the sub's trust domain."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.jwt_svid import JwtSvidSettings, JwtSvidVerifier, bearer_token
from authz_server.identity.model import Identity, IdentityConfig
from authz_server.identity.spiffe_id import parse_spiffe_id
from tests.unit.identity.sources_support import (
    AUDIENCE,
    FRONTEND,
    NOW,
    PARTNER_APP,
    TRUST_DOMAIN_ID,
    World,
    b64json,
    b64url,
    claims,
    identity_config,
    jwt,
    public_pem,
)

_EXP = int(NOW.timestamp())


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _config(**config: Any) -> tuple[IdentityConfig, JwtSvidSettings]:
    """The identity section and the `jwt_svid` settings in it."""
    identity = identity_config(**config)
    settings = identity.settings["jwt_svid"]
    assert isinstance(settings, JwtSvidSettings)
    return identity, settings


def _verify(world: World, token: str, **config: Any) -> Identity:
    return JwtSvidVerifier().verify(token, *_config(**config), world.bundles, NOW)


Make = Callable[[World], str]


GOOD: list[Any] = [
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"]), FRONTEND, id="es256"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es384"], alg="ES384", kid="ours-es384"), FRONTEND, id="es384"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-rsa"], alg="RS256", kid="ours-rsa"), FRONTEND, id="rs256"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-rsa"], alg="RS512", kid="ours-rsa"), FRONTEND, id="rs512"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-rsa"], alg="PS256", kid="ours-rsa"), FRONTEND, id="ps256"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-rsa"], alg="PS384", kid="ours-rsa"), FRONTEND, id="ps384"),
    pytest.param(lambda w: jwt(w.keys.partner["partner-es256"], kid="partner-es256", payload=claims(sub=PARTNER_APP)), PARTNER_APP, id="partner-with-its-own-key"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(aud=AUDIENCE)), FRONTEND, id="aud-string"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(aud=["other", AUDIENCE])), FRONTEND, id="aud-one-of-many"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], header={"typ": "JOSE"}), FRONTEND, id="typ-jose"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], header={"typ": None}), FRONTEND, id="no-typ"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(exp=_EXP - 60)), FRONTEND, id="expired-within-leeway"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(nbf=_EXP + 60)), FRONTEND, id="nbf-within-leeway"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(exp=_EXP + 0.5)), FRONTEND, id="exp-float"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "subject"), GOOD)
def test_accepted(world: World, make: Make, subject: str) -> None:
    """A token signed by a key of its sub's own trust domain, for our audience, in time."""
    assert _verify(world, make(world)) == Identity(parse_spiffe_id(subject), "jwt_svid", False)


def _hs256(w: World) -> str:
    """HS256 keyed with the bundle's public key: the classic algorithm-confusion forgery."""
    return jwt(public_pem(w.keys.ours["ours-es256"]), alg="HS256")


def _alg_none(w: World) -> str:
    return f"{b64json({'alg': 'none', 'typ': 'JWT', 'kid': 'ours-es256'})}.{b64json(claims())}."


def _flip_signature(token: str) -> str:
    head, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[5] ^= 0x01
    return f"{head}.{body}.{b64url(bytes(raw))}"


def _swap_payload(w: World) -> str:
    head, _, signature = jwt(w.keys.ours["ours-es256"]).split(".")
    return f"{head}.{b64json(claims(sub='spiffe://example.org/humans/admin'))}.{signature}"


def _raw(header: bytes, payload: bytes) -> str:
    return f"{b64url(header)}.{b64url(payload)}.{b64url(b'x' * 64)}"


REFUSED: list[Any] = [
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(aud=["billing"])), Reason.CERTIFICATE_INVALID, "aud 'billing' names none of identity.jwt_svid.audiences", id="wrong-aud"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(exp=_EXP - 61)), Reason.CERTIFICATE_INVALID, "expired at 2031-03-04T11:58:59+00:00", id="expired"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(nbf=_EXP + 61)), Reason.CERTIFICATE_INVALID, "not valid before", id="not-yet-valid"),
    pytest.param(lambda w: jwt(w.keys.partner["partner-es256"], kid="partner-es256"), Reason.CERTIFICATE_INVALID, "kid 'partner-es256' is not a JWT-SVID key of 'example.org'", id="other-domains-key"),
    pytest.param(lambda w: jwt(w.keys.partner["shared"], kid="shared"), Reason.CERTIFICATE_INVALID, "bad signature", id="other-domains-key-same-kid"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], kid="retired"), Reason.CERTIFICATE_INVALID, "kid 'retired' is not a JWT-SVID key of 'example.org'", id="unknown-kid"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], kid=None), Reason.CERTIFICATE_INVALID, "the header has no kid", id="missing-kid"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], kid=""), Reason.CERTIFICATE_INVALID, "the header has no kid", id="empty-kid"),
    pytest.param(_alg_none, Reason.CERTIFICATE_INVALID, "alg 'none' is not allowed", id="alg-none"),
    pytest.param(_hs256, Reason.CERTIFICATE_INVALID, "alg 'HS256' is not allowed", id="hs256"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], header={"alg": "EdDSA"}), Reason.CERTIFICATE_INVALID, "alg 'EdDSA' is not allowed", id="alg-not-in-list"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], header={"alg": ["ES256"]}), Reason.CERTIFICATE_INVALID, "is not allowed", id="alg-not-a-string"),
    pytest.param(lambda w: _flip_signature(jwt(w.keys.ours["ours-es256"])), Reason.CERTIFICATE_INVALID, "bad signature", id="bad-signature-es"),
    pytest.param(lambda w: _flip_signature(jwt(w.keys.ours["ours-rsa"], alg="RS256", kid="ours-rsa")), Reason.CERTIFICATE_INVALID, "bad signature", id="bad-signature-rsa"),
    pytest.param(_swap_payload, Reason.CERTIFICATE_INVALID, "bad signature", id="payload-swapped"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-rsa"], alg="PS256", kid="ours-rsa").replace("UFMyNTY", "UlMyNTY"), Reason.CERTIFICATE_INVALID, "bad signature", id="ps-relabelled-rs"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], header={"kid": "ours-rsa"}), Reason.CERTIFICATE_INVALID, "the key for this kid does not fit alg ES256", id="ec-alg-rsa-key"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es384"], alg="ES384", kid="ours-es384", header={"alg": "ES256"}), Reason.CERTIFICATE_INVALID, "the key for this kid does not fit alg ES256", id="curve-mismatch"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-rsa"], alg="RS256", kid="ours-rsa", header={"kid": "ours-es256"}), Reason.CERTIFICATE_INVALID, "the key for this kid does not fit alg RS256", id="rsa-alg-ec-key"),
    pytest.param(lambda w: jwt(w.keys.ours["weak-rsa"], alg="RS256", kid="weak-rsa"), Reason.CERTIFICATE_INVALID, "does not fit alg RS256", id="rsa-1024"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], header={"typ": "at+jwt"}), Reason.CERTIFICATE_INVALID, "typ 'at+jwt' is not JWT or JOSE", id="wrong-typ"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], header={"crit": ["b64"]}), Reason.CERTIFICATE_INVALID, "crit extensions", id="crit"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(sub=None)), Reason.INVALID_SPIFFE_ID, "claim 'sub' is missing", id="no-sub"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(sub="spiffe://Example.org/x")), Reason.INVALID_SPIFFE_ID, "invalid SPIFFE ID", id="sub-not-canonical"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(sub=TRUST_DOMAIN_ID)), Reason.INVALID_SPIFFE_ID, "SPIFFE ID 'spiffe://example.org' names a trust domain, not a workload", id="sub-bare-trust-domain"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(sub="spiffe://evil.org/x")), Reason.UNTRUSTED_TRUST_DOMAIN, "'evil.org' is not trusted", id="sub-untrusted-domain"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(exp=None)), Reason.CERTIFICATE_INVALID, "claim 'exp' is required", id="no-exp"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(exp="2099")), Reason.CERTIFICATE_INVALID, "claim 'exp' is not a number", id="exp-string"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(exp=True)), Reason.CERTIFICATE_INVALID, "claim 'exp' is not a number", id="exp-bool"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(exp=10**400)), Reason.CERTIFICATE_INVALID, "claim 'exp' is not a finite number", id="exp-huge"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(aud=None)), Reason.CERTIFICATE_INVALID, "claim 'aud' must be", id="no-aud"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(aud=[])), Reason.CERTIFICATE_INVALID, "claim 'aud' must be", id="aud-empty"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"], payload=claims(aud=[1])), Reason.CERTIFICATE_INVALID, "claim 'aud' must be", id="aud-number"),
    pytest.param(lambda w: "a.b", Reason.CERTIFICATE_INVALID, "a compact JWS has 3 parts, this token has 2", id="two-parts"),
    pytest.param(lambda w: "a.b.c.d.e", Reason.CERTIFICATE_INVALID, "this token has 5", id="jwe-shape"),
    pytest.param(lambda w: "eyJ=.e30.sig", Reason.CERTIFICATE_INVALID, "the header is not base64url without padding", id="padding"),
    pytest.param(lambda w: "e+J9.e30.sig", Reason.CERTIFICATE_INVALID, "the header is not base64url without padding", id="base64-not-url"),
    pytest.param(lambda w: "e30.e30.", Reason.CERTIFICATE_INVALID, "alg 'None' is not allowed", id="empty-header-object"),
    pytest.param(lambda w: _raw(b"[1]", b"{}"), Reason.CERTIFICATE_INVALID, "the header is not a JSON object", id="header-array"),
    pytest.param(lambda w: _raw(b"\xff", b"{}"), Reason.CERTIFICATE_INVALID, "the header is not a UTF-8 JSON object", id="header-not-utf8"),
    pytest.param(lambda w: _raw(b'{"alg":"ES256","alg":"none"}', b"{}"), Reason.CERTIFICATE_INVALID, "duplicate key 'alg'", id="duplicate-header-key"),
    pytest.param(lambda w: _raw(b'{"alg":"ES256","kid":"ours-es256"}', b'{"sub":"spiffe://example.org/a","sub":"spiffe://example.org/b"}'), Reason.CERTIFICATE_INVALID, "duplicate key 'sub'", id="duplicate-claim"),
    pytest.param(lambda w: _raw(b'{"alg":"ES256","kid":"ours-es256"}', b'{"exp":NaN}'), Reason.CERTIFICATE_INVALID, "NaN is not JSON", id="nan"),
    pytest.param(lambda w: _raw(b'{"alg":"ES256","kid":"ours-es256"}', b"[" * 5000 + b"]" * 5000), Reason.CERTIFICATE_INVALID, "the payload is not a UTF-8 JSON object", id="deep-nesting"),
    pytest.param(lambda w: jwt(w.keys.ours["ours-es256"])[:-2], Reason.CERTIFICATE_INVALID, "bad signature", id="short-es-signature"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "reason", "message"), REFUSED)
def test_refused(world: World, make: Make, reason: Reason, message: str) -> None:
    """Each bad token is a deny with its identity reason (docs/concepts/identity.md#verification)
    and a message naming the problem."""
    with pytest.raises(IdentityError) as raised:
        _verify(world, make(world))
    assert raised.value.reason is reason
    assert message in str(raised.value)


def test_token_is_never_in_the_message(world: World) -> None:
    """Error messages quote claims, never the bearer token or its parts."""
    token = jwt(world.keys.ours["ours-es256"], payload=claims(aud=["billing"]))
    with pytest.raises(IdentityError) as raised:
        _verify(world, token)
    assert all(part not in str(raised.value) for part in token.split("."))


def test_cache_still_checks_time_and_audience(world: World) -> None:
    """A cached signature never outlives exp, nor a change of the policy's audiences."""
    verifier = JwtSvidVerifier()
    token = jwt(world.keys.ours["ours-es256"])
    assert verifier.verify(token, *_config(), world.bundles, NOW).source == "jwt_svid"
    later = NOW + timedelta(minutes=7)
    with pytest.raises(IdentityError, match="expired"):
        verifier.verify(token, *_config(), world.bundles, later)
    with pytest.raises(IdentityError, match="names none of"):
        verifier.verify(token, *_config(audiences=("billing",)), world.bundles, NOW)


def test_cache_follows_the_bundles(world: World) -> None:
    """A key removed from the bundle stops verifying at once (new bundle generation)."""
    verifier = JwtSvidVerifier()
    token = jwt(world.keys.ours["ours-es256"])
    verifier.verify(token, *_config(), world.bundles, NOW)
    without = TrustBundles(world.bundles.authorities, jwt_authorities={"example.org": {}})
    with pytest.raises(IdentityError, match="has no JWT-SVID keys"):
        verifier.verify(token, *_config(), without, NOW)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("Basic dXNlcjpwdw==", None, id="other-scheme"),
        pytest.param("Bearer abc.def.ghi", "abc.def.ghi", id="bearer"),
        pytest.param("bearer   abc.def.ghi", "abc.def.ghi", id="case-and-spaces"),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    """Only a Bearer credential is a JWT-SVID candidate; other schemes are absent."""
    assert bearer_token(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer", id="no-token"),
        pytest.param("Bearer ", id="blank-token"),
        pytest.param("Bearer a.b.c,Bearer d.e.f", id="repeated-header"),
        pytest.param("Bearer a.b.c d", id="two-tokens"),
        pytest.param("Bearer " + "a" * 9000, id="too-long"),
    ],
)
def test_bearer_token_malformed(header: str) -> None:
    """A Bearer header that is not one compact JWS is sent but broken: a deny, not absent."""
    with pytest.raises(IdentityError) as raised:
        bearer_token(header)
    assert raised.value.reason is Reason.CERTIFICATE_INVALID


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=300)
    | st.lists(
        st.sampled_from(["e30", "eyJhbGciOiJFUzI1NiJ9", ".", "=", "A", "_-"]), max_size=12
    ).map("".join)
)
def test_never_raises_anything_else(world: World, token: str) -> None:
    """On any token the verifier returns an identity or raises IdentityError."""
    with contextlib.suppress(IdentityError):
        assert _verify(world, token).source == "jwt_svid"
