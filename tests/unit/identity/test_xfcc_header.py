"""The XFCC header's grammar: the strict parser, on tables and on generated input."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.core.decision import Reason
from authz_server.identity.xfcc_header import (
    KEYS,
    MAX_ELEMENTS,
    MAX_HEADER_CHARS,
    XfccElement,
    XfccError,
    parse_xfcc,
)
from tests.unit.identity.sources_support import ADMIN, FRONTEND, xfcc


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
