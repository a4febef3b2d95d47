"""Principal patterns: matching tables and exact compile errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_server.identity.patterns import PrincipalMatcher, compile_principal_pattern
from authz_server.identity.spiffe_id import parse_spiffe_id


@pytest.mark.parametrize(
    ("pattern", "spiffe_id", "expected"),
    [
        pytest.param("spiffe://example.org/ci/release", "spiffe://example.org/ci/release", {},
                     id="exact"),
        pytest.param("spiffe://example.org/ci/release", "spiffe://example.org/ci/releases", None,
                     id="exact-differs"),
        pytest.param("spiffe://example.org/ci/release", "spiffe://example.com/ci/release", None,
                     id="exact-other-trust-domain"),
        pytest.param("spiffe://example.org/ci", "spiffe://example.org/ci/release", None,
                     id="exact-is-not-prefix"),
        pytest.param("spiffe://example.org/ci/release", "spiffe://example.org/ci/Release", None,
                     id="exact-case-sensitive"),
        pytest.param("spiffe://example.org", "spiffe://example.org", {}, id="trust-domain-id"),
        pytest.param("spiffe://example.org/ns/shop/sa/*", "spiffe://example.org/ns/shop/sa/web",
                     {}, id="star"),
        pytest.param("spiffe://example.org/ns/shop/sa/*", "spiffe://example.org/ns/shop/sa",
                     None, id="star-needs-segment"),
        pytest.param("spiffe://example.org/ns/shop/sa/*", "spiffe://example.org/ns/shop/sa/a/b",
                     None, id="star-one-segment"),
        pytest.param("spiffe://example.org/agents/{tenant}/*",
                     "spiffe://example.org/agents/acme/bot", {"tenant": "acme"}, id="capture"),
        pytest.param("spiffe://example.org/{a}/{b}", "spiffe://example.org/x/y",
                     {"a": "x", "b": "y"}, id="two-captures"),
        pytest.param("spiffe://example.org/agents/**", "spiffe://example.org/agents", {},
                     id="rest-zero"),
        pytest.param("spiffe://example.org/agents/**", "spiffe://example.org/agents/a/b/c", {},
                     id="rest-many"),
        pytest.param("spiffe://example.org/agents/**", "spiffe://example.org/agentsx", None,
                     id="rest-segment-wise"),
        pytest.param("spiffe://example.org/agents/**", "spiffe://evil.org/agents/a", None,
                     id="rest-other-trust-domain"),
        pytest.param("spiffe://example.org/**", "spiffe://example.org/any/thing", {},
                     id="whole-trust-domain"),
        pytest.param("spiffe://example.org/t/{t}/**", "spiffe://example.org/t/x/y",
                     {"t": "x"}, id="capture-then-rest"),
    ],
)  # fmt: skip
def test_principal_matching(pattern: str, spiffe_id: str, expected: dict[str, str] | None) -> None:
    """Patterns match segment-wise inside one literal trust domain."""
    compiled: PrincipalMatcher = compile_principal_pattern(pattern)
    result = compiled.match(parse_spiffe_id(spiffe_id))
    assert (None if result is None else dict(result)) == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        pytest.param("spiffe://example.org/", "principal pattern 'spiffe://example.org/': "
                     "trailing '/' is not allowed", id="trailing-slash"),
        pytest.param("spiffe://example.org/a/", "principal pattern 'spiffe://example.org/a/': "
                     "empty path segment", id="trailing-slash-after-segment"),
        pytest.param("SPIFFE://example.org/a", "principal pattern 'SPIFFE://example.org/a' "
                     "must start with lowercase 'spiffe://'", id="upper-scheme"),
        pytest.param("example.org/a", "principal pattern 'example.org/a' "
                     "must start with lowercase 'spiffe://'", id="no-scheme"),
        pytest.param("spiffe://*.example.org/a", "principal pattern 'spiffe://*.example.org/a': "
                     "the trust domain must be literal", id="wildcard-trust-domain"),
        pytest.param("spiffe://{td}/a", "principal pattern 'spiffe://{td}/a': "
                     "the trust domain must be literal", id="captured-trust-domain"),
        pytest.param("spiffe://Example.org/a", "principal pattern 'spiffe://Example.org/a': "
                     "trust domain may contain only [a-z0-9._-] (no port, userinfo, upper case)",
                     id="upper-trust-domain"),
        pytest.param("spiffe://example.org:443/a", "principal pattern "
                     "'spiffe://example.org:443/a': trust domain may contain only [a-z0-9._-] "
                     "(no port, userinfo, upper case)", id="port"),
        pytest.param("spiffe:///a", "principal pattern 'spiffe:///a': trust domain is empty",
                     id="empty-trust-domain"),
        pytest.param("spiffe://example.org/a//b", "principal pattern "
                     "'spiffe://example.org/a//b': empty path segment", id="empty-segment"),
        pytest.param("spiffe://example.org/a/../b", "principal pattern "
                     "'spiffe://example.org/a/../b': '.' and '..' segments are not allowed",
                     id="dot-dot"),
        pytest.param("spiffe://example.org/a%20b", "principal pattern "
                     "'spiffe://example.org/a%20b': path segment 'a%20b' may contain only "
                     "[a-zA-Z0-9._-]", id="percent"),
        pytest.param("spiffe://example.org/**/a", "principal pattern "
                     "'spiffe://example.org/**/a': '/**' is allowed only at the end",
                     id="rest-not-last"),
        pytest.param("spiffe://example.org/a*", "principal pattern 'spiffe://example.org/a*': "
                     "'*', '**' and '{name}' must be whole segments", id="partial-star"),
        pytest.param("spiffe://example.org/{x}/{x}", "principal pattern "
                     "'spiffe://example.org/{x}/{x}': capture {x} is used twice",
                     id="duplicate-capture"),
        pytest.param("spiffe://example.org/{X}", "principal pattern 'spiffe://example.org/{X}': "
                     "'*', '**' and '{name}' must be whole segments", id="bad-capture-name"),
        pytest.param("spiffe://example.org/a\n", "principal pattern 'spiffe://example.org/a\\n': "
                     "path segment 'a\\n' may contain only [a-zA-Z0-9._-]", id="newline"),
    ],
)  # fmt: skip
def test_invalid_principal_patterns(pattern: str, message: str) -> None:
    """Every pattern mistake is a load-time error quoting the pattern."""
    with pytest.raises(ValueError) as raised:
        compile_principal_pattern(pattern)
    assert str(raised.value) == message


def test_principal_pattern_records_trust_domain_and_captures() -> None:
    """The loader checks the trust domain; the evaluator joins on the capture names."""
    pattern = compile_principal_pattern("spiffe://example.org/agents/{tenant}/{agent}")
    assert (pattern.trust_domain, pattern.names) == ("example.org", ("tenant", "agent"))


_SEGMENTS = st.lists(st.from_regex(r"[a-zA-Z0-9._-]{1,8}", fullmatch=True), max_size=4).filter(
    lambda segments: not {".", ".."} & set(segments)
)


@given(_SEGMENTS)
def test_exact_pattern_matches_only_itself(segments: list[str]) -> None:
    """A literal pattern matches its own ID and nothing one segment longer or shorter."""
    text = "spiffe://example.org" + "".join("/" + s for s in segments)
    pattern = compile_principal_pattern(text)
    assert pattern.match(parse_spiffe_id(text)) == {}
    assert pattern.match(parse_spiffe_id(text + "/x")) is None
    if segments:
        assert pattern.match(parse_spiffe_id(text.rsplit("/", 1)[0])) is None
