"""The strict SPIFFE ID parser: every rejection of docs/concepts/identity.md#verification, one row
each."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_server.core.decision import Reason
from authz_server.core.errors import IdentityError
from authz_server.identity.spiffe_id import (
    SpiffeId,
    parse_spiffe_id,
    parse_workload_id,
    spiffe_id_problem,
)

LONG_SEGMENT = "a" * 2030  # with "spiffe://example.org/" just over 2048 bytes


@pytest.mark.parametrize(
    ("text", "trust_domain", "segments"),
    [
        pytest.param("spiffe://example.org", "example.org", (), id="trust-domain-only"),
        pytest.param(
            "spiffe://example.org/ns/prod/sa/api",
            "example.org",
            ("ns", "prod", "sa", "api"),
            id="k8s-style",
        ),
        pytest.param(
            "spiffe://example.org/Api.V1_x-y", "example.org", ("Api.V1_x-y",), id="segment-charset"
        ),
        pytest.param("spiffe://a-b_c.9/x", "a-b_c.9", ("x",), id="trust-domain-charset"),
        pytest.param(
            "spiffe://example.org/...", "example.org", ("...",), id="three-dots-is-a-name"
        ),
        pytest.param("spiffe://example.org/.hidden", "example.org", (".hidden",), id="leading-dot"),
        pytest.param("spiffe://" + "t" * 255, "t" * 255, (), id="trust-domain-255-bytes"),
        pytest.param(
            "spiffe://example.org/" + "a" * (2048 - len("spiffe://example.org/")),
            "example.org",
            ("a" * (2048 - len("spiffe://example.org/")),),
            id="exactly-2048-bytes",
        ),
    ],
)
def test_valid_ids_parse(text: str, trust_domain: str, segments: tuple[str, ...]) -> None:
    """A canonical ID parses into its trust domain and segments and prints back unchanged."""
    parsed = parse_spiffe_id(text)
    assert parsed == SpiffeId(trust_domain, segments)
    assert str(parsed) == text
    assert spiffe_id_problem(text) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", "must start with lowercase 'spiffe://'", id="empty"),
        pytest.param(
            "SPIFFE://example.org/a",
            "must start with lowercase 'spiffe://'",
            id="upper-case-scheme",
        ),
        pytest.param(
            "Spiffe://example.org/a",
            "must start with lowercase 'spiffe://'",
            id="mixed-case-scheme",
        ),
        pytest.param(
            "https://example.org/a", "must start with lowercase 'spiffe://'", id="other-scheme"
        ),
        pytest.param(
            "spiffe:/example.org/a", "must start with lowercase 'spiffe://'", id="one-slash"
        ),
        pytest.param(
            " spiffe://example.org/a", "must start with lowercase 'spiffe://'", id="leading-space"
        ),
        pytest.param("spiffe://", "trust domain is empty", id="no-trust-domain"),
        pytest.param("spiffe:///a", "trust domain is empty", id="empty-trust-domain"),
        pytest.param("spiffe://Example.org/a", "only [a-z0-9._-]", id="upper-case-trust-domain"),
        pytest.param("spiffe://example.org:8443/a", "no port", id="port"),
        pytest.param("spiffe://user@example.org/a", "userinfo", id="userinfo"),
        pytest.param("spiffe://user:pw@example.org/a", "only [a-z0-9._-]", id="userinfo-password"),
        pytest.param("spiffe://exa mple.org/a", "only [a-z0-9._-]", id="space-in-trust-domain"),
        pytest.param("spiffe://example.org?x=1", "only [a-z0-9._-]", id="query-on-trust-domain"),
        pytest.param("spiffe://example.org#f", "only [a-z0-9._-]", id="fragment-on-trust-domain"),
        pytest.param("spiffe://ex%41mple.org/a", "only [a-z0-9._-]", id="percent-in-trust-domain"),
        pytest.param("spiffe://exämple.org/a", "only [a-z0-9._-]", id="non-ascii-trust-domain"),
        pytest.param(
            "spiffe://" + "t" * 256,
            "trust domain longer than 255 bytes",
            id="trust-domain-256-bytes",
        ),
        pytest.param(
            "spiffe://example.org/", "trailing '/' is not allowed", id="trailing-slash-root"
        ),
        pytest.param("spiffe://example.org/a/", "empty path segment", id="trailing-slash"),
        pytest.param("spiffe://example.org//a", "empty path segment", id="empty-segment"),
        pytest.param("spiffe://example.org/./a", "'.' and '..' segments", id="dot-segment"),
        pytest.param("spiffe://example.org/a/..", "'.' and '..' segments", id="dot-dot-segment"),
        pytest.param("spiffe://example.org/a\n", "path segment 'a\\n'", id="trailing-newline"),
        pytest.param(
            "spiffe://example.org\n", "only [a-z0-9._-]", id="trailing-newline-on-trust-domain"
        ),
        pytest.param("spiffe://example.org/a b", "path segment 'a b'", id="space-in-path"),
        pytest.param("spiffe://example.org/a\t", "path segment 'a\\t'", id="tab"),
        pytest.param("spiffe://example.org/a?x=1", "path segment 'a?x=1'", id="query"),
        pytest.param("spiffe://example.org/a#frag", "path segment 'a#frag'", id="fragment"),
        pytest.param("spiffe://example.org/a%2Fb", "path segment 'a%2Fb'", id="percent-encoding"),
        pytest.param(
            "spiffe://example.org/caf\u00e9", "may contain only [a-zA-Z0-9._-]", id="non-ascii-path"
        ),
        pytest.param("spiffe://example.org/a:b", "path segment 'a:b'", id="colon-in-path"),
        pytest.param(
            "spiffe://example.org/" + LONG_SEGMENT, "longer than 2048 bytes", id="over-2048-bytes"
        ),
    ],
)
def test_invalid_ids_are_rejected(text: str, problem: str) -> None:
    """A non-canonical ID raises invalid_spiffe_id, quoting the input and saying why."""
    with pytest.raises(IdentityError) as caught:
        parse_spiffe_id(text)
    assert caught.value.reason is Reason.INVALID_SPIFFE_ID
    message = str(caught.value)
    assert message.startswith(f"invalid SPIFFE ID {repr(text)[:60]}")
    assert problem in message


def test_byte_length_counts_utf8_bytes() -> None:
    """The 2048 limit is in bytes: multi-byte characters count for their encoded size."""
    text = "spiffe://example.org/" + "é" * 1014  # 21 + 2028 bytes, 1035 characters
    assert "longer than 2048 bytes" in (spiffe_id_problem(text) or "")


def test_parsed_ids_are_hashable_values() -> None:
    """Equal IDs are equal values with equal hashes, so they can key dicts and sets."""
    assert {parse_spiffe_id("spiffe://example.org/a"), SpiffeId("example.org", ("a",))} == {
        SpiffeId("example.org", ("a",))
    }


TRUST_DOMAINS = st.from_regex(r"[a-z0-9._-]{1,40}", fullmatch=True)
SEGMENTS = st.from_regex(r"[a-zA-Z0-9._-]{1,20}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)


@given(TRUST_DOMAINS, st.lists(SEGMENTS, max_size=6))
def test_grammar_ids_round_trip(trust_domain: str, segments: list[str]) -> None:
    """Any ID built from the standard's grammar parses and prints back unchanged."""
    text = "spiffe://" + trust_domain + "".join("/" + s for s in segments)
    assert str(parse_spiffe_id(text)) == text


