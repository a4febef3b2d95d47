"""The XFCC header: the strict parser, and the element a trusted proxy wrote
(docs/concepts/identity.md#sources)."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError
from authz_server.identity.model import Identity, IdentityConfig
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.identity.x509 import CertificateVerifier
from authz_server.identity.xfcc import (
    KEYS,
    MAX_ELEMENTS,
    MAX_HEADER_CHARS,
    XfccElement,
    XfccError,
    forwarded_identity,
    parse_xfcc,
)
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

# --- the parser ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("URI=spiffe://example.org/a", [[("uri", "spiffe://example.org/a")]], id="one-pair"),
        pytest.param("By=spiffe://x/p;Hash=ab12;URI=spiffe://x/c", [[("by", "spiffe://x/p"), ("hash", "ab12"), ("uri", "spiffe://x/c")]], id="envoy-order"),
        pytest.param("uri=a;HASH=b;Dns=c", [[("uri", "a"), ("hash", "b"), ("dns", "c")]], id="keys-case-insensitive"),
        pytest.param("URI=a,URI=b", [[("uri", "a")], [("uri", "b")]], id="two-elements"),
        pytest.param("URI=", [[("uri", "")]], id="empty-value"),
        pytest.param('Subject="CN=\\"x\\",O=y;URI=z"', [[("subject", 'CN="x",O=y;URI=z')]], id="quoted-specials"),
        pytest.param('Subject="CN=a\\,b"', [[("subject", "CN=a\\,b")]], id="rfc4514-escape-kept"),
        pytest.param('Subject="a\\\\"', [[("subject", "a\\")]], id="escaped-backslash"),
        pytest.param('Subject="";URI=a', [[("subject", ""), ("uri", "a")]], id="empty-quoted"),
        pytest.param("URI=a;URI=b;DNS=c;DNS=d;By=e;By=f", [[("uri", "a"), ("uri", "b"), ("dns", "c"), ("dns", "d"), ("by", "e"), ("by", "f")]], id="repeatable-keys"),
        pytest.param('Subject="Grüße"', [[("subject", "Grüße")]], id="utf8-in-quotes"),
    ],
)  # fmt: skip
def test_parses(header: str, expected: list[list[tuple[str, str]]]) -> None:
    """Envoy's grammar: elements by ',', pairs by ';', quoted values with escapes."""
    assert [list(e.pairs) for e in parse_xfcc(header)] == expected


