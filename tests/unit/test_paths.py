"""Canonical paths (docs/policy/reference.md#canonical-paths) and path templates: one row per
trick."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from authz_server.core import paths
from authz_server.core.paths import (
    canonical_path_problem,
    compile_path_template,
    segment_key,
    segments_and_keys,
)

UNRESERVED = re.compile(r"[A-Za-z0-9._~-]")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/", id="root"),
        pytest.param("/a/b", id="plain"),
        pytest.param("/v1/orders/42", id="api"),
        pytest.param("/v1/orders/", id="trailing-slash"),
        pytest.param("/a%20b", id="encoded-space"),
        pytest.param("/a%3Fb", id="encoded-question-mark"),
        pytest.param("/a%25b", id="encoded-percent"),
        pytest.param("/a%3bb", id="encoded-semicolon-is-data"),
        pytest.param("/%C3%A9t%C3%A9", id="encoded-utf8"),
        pytest.param("/a.b/c..d", id="dots-inside-names"),
        pytest.param("/.well-known/x", id="leading-dot-name"),
        pytest.param("/...", id="three-dots"),
        pytest.param("/a:b@c!$&'()*+,=", id="sub-delims"),
        pytest.param("/v1/things:batchGet", id="colon-verb"),
        pytest.param("/~user/_x-y", id="unreserved-punctuation"),
    ],
)
def test_canonical_paths_are_accepted(path: str) -> None:
    """Everything Envoy sends for normal traffic is canonical."""
    assert canonical_path_problem(path) is None


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        pytest.param("", "empty path", id="empty"),
        pytest.param("a", "path 'a' does not start with '/'", id="relative"),
        pytest.param("*", "path '*' does not start with '/'", id="asterisk-form"),
        pytest.param("http://h/a", "path 'http://h/a' does not start with '/'", id="absolute-form"),
        pytest.param("/a/../b", "dot segment '..'", id="dot-dot"),
        pytest.param("/a/./b", "dot segment '.'", id="dot"),
        pytest.param("/..", "dot segment '..'", id="dot-dot-at-root"),
        pytest.param("/a/.", "dot segment '.'", id="trailing-dot"),
        pytest.param("/a/..", "dot segment '..'", id="trailing-dot-dot"),
        pytest.param("//a", "empty segment ('//') at offset 0", id="leading-double-slash"),
        pytest.param("/a//b", "empty segment ('//') at offset 2", id="double-slash"),
        pytest.param("/a/b//", "empty segment ('//') at offset 4", id="trailing-double-slash"),
        pytest.param("/%2e%2e/", "percent-encoded unreserved character '%2e' ('.')", id="enc-dots"),
        pytest.param("/a/%2E", "percent-encoded unreserved character '%2E' ('.')", id="enc-dot"),
        pytest.param("/a%2fb", "percent-encoded '/' or '\\' '%2f'", id="enc-slash-lower"),
        pytest.param("/a%2Fb", "percent-encoded '/' or '\\' '%2F'", id="enc-slash-upper"),
        pytest.param("/a%5cb", "percent-encoded '/' or '\\' '%5c'", id="enc-backslash"),
        pytest.param("/a%5Cb", "percent-encoded '/' or '\\' '%5C'", id="enc-backslash-upper"),
        pytest.param("/%41", "percent-encoded unreserved character '%41' ('A')", id="enc-alpha"),
        pytest.param("/%7a", "percent-encoded unreserved character '%7a' ('z')", id="enc-lower-z"),
        pytest.param("/%30", "percent-encoded unreserved character '%30' ('0')", id="enc-digit"),
        pytest.param("/%7E", "percent-encoded unreserved character '%7E' ('~')", id="enc-tilde"),
        pytest.param("/%2d", "percent-encoded unreserved character '%2d' ('-')", id="enc-hyphen"),
        pytest.param("/%5F", "percent-encoded unreserved character '%5F' ('_')", id="enc-under"),
        pytest.param("/a%zz", "malformed percent-escape '%zz'", id="bad-escape"),
        pytest.param("/a%4", "malformed percent-escape '%4'", id="short-escape"),
        pytest.param("/a%", "malformed percent-escape '%'", id="lone-percent"),
        pytest.param("/a%%41", "malformed percent-escape '%%4'", id="double-percent"),
        pytest.param("/a\\b", "forbidden character '\\\\' at offset 2", id="backslash"),
        pytest.param("/a;b", "forbidden character ';' at offset 2", id="semicolon"),
        pytest.param("/a..;/b", "forbidden character ';' at offset 4", id="tomcat-dot-dot-semi"),
        pytest.param("/a;jsessionid=1", "forbidden character ';' at offset 2", id="matrix-param"),
        pytest.param("/a#b", "forbidden character '#' at offset 2", id="fragment"),
        pytest.param("/a b", "forbidden character ' ' at offset 2", id="space"),
        pytest.param("/a\tb", "forbidden character '\\t' at offset 2", id="tab"),
        pytest.param("/a\nb", "forbidden character '\\n' at offset 2", id="newline"),
        pytest.param("/a\rb", "forbidden character '\\r' at offset 2", id="carriage-return"),
        pytest.param("/a\x00", "forbidden character '\\x00' at offset 2", id="nul"),
        pytest.param("/a\x7f", "forbidden character '\\x7f' at offset 2", id="del"),
        pytest.param("/a\x0bb", "forbidden character '\\x0b' at offset 2", id="vertical-tab"),
        pytest.param("/caf\u00e9", "forbidden character 'é' at offset 4", id="non-ascii"),
        pytest.param("/a\u00a0b", "forbidden character '\\xa0' at offset 2", id="nbsp"),
        pytest.param("/a\u2028b", "forbidden character '\\u2028' at offset 2", id="line-sep"),
        pytest.param(
            "/\uff0e\uff0e/", "forbidden character '\uff0e' at offset 1", id="fullwidth-dot"
        ),
        pytest.param("/a/../%2f", "dot segment '..'", id="leftmost-problem-wins"),
    ],
)
def test_non_canonical_paths_are_rejected(path: str, problem: str) -> None:
    """Each spelling trick gets a short reason that quotes the bad part."""
    assert canonical_path_problem(path) == problem


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, literally."""
    inp, out = path, ""
    while inp:
        if inp.startswith("../"):
            inp = inp[3:]
        elif inp.startswith("./") or inp.startswith("/./"):
            inp = inp[2:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../"):
            inp = inp[3:]
            out = out[: max(out.rfind("/"), 0)]
        elif inp == "/..":
            inp = "/"
            out = out[: max(out.rfind("/"), 0)]
        elif inp in (".", ".."):
            inp = ""
        else:
            start = 1 if inp.startswith("/") else 0
            end = inp.find("/", start)
            end = len(inp) if end == -1 else end
            out, inp = out + inp[:end], inp[end:]
    return out


def _decode(path: str, decodable: re.Pattern[str]) -> str:
    def one(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if decodable.fullmatch(char) else m.group(0)

    return re.sub(r"%([0-9A-Fa-f]{2})", one, path)


_GOOD = ["a", "B9", "...", "x.y", "~", "-_", ":@", "*", "%20", "%3F", "%25", "%C3%A9"]
_BAD = [".", "..", "", "%2e", "%2f", "%5C", "%41", "%7e", "%zz", "%4", "%", ";", "\\", "#",
        " ", "\t", "\x00", "\u00e9"]  # fmt: skip
_GOOD_SEGMENTS = st.lists(st.sampled_from(_GOOD), min_size=1, max_size=3).map("".join)
_ANY_SEGMENTS = st.lists(st.sampled_from(_GOOD + _BAD), max_size=3).map("".join)
_PATHS = st.one_of(
    st.lists(_ANY_SEGMENTS, max_size=6).map(lambda segments: "/" + "/".join(segments)),
    st.text(max_size=30),
)


@given(st.lists(_GOOD_SEGMENTS, max_size=6), st.booleans())
def test_paths_of_ordinary_segments_are_accepted(segments: list[str], slash: bool) -> None:
    """Non-empty segments of pchars and data escapes always form a canonical path."""
    assert (
        canonical_path_problem("/" + "/".join(segments) + ("/" if slash and segments else ""))
        is None
    )


@given(_PATHS)
@example("/a/%2e%2e/b")
@example("/a/b/..")
def test_accepted_paths_are_fixed_points_of_normalisation(path: str) -> None:
    """A path that passes is unchanged by dot removal, slash merging and decoding."""
    if canonical_path_problem(path) is not None:
        return
    assert _remove_dot_segments(path) == path
    assert re.sub("/{2,}", "/", path) == path
    assert _decode(path, UNRESERVED) == path
    assert _decode(path, re.compile(r"[/\\]")) == path
    assert path.isascii() and path.isprintable()
    assert not set(path) & set("\\;# ")


@given(st.one_of(_PATHS, st.lists(_GOOD_SEGMENTS).map(lambda s: "/" + "/".join(s))))
def test_fast_path_agrees_with_precise_check(path: str) -> None:
    """The plain-path shortcut never accepts a path that the precise search rejects."""
    if path.startswith("/") and paths._PLAIN.fullmatch(path) is not None:
        assert paths._PROBLEM.search(path) is None


@given(_PATHS)
def test_accepted_paths_match_themselves_as_templates(path: str) -> None:
    """Every canonical path without template syntax is a template matching exactly itself."""
    if canonical_path_problem(path) is not None or any(c in path for c in "*{}?"):
        return
    assert compile_path_template(path).match(path) == {}


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        pytest.param("/v1/orders", "/v1/orders", {}, id="literal"),
        pytest.param("/v1/orders", "/v1/orders/", None, id="no-implicit-trailing-slash"),
        pytest.param("/v1/orders/", "/v1/orders/", {}, id="explicit-trailing-slash"),
        pytest.param("/v1/orders/", "/v1/orders", None, id="trailing-slash-required"),
        pytest.param("/v1/orders", "/v1/orders/42", None, id="literal-is-not-prefix"),
        pytest.param("/v1/orders", "/v1/Orders", None, id="case-sensitive"),
        pytest.param("/v1/orders/{id}", "/v1/orders/42", {"id": "42"}, id="capture"),
        pytest.param("/v1/orders/{id}", "/v1/orders/", None, id="capture-never-empty"),
        pytest.param("/v1/orders/{id}", "/v1/orders/42/x", None, id="capture-one-segment"),
        pytest.param("/a/*/c", "/a/b/c", {}, id="star"),
        pytest.param("/a/*", "/a/", None, id="star-never-empty"),
        pytest.param("/a/**", "/a", {}, id="rest-zero-segments"),
        pytest.param("/a/**", "/a/", {}, id="rest-trailing-slash"),
        pytest.param("/a/**", "/a/b/c", {}, id="rest-many"),
        pytest.param("/a/**", "/ab", None, id="rest-is-segment-wise"),
        pytest.param("/a/**", "/", None, id="rest-needs-prefix"),
        pytest.param("/**", "/", {}, id="root-rest-root"),
        pytest.param("/**", "/x/y/", {}, id="root-rest-anything"),
        pytest.param("/", "/", {}, id="root"),
        pytest.param("/", "/a", None, id="root-only"),
        pytest.param("/t/{tenant}/**", "/t/acme/a/b", {"tenant": "acme"}, id="capture-then-rest"),
        pytest.param("/t/{tenant}/**", "/t/acme", {"tenant": "acme"}, id="capture-rest-empty"),
        pytest.param("/t/{tenant}/**", "/t/", None, id="capture-before-rest-non-empty"),
        pytest.param("/a/{x}/{y}", "/a/1/2", {"x": "1", "y": "2"}, id="two-captures"),
        pytest.param("/v1/things:get", "/v1/things%3Aget", {}, id="encoded-colon-same-key"),
        pytest.param("/v1/things:get", "/v1/things%3aget", {}, id="lower-hex-same-key"),
        pytest.param("/v1/things%3Aget", "/v1/things:get", {}, id="template-escape-decoded"),
        pytest.param("/f/%C3%A9", "/f/%c3%a9", {}, id="hex-case-insensitive"),
        pytest.param("/f/a%20b", "/f/a%20b", {}, id="encoded-space-literal"),
        pytest.param("/f/a%20b", "/f/a+b", None, id="plus-is-not-space"),
        pytest.param("/f/%2A", "/f/*", {}, id="literal-asterisk"),
        pytest.param("/f/%2A", "/f/x", None, id="literal-asterisk-not-wildcard"),
        pytest.param("/x/{v}", "/x/a%3Ab", {"v": "a%3Ab"}, id="capture-keeps-spelling"),
    ],
)
def test_template_matching(template: str, path: str, expected: dict[str, str] | None) -> None:
    """Templates match segment-wise; only `**` absorbs a trailing slash."""
    assert compile_path_template(template).match(path) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        pytest.param("v1/orders", "path template 'v1/orders' must start with '/'", id="relative"),
        pytest.param("", "path template '' must start with '/'", id="empty"),
        pytest.param(
            "/a?b=1",
            "path template '/a?b=1' must not contain '?' (paths match without query)",
            id="query",
        ),
        pytest.param(
            "/a/../b", "path template '/a/../b' is not canonical: dot segment '..'", id="dot-dot"
        ),
        pytest.param(
            "/a//b",
            "path template '/a//b' is not canonical: empty segment ('//') at offset 2",
            id="double-slash",
        ),
        pytest.param(
            "/%41",
            "path template '/%41' is not canonical: "
            "percent-encoded unreserved character '%41' ('A')",
            id="encoded-unreserved",
        ),
        pytest.param(
            "/a/**/b",
            "path template '/a/**/b': '**' is allowed only as the last segment",
            id="rest-not-last",
        ),
        pytest.param(
            "/a/{Id}",
            "path template '/a/{Id}': invalid capture '{Id}' "
            "(expected '{name}' with name matching [a-z_][a-z0-9_]*)",
            id="capture-upper-case",
        ),
        pytest.param(
            "/a/{1x}",
            "path template '/a/{1x}': invalid capture '{1x}' "
            "(expected '{name}' with name matching [a-z_][a-z0-9_]*)",
            id="capture-leading-digit",
        ),
        pytest.param(
            "/a/{x}/{x}", "path template '/a/{x}/{x}': capture {x} is used twice", id="dup-capture"
        ),
        pytest.param(
            "/a/v{n}",
            "path template '/a/v{n}': '*', '**' and '{name}' must be whole segments "
            "(got 'v{n}'; write %2A, %7B, %7D for literal characters)",
            id="partial-capture",
        ),
        pytest.param(
            "/a/b*",
            "path template '/a/b*': '*', '**' and '{name}' must be whole segments "
            "(got 'b*'; write %2A, %7B, %7D for literal characters)",
            id="partial-star",
        ),
        pytest.param(
            "/a;b",
            "path template '/a;b' is not canonical: forbidden character ';' at offset 2",
            id="semicolon",
        ),
    ],
)
def test_invalid_templates(template: str, message: str) -> None:
    """Template mistakes are load-time errors that quote the template."""
    with pytest.raises(ValueError) as raised:
        compile_path_template(template)
    assert str(raised.value) == message


def test_template_parts() -> None:
    """A template compiles to literal keys, wildcard slots and capture positions."""
    t = compile_path_template("/t/{tenant}/*/x%3Ay/**")
    assert (t.parts, t.captures, t.rest) == (("t", None, None, "x:y"), ((1, "tenant"),), True)


@pytest.mark.parametrize(
    ("segment", "key"),
    [
        pytest.param("abc", "abc", id="plain"),
        pytest.param("a%3ab", "a:b", id="pchar-decoded"),
        pytest.param("a%20b", "a%20b", id="space-stays-encoded"),
        pytest.param("a%c3%a9", "a%C3%A9", id="hex-upper-cased"),
        pytest.param('a"b', "a%22b", id="raw-non-pchar-encoded"),
        pytest.param("a%3bb", "a%3Bb", id="semicolon-stays-encoded"),
    ],
)
def test_segment_key(segment: str, key: str) -> None:
    """Keys give each segment one spelling for literal comparison."""
    assert segment_key(segment) == key


def test_segments_and_keys_reuses_segments_when_no_key_differs() -> None:
    """The common path costs no key computation at all."""
    segments, keys = segments_and_keys("/v1/orders/42")
    assert segments == ["v1", "orders", "42"] and keys is segments
