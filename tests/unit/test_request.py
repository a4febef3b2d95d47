"""CheckRequest → RequestView translation."""

from __future__ import annotations

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz_server.core.decision import Reason
from authz_server.core.errors import RequestError
from authz_server.core.request import (
    EnvoyHeaders,
    normalize_host,
    split_path,
    view_from_check_request,
)
from tests.conftest import make_check_request


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        pytest.param("orders.internal", "orders.internal", id="plain"),
        pytest.param("Orders.Internal", "orders.internal", id="case"),
        pytest.param("orders.internal:8443", "orders.internal", id="port"),
        pytest.param("orders.internal.", "orders.internal", id="trailing-dot"),
        pytest.param("orders.internal.:443", "orders.internal", id="trailing-dot-and-port"),
        pytest.param("[::1]:8080", "[::1]", id="ipv6-port"),
        pytest.param("[::1]", "[::1]", id="ipv6"),
        pytest.param("", "", id="empty"),
    ],
)
def test_normalize_host(authority: str, expected: str) -> None:
    """Hosts match case-, port- and trailing-dot-insensitively."""
    assert normalize_host(authority) == expected


def test_split_path_at_first_question_mark() -> None:
    """The query starts at the first `?`; later ones belong to it."""
    assert split_path("/a/b?x=1?y=2") == ("/a/b", "x=1?y=2")
    assert split_path("/a") == ("/a", "")


def test_view_fields() -> None:
    """Method is upper-cased, headers lower-cased, body kept raw, identity passed through."""
    request = make_check_request(
        method="post",
        host="Orders.Internal:443",
        path="/v1/orders?limit=5",
        headers={"X-Request-Id": "rid-1", "content-type": "application/json"},
        principal="spiffe://example.org/a",
        certificate="-----BEGIN%20CERTIFICATE-----",
        body=b'{"a":1}',
    )
    view = view_from_check_request(request)
    assert (view.method, view.host, view.path, view.query) == (
        "POST",
        "orders.internal",
        "/v1/orders",
        "limit=5",
    )
    assert view.headers["x-request-id"] == "rid-1"
    assert view.request_id == "rid-1"
    assert view.body == b'{"a":1}'
    assert view.principal == "spiffe://example.org/a"
    assert view.certificate.startswith("-----BEGIN")


def test_header_map_repeated_headers_are_joined() -> None:
    """With raw headers, repeated names are joined with a comma as Envoy does."""
    request = make_check_request()
    http = request.attributes.request.http
    http.header_map.headers.add(key="X-Tag", raw_value=b"a")
    http.header_map.headers.add(key="x-tag", raw_value=b"b")
    assert view_from_check_request(request).headers["x-tag"] == "a,b"


def test_lower_case_headers_are_read_in_place_without_changing_the_request() -> None:
    """Envoy's lower-case names are read from the request's own map: a value is converted
    only when asked for, and asking for a missing name never adds it (`[]` on a protobuf
    map would)."""
    headers = {"x-request-id": "rid-1", ":authority": "api.example", "accept": "*/*"}
    request = make_check_request(headers=headers)
    view = view_from_check_request(request)
    assert isinstance(view.headers, EnvoyHeaders)
    assert dict(view.headers) == headers and view.headers == headers
    assert len(view.headers) == 3 and sorted(view.headers) == sorted(headers)
    assert view.headers.get("x-missing") is None and "x-missing" not in view.headers
    with pytest.raises(KeyError):
        view.headers["x-missing"]
    assert 5 not in view.headers  # type: ignore[comparison-overlap]
    assert len(request.attributes.request.http.headers) == 3


@pytest.mark.parametrize("name", ["X-Forwarded-Client-Cert", "x-Debug", "X-ÉTÉ"])
def test_a_name_not_in_lower_case_gets_a_lower_cased_copy(name: str) -> None:
    """A CheckRequest not from Envoy may carry upper-case names: they are matched as the
    lower-case names rules use, never missed."""
    request = make_check_request(headers={name: "v", "x-request-id": "r"})
    view = view_from_check_request(request)
    assert not isinstance(view.headers, EnvoyHeaders)
    assert view.headers == {name.lower(): "v", "x-request-id": "r"}


def test_partial_body_flag() -> None:
    """Envoy marks a truncated body with x-envoy-auth-partial-body: true."""
    request = make_check_request(headers={"x-envoy-auth-partial-body": "true"}, body=b"{")
    assert view_from_check_request(request).body_partial


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        pytest.param(external_auth_pb2.CheckRequest(), Reason.MALFORMED_REQUEST, id="empty"),
        pytest.param(
            external_auth_pb2.CheckRequest(attributes={"source": {"principal": "x"}}),
            Reason.UNSUPPORTED_REQUEST,
            id="no-http-attributes",
        ),
        pytest.param(make_check_request(method=""), Reason.MALFORMED_REQUEST, id="no-method"),
        pytest.param(make_check_request(path=""), Reason.MALFORMED_REQUEST, id="no-path"),
        pytest.param(make_check_request(method="GE T"), Reason.MALFORMED_REQUEST, id="bad-method"),
    ],
)
def test_unjudgeable_requests(request_: object, reason: Reason) -> None:
    """A CheckRequest that cannot be judged raises RequestError with its reason."""
    with pytest.raises(RequestError) as caught:
        view_from_check_request(request_)
    assert caught.value.reason is reason