@given(st.text(max_size=80))
def test_whatever_parses_is_canonical(text: str) -> None:
    """Arbitrary text either is refused with invalid_spiffe_id or is already canonical."""
    try:
        parsed = parse_spiffe_id(text)
    except IdentityError as exc:
        assert exc.reason is Reason.INVALID_SPIFFE_ID
    else:
        assert str(parsed) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("spiffe://example.org/a", None, id="one-segment"),
        pytest.param("spiffe://example.org/ns/prod/sa/api", None, id="k8s-style"),
        pytest.param(
            "spiffe://example.org",
            "SPIFFE ID 'spiffe://example.org' names a trust domain, not a workload",
            id="bare-trust-domain",
        ),
        pytest.param("spiffe://example.org/", "trailing '/' is not allowed", id="root-path"),
        pytest.param("spiffe://Example.org/a", "invalid SPIFFE ID", id="still-strict"),
    ],
)
def test_workload_ids_need_a_path(text: str, problem: str | None) -> None:
    """A caller's ID is a strict SPIFFE ID with a non-root path; the trust domain ID is
    still a valid SPIFFE ID for everything else."""
    if problem is None:
        assert parse_workload_id(text) == parse_spiffe_id(text)
        return
    with pytest.raises(IdentityError) as raised:
        parse_workload_id(text)
    assert raised.value.reason is Reason.INVALID_SPIFFE_ID
    assert problem in str(raised.value)
    assert parse_spiffe_id("spiffe://example.org") == SpiffeId("example.org", ())
