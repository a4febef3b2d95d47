"""`identity.sources`, `identity.xfcc` and `identity.jwt_svid` in policy files
(docs/concepts/identity.md#sources)."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import pytest

from authz_server.core.errors import PolicyError
from authz_server.identity.jwt_svid import JwtSvidSettings
from authz_server.identity.xfcc import XfccSettings
from authz_server.policy.load import load_policy_text

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org, partner.org]\n"  # lines 1-3
XFCC = "  xfcc: {trusted_proxies: ['spiffe://example.org/gateway/*']}\n"
JWT = "  jwt_svid: {audiences: [orders, billing]}\n"


def _issues(text: str) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(PolicyError) as raised:
        load_policy_text(text, "p.yaml")
    return [(i.line, i.field, i.message) for i in raised.value.issues]


@pytest.mark.parametrize(
    ("text", "sources", "proxies", "audiences"),
    [
        pytest.param(HEADER, ("peer",), (), set(), id="default"),
        pytest.param(HEADER + "  sources: [xfcc, peer]\n" + XFCC, ("xfcc", "peer"), ("spiffe://example.org/gateway/*",), set(), id="xfcc-then-peer"),
        pytest.param(HEADER + "  sources: [jwt_svid]\n" + JWT, ("jwt_svid",), (), {"orders", "billing"}, id="jwt-only"),
        pytest.param(HEADER + "  sources: [peer, jwt_svid, xfcc]\n" + JWT + XFCC, ("peer", "jwt_svid", "xfcc"), ("spiffe://example.org/gateway/*",), {"orders", "billing"}, id="all-three-in-order"),
    ],
)  # fmt: skip
def test_accepted(
    text: str, sources: tuple[str, ...], proxies: tuple[str, ...], audiences: set[str]
) -> None:
    """The sources keep the policy's order; each source's settings are compiled."""
    identity = load_policy_text(text).identity
    assert identity.sources == sources
    assert set(identity.settings) == set(sources) - {"peer"}
    xfcc, jwt = identity.settings.get("xfcc"), identity.settings.get("jwt_svid")
    got = tuple(p.text for p in xfcc.trusted_proxies) if isinstance(xfcc, XfccSettings) else ()
    assert got == proxies
    assert (jwt.audiences if isinstance(jwt, JwtSvidSettings) else set()) == audiences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(HEADER + "  sources: [peer, xfcc]\n", [(4, "identity.sources[1]", "source 'xfcc' needs identity.xfcc.trusted_proxies")], id="xfcc-without-settings"),
        pytest.param(HEADER + "  sources: [jwt_svid]\n", [(4, "identity.sources[0]", "source 'jwt_svid' needs identity.jwt_svid.audiences")], id="jwt-without-settings"),
        pytest.param(HEADER + "  sources: [peer, peer]\n", [(4, "identity.sources[1]", "source 'peer' is listed twice")], id="listed-twice"),
        pytest.param(HEADER + "  sources: []\n", [(4, "identity.sources", "at least one source is required")], id="no-sources"),
        pytest.param(HEADER + "  sources: [mtls]\n", [(4, "identity.sources[0]", "unknown source 'mtls' (expected one of: peer, xfcc, jwt_svid)")], id="unknown-source"),
        pytest.param(HEADER + XFCC, [(4, "identity.xfcc", "set, but 'xfcc' is not in identity.sources (it would do nothing)")], id="xfcc-settings-without-source"),
        pytest.param(HEADER + "  sources: [peer]\n" + JWT, [(5, "identity.jwt_svid", "set, but 'jwt_svid' is not in identity.sources (it would do nothing)")], id="jwt-settings-without-source"),
        pytest.param(HEADER + "  sources: [xfcc]\n  xfcc: {}\n", [(5, "identity.xfcc.trusted_proxies", "required")], id="no-trusted-proxies"),
        pytest.param(HEADER + "  sources: [xfcc]\n  xfcc: {trusted_proxies: []}\n", [(5, "identity.xfcc.trusted_proxies", "at least one proxy is required")], id="empty-trusted-proxies"),
        pytest.param(HEADER + "  sources: [xfcc]\n  xfcc: {trusted_proxies: ['spiffe://evil.org/gw']}\n", [(5, "identity.xfcc.trusted_proxies", "principal pattern 'spiffe://evil.org/gw': trust domain 'evil.org' is not in identity.trust_domains")], id="proxy-foreign-domain"),
        pytest.param(HEADER + "  sources: [xfcc]\n  xfcc: {trusted_proxies: ['spiffe://example.org/gw/']}\n", [(5, "identity.xfcc.trusted_proxies[0]", "principal pattern 'spiffe://example.org/gw/': empty path segment")], id="proxy-bad-pattern"),
        pytest.param(HEADER + "  sources: [xfcc]\n  xfcc: {trusted_proxies: [x], trust: all}\n", [(5, "identity.xfcc.trust", "unknown key 'trust' (expected one of: trusted_proxies)"), (5, "identity.xfcc.trusted_proxies[0]", "principal pattern 'x' must start with lowercase 'spiffe://'")], id="unknown-xfcc-key"),
        pytest.param(HEADER + "  sources: [xfcc]\n  xfcc: [a]\n", [(5, "identity.xfcc", "expected a mapping, got a list")], id="xfcc-not-mapping"),
        pytest.param(HEADER + "  sources: [jwt_svid]\n  jwt_svid: {audiences: []}\n", [(5, "identity.jwt_svid.audiences", "at least one audience is required")], id="no-audiences"),
        pytest.param(HEADER + "  sources: [jwt_svid]\n  jwt_svid: {audiences: orders}\n", [(5, "identity.jwt_svid.audiences", "expected a list, got str 'orders'")], id="audiences-not-list"),
        pytest.param(HEADER + "  sources: [jwt_svid]\n  jwt_svid: {audiences: ['', ' x', 3]}\n", [(5, "identity.jwt_svid.audiences[0]", "audience '': expected a non-empty string without surrounding whitespace, at most 512 characters"), (5, "identity.jwt_svid.audiences[1]", "audience ' x': expected a non-empty string without surrounding whitespace, at most 512 characters"), (5, "identity.jwt_svid.audiences[2]", "expected a string, got int '3'")], id="bad-audiences"),
    ],
)  # fmt: skip
def test_rejected(text: str, expected: list[tuple[int | None, str | None, str]]) -> None:
    """Each mistake is one located issue; nothing is silently ignored."""
    assert _issues(text) == expected
