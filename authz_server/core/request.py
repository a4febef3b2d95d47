"""CheckRequest → RequestView: the one place that reads Envoy's request protobuf.

The view is plain, frozen Python so that every later phase (path check, identity,
matching) is testable without protobufs, and so that `authz-server check` can build
the same value from command-line flags.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Any

from authz_server.core.decision import Reason
from authz_server.core.errors import RequestError, quote
from authz_server.core.values import frozen

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
#: `RequestView.vouched_by` of a caller of a plaintext, loopback-only AuthZEN listener
#: (`--authzen-insecure-local`, demos): trusted to vouch for any subject. Not a SPIFFE ID.
LOCAL_PEP = "local-pep (--authzen-insecure-local)"
_EMPTY: Mapping[str, str] = MappingProxyType({})


@frozen
class RequestView:
    """What one Check is about. Names are lower-case, method upper-case."""

    method: str
    host: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    body: bytes | None = None
    #: Peer identity as Envoy reported it: unverified input.
    principal: str = ""
    #: URL-encoded PEM of the peer's leaf certificate, as Envoy sends it.
    certificate: str = ""
    request_id: str = ""
    #: Set only by the AuthZEN listener (`authz_server/authzen/`), never from a CheckRequest:
    #: the verified SPIFFE ID of the caller (a PEP) that vouches for `principal` in place of
    #: a certificate, or `LOCAL_PEP`. The identity phase still checks the principal's syntax,
    #: trust domain, `identity.deny` and revocations, and whether the caller may vouch for
    #: anyone but itself (`authzen.trusted_peps`; identity/resolve.py).
    vouched_by: str = ""

    @property
    def body_partial(self) -> bool:
        return self.headers.get(PARTIAL_BODY_HEADER, "").lower() == "true"


def normalize_host(authority: str) -> str:
    """Host for matching: lower-case, port stripped, one trailing dot removed.

    `Orders.Internal.:443` and `orders.internal` name the same virtual host; if they
    did not match the same rules, a host-scoped deny rule could be sidestepped.
    """
    host = authority.strip().lower()
    if host.startswith("["):  # IPv6 literal, maybe with a port
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        host = name
    if host.endswith("."):
        host = host[:-1]
    return host


def split_path(raw: str) -> tuple[str, str]:
    """Envoy's `path` carries the query: split at the first `?`."""
    path, _, query = raw.partition("?")
    return path, query


class EnvoyHeaders(Mapping[str, str]):
    """Envoy's header map, read in place: a value becomes a Python string only when asked for.

    Copying every header into a dict cost about 2,700 instructions a header, mostly for
    values no rule reads. Used only when every name is lower case already, as Envoy sends
    them; otherwise `_headers` copies them with lower-cased names. Never indexes the
    protobuf map with `[]`: that would insert a missing name.
    """

    __slots__ = ("_map", "_names")

    def __init__(self, source: Any, names: list[str]) -> None:
        self._map = source
        self._names = names

    def __getitem__(self, name: str) -> str:
        value: str | None = self._map.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        return self._map.get(name, default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _headers(http: Any) -> Mapping[str, str]:
    """Request headers; Envoy sends either `headers` or, with raw headers, `header_map`."""
    source = http.headers
    names = list(source)  # one pass in C
    if names and "\n".join(names).islower():
        return EnvoyHeaders(source, names)
    headers = {k.lower(): source.get(k) for k in names}
    if not headers and http.HasField("header_map"):
        for entry in http.header_map.headers:
            value = entry.raw_value.decode("latin-1") if entry.raw_value else entry.value
            key = entry.key.lower()
            # Envoy joins repeated headers with a comma; do the same.
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def connection_view(request: Any) -> RequestView:
    """The peer of a CheckRequest without HTTP attributes (Istio's TCP filter): identity
    only, for `defaults.non_http: allow` policies."""
    source = request.attributes.source
    return RequestView(
        method="", host="", path="", principal=source.principal, certificate=source.certificate
    )


def view_from_check_request(request: Any) -> RequestView:
    """Build the view, or raise `RequestError` naming what is missing."""
    attributes = request.attributes
    http = attributes.request.http  # an absent message reads as an empty one
    method, raw_path = http.method, http.path  # each protobuf read makes a new str
    if not method:
        if not request.HasField("attributes"):
            # Not even a network-filter check: nothing to judge, never the non_http opt-in.
            raise RequestError(Reason.MALFORMED_REQUEST, "CheckRequest has no attributes")
        if not attributes.request.HasField("http"):
            raise RequestError(
                Reason.UNSUPPORTED_REQUEST,
                "CheckRequest has no HTTP attributes (a network-filter check?)",
            )
        raise RequestError(Reason.MALFORMED_REQUEST, "HTTP request has no method")
    if not raw_path:
        raise RequestError(Reason.MALFORMED_REQUEST, "HTTP request has no path")
    if not method.isascii() or not method.isalpha():
        raise RequestError(Reason.MALFORMED_REQUEST, f"invalid method {quote(method)}")
    headers = _headers(http)
    path, query = split_path(raw_path)
    body: bytes | None = http.raw_body or None
    if body is None and (text := http.body):
        body = text.encode("utf-8", "surrogateescape")
    source = attributes.source
    return RequestView(
        method=method.upper(),
        host=normalize_host(http.host or headers.get(":authority", "")),
        path=path,
        query=query,
        headers=headers,
        body=body,
        principal=source.principal,
        certificate=source.certificate,
        request_id=headers.get("x-request-id", "") or http.id,
    )
