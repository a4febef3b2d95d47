"""Host and method patterns: matching tables and exact compile errors."""

from __future__ import annotations

import pytest

from authz_server.policy.patterns import compile_host_pattern, compile_method


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        pytest.param("orders.internal", "orders.internal", True, id="exact"),
        pytest.param("Orders.Internal", "orders.internal", True, id="pattern-lower-cased"),
        pytest.param("orders.internal", "orders.internal.evil", False, id="exact-not-prefix"),
        pytest.param("orders.internal", "x.orders.internal", False, id="exact-not-suffix"),
        pytest.param("*.internal", "orders.internal", True, id="wildcard-one-label"),
        pytest.param("*.internal", "a.b.internal", True, id="wildcard-many-labels"),
        pytest.param("*.internal", "internal", False, id="wildcard-not-apex"),
        pytest.param("*.internal", "evilinternal", False, id="wildcard-label-boundary"),
        pytest.param("*.internal", ".internal", False, id="wildcard-empty-label"),
    ],
)
def test_host_matching(pattern: str, host: str, matches: bool) -> None:
    """Exact hosts match exactly; `*.suffix` needs at least one label before the suffix."""
    assert compile_host_pattern(pattern).match(host) is matches


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        pytest.param(
            "orders.internal:8080",
            "host pattern 'orders.internal:8080' must not carry a port (ports are ignored)",
            id="port",
        ),
        pytest.param("*", "host pattern '*': omit 'hosts' to match any host", id="star"),
        pytest.param(
            "a.*.internal",
            "host pattern 'a.*.internal': '*' is allowed only as the first label '*.'",
            id="inner-wildcard",
        ),
        pytest.param(
            "*orders.internal",
            "host pattern '*orders.internal': '*' is allowed only as the first label '*.'",
            id="partial-wildcard",
        ),
        pytest.param(
            "orders.internal.",
            "host pattern 'orders.internal.' is not a valid host name "
            "(dot-separated labels of [a-z0-9_-], no trailing dot)",
            id="trailing-dot",
        ),
        pytest.param(
            "",
            "host pattern '' is not a valid host name "
            "(dot-separated labels of [a-z0-9_-], no trailing dot)",
            id="empty",
        ),
        pytest.param(
            "-a.internal",
            "host pattern '-a.internal' is not a valid host name "
            "(dot-separated labels of [a-z0-9_-], no trailing dot)",
            id="leading-hyphen",
        ),
        pytest.param(
            "a b",
            "host pattern 'a b' is not a valid host name "
            "(dot-separated labels of [a-z0-9_-], no trailing dot)",
            id="space",
        ),
    ],
)
def test_invalid_host_patterns(pattern: str, message: str) -> None:
    """Host pattern mistakes are load-time errors quoting the pattern."""
    with pytest.raises(ValueError) as raised:
        compile_host_pattern(pattern)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        pytest.param("GET", "GET", id="upper"),
        pytest.param("get", "GET", id="lower"),
        pytest.param("Patch", "PATCH", id="mixed"),
        pytest.param("PROPFIND", "PROPFIND", id="extension"),
    ],
)
def test_methods_are_upper_cased(method: str, expected: str) -> None:
    """Methods are case-insensitive in policy and compared upper-case."""
    assert compile_method(method) == expected


@pytest.mark.parametrize(
    ("method", "message"),
    [
        pytest.param("GE T", "method 'GE T' is not an HTTP token", id="space"),
        pytest.param("", "method '' is not an HTTP token", id="empty"),
        pytest.param("GET\n", "method 'GET\\n' is not an HTTP token", id="newline"),
        pytest.param("*", "method '*': omit 'methods' to match any method", id="star"),
    ],
)
def test_invalid_methods(method: str, message: str) -> None:
    """A method must be an RFC 9110 token."""
    with pytest.raises(ValueError) as raised:
        compile_method(method)
    assert str(raised.value) == message