@pytest.mark.parametrize(
    ("header", "message"),
    [
        pytest.param("", "expected KEY=VALUE at character 0: end of header", id="empty"),
        pytest.param("URI=a,", "expected KEY=VALUE at character 6: end of header", id="trailing-comma"),
        pytest.param(",URI=a", "expected KEY=VALUE at character 0: ',URI=a'", id="leading-comma"),
        pytest.param("URI=a;;Hash=b", "expected KEY=VALUE at character 6: ';Hash=b'", id="empty-pair"),
        pytest.param("URI=a,,URI=b", "expected KEY=VALUE at character 6: ',URI=b'", id="empty-element"),
        pytest.param("Foo=bar", "unknown key 'Foo' at character 0", id="unknown-key"),
        pytest.param("URI", "expected KEY=VALUE at character 0: 'URI'", id="no-equals"),
        pytest.param("=a", "expected KEY=VALUE at character 0: '=a'", id="no-key"),
        pytest.param("URI=a b", "expected ';' or ',' at character 5: ' b'", id="space-in-bare"),
        pytest.param("URI=a, URI=b", "expected KEY=VALUE at character 6: ' URI=b'", id="space-after-comma"),
        pytest.param("URI=a=b", "expected ';' or ',' at character 5: '=b'", id="equals-in-bare"),
        pytest.param('URI="abc', "expected ';' or ',' at character 4: '\"abc'", id="unterminated-quote"),
        pytest.param('Subject="a"x', "expected ';' or ',' at character 11: 'x'", id="text-after-quote"),
        pytest.param('Subject="a\\"', "expected ';' or ',' at character 8: '\"a\\\\\"'", id="escaped-closing-quote"),
        pytest.param("URI=a\\b", "expected ';' or ',' at character 5: '\\\\b'", id="backslash-in-bare"),
        pytest.param("URI=a\n", "expected ';' or ',' at character 5: '\\n'", id="newline"),
        pytest.param('Subject="a\tb"', "expected ';' or ',' at character 8: '\"a\\tb\"'", id="control-in-quotes"),
        pytest.param("Hash=a;Hash=b", "'hash' appears twice in element 1", id="hash-twice"),
        pytest.param("URI=x,Cert=a;cert=b", "'cert' appears twice in element 2", id="cert-twice"),
        pytest.param('Subject="a";Subject="b"', "'subject' appears twice in element 1", id="subject-twice"),
        pytest.param("URI=a;" * 65 + "URI=b", "more than 64 pairs in element 1", id="too-many-pairs"),
        pytest.param(",".join(["URI=a"] * (MAX_ELEMENTS + 1)), f"more than {MAX_ELEMENTS} elements", id="too-many-elements"),
        pytest.param("URI=" + "a" * MAX_HEADER_CHARS, f"longer than {MAX_HEADER_CHARS} characters", id="too-long"),
    ],
)  # fmt: skip
def test_rejects(header: str, message: str) -> None:
    """Anything outside the grammar rejects the whole header, saying where."""
    with pytest.raises(XfccError) as raised:
        parse_xfcc(header)
    assert raised.value.reason is Reason.INVALID_SPIFFE_ID
    assert str(raised.value) == f"x-forwarded-client-cert: {message}"


def test_quoted_uri_injection_is_a_value() -> None:
    """`;URI=` inside a quoted Subject is part of the Subject, never a second URI."""
    (element,) = parse_xfcc(xfcc(FRONTEND, subject=f'CN=x";URI={ADMIN};x="'))
    assert element.values("uri") == (FRONTEND,)
    assert element.value("subject") == f'CN=x";URI={ADMIN};x="'


_SPECIALS = st.sampled_from(
    [",", ";", "=", '"', "\\", " ", "\t", "\n", "\x00", "é", "URI=", "Cert=", "By=", '\\"', "%0A"]
)
_HEADER_TEXT = st.lists(st.one_of(_SPECIALS, st.text(max_size=8)), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), _HEADER_TEXT))
def test_never_raises_anything_else(header: str) -> None:
    """On any input the parser returns elements or raises its own XfccError."""
    try:
        elements = parse_xfcc(header)
    except XfccError:
        return
    assert elements and all(isinstance(e, XfccElement) and e.pairs for e in elements)
    assert all(key in KEYS for e in elements for key, _ in e.pairs)


_VALUE = st.text(
    st.characters(
        blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in (*range(32), 127)]
    ),
    max_size=12,
)
_PAIR = st.tuples(st.sampled_from(["by", "uri", "dns"]), _VALUE)
_ELEMENTS = st.lists(st.lists(_PAIR, min_size=1, max_size=5), min_size=1, max_size=4)


def _render(value: str) -> str:
    bare = value and all(c not in ',;="\\' and not c.isspace() for c in value)
    return (
        value
        if bare or value == ""
        else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    )


@settings(max_examples=300, deadline=None)
@given(_ELEMENTS, st.sampled_from([str.lower, str.upper, str.title]))
def test_round_trips_exactly(
    elements: list[list[tuple[str, str]]], case: Callable[[str], str]
) -> None:
    """Whatever a proxy writes with Envoy's quoting parses back to exactly its pairs."""
    header = ",".join(
        ";".join(f"{case(k)}={_render(v)}" for k, v in element) for element in elements
    )
    assert [list(e.pairs) for e in parse_xfcc(header)] == elements


# --- the trusted proxy's element ---------------------------------------------------------


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
