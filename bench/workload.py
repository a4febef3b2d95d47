"""The request mix every phase sends, its certificates, and the gRPC bodies for h2load.

Each `Call` is one kind of request with the decision the generated policies must give
it; a run sends every kind at the same rate from its own h2load process (h2load sends
one body per process). Bodies are CheckRequests shaped like the ones Envoy 1.40's
ext_authz filter sends (the headers Envoy adds, the peer's URL-encoded PEM leaf in
`source.certificate`), framed for gRPC: a 5-byte prefix (flag 0, big-endian length)
before the serialized message.
"""

from __future__ import annotations

import struct
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2

from authz_server.tools import devcerts
from bench.policies import TRUST_DOMAIN

__all__ = ["IDENTITIES", "MIX", "Call", "check_request", "framed", "mint_bench_certs"]

#: Client identities, by the name their certificate files carry.
IDENTITIES = {
    "frontend": f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/frontend",
    "agent": f"spiffe://{TRUST_DOMAIN}/agents/acme/bot",
    "billing": f"spiffe://{TRUST_DOMAIN}/ns/billing/sa/api",
}


@dataclass(frozen=True, slots=True)
class Call:
    """One kind of request and the decision (reason) the policy gives it."""

    name: str
    method: str
    host: str
    path: str
    identity: str
    reason: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.reason.startswith("allowed")


MIX: tuple[Call, ...] = (
    Call("orders-read", "GET", "orders.internal", "/v1/orders/8812", "frontend", "allowed_by_rule"),
    Call(
        "tenant-job",
        "POST",
        "jobs.internal",
        "/v1/tenants/acme/jobs/7",
        "agent",
        "allowed_by_rule",
        (("x-agent-task", "t-42"),),
    ),
    Call("charge", "POST", "eu.payments.example", "/v2/charges", "billing", "allowed_by_rule"),
    Call("admin-by-agent", "GET", "admin.internal", "/admin/users", "agent", "denied_by_rule"),
    Call("no-rule", "GET", "svc5.internal", "/api/unknown/items", "frontend", "no_matching_rule"),
)


@dataclass(frozen=True)
class BenchCerts:
    """`ca.pem` (the trust bundle), `envoy.pem/key`, and `NAME.pem/key` per identity."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def leaf_pem(self, name: str) -> str:
        return (self.dir / f"{name}.pem").read_text(encoding="ascii")


def mint_bench_certs(out: Path) -> BenchCerts:
    """A CA for the trust domain, Envoy's server SVID and one SVID per identity."""
    out.mkdir(parents=True, exist_ok=True)
    authority = devcerts.mint_ca(TRUST_DOMAIN)
    (out / "ca.pem").write_bytes(devcerts.pem(authority.certificate))
    leaves: dict[str, tuple[str, tuple[str, ...]]] = {
        "envoy": (f"spiffe://{TRUST_DOMAIN}/envoy/bench", ("localhost",))
    }
    leaves.update({name: (spiffe_id, ()) for name, spiffe_id in IDENTITIES.items()})
    for name, (spiffe_id, dns) in leaves.items():
        cert, key = devcerts.mint_svid(authority, spiffe_id, dns_names=dns)
        (out / f"{name}.pem").write_bytes(devcerts.pem(cert))
        (out / f"{name}.key").write_bytes(devcerts.key_pem(key))
    return BenchCerts(out)


def check_request(call: Call, certs: BenchCerts) -> Any:
    """The CheckRequest Envoy would send for `call` over an mTLS connection."""
    request = external_auth_pb2.CheckRequest()
    attributes = request.attributes
    attributes.source.address.socket_address.address = "127.0.0.1"
    attributes.source.address.socket_address.port_value = 53412
    attributes.source.principal = IDENTITIES[call.identity]
    attributes.source.certificate = urllib.parse.quote(certs.leaf_pem(call.identity), safe="")
    attributes.destination.address.socket_address.address = "127.0.0.1"
    attributes.destination.address.socket_address.port_value = 8443
    attributes.destination.principal = f"spiffe://{TRUST_DOMAIN}/envoy/bench"
    http = attributes.request.http
    http.id = "9153846302548361837"
    http.method = call.method
    http.host = call.host
    http.path = call.path
    http.scheme = "https"
    http.protocol = "HTTP/2"
    headers = {
        ":authority": call.host,
        ":method": call.method,
        ":path": call.path,
        ":scheme": "https",
        "accept": "application/json",
        "user-agent": "bench-client/1.0",
        "x-forwarded-proto": "https",
        "x-request-id": "5f0c6f1e-3c51-4b8a-9d0e-5a7d2b8c4e11",
        "x-envoy-expected-rq-timeout-ms": "15000",
        **dict(call.headers),
    }
    for name, value in headers.items():
        http.headers[name] = value
    return request


def framed(message: bytes) -> bytes:
    """`message` as one gRPC length-prefixed frame (uncompressed)."""
    return struct.pack(">BI", 0, len(message)) + message
