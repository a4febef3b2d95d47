"""XFCC through two real Envoys: a gateway (the trusted proxy) in front of the sidecar.

    client ─mTLS─▶ gateway Envoy ─mTLS (gateway SVID)─▶ sidecar Envoy ─Check─▶ authz-server
                   SANITIZE_SET, writes                FORWARD_ONLY
                   By/Hash/Cert/Chain/Subject/URI

The gateway replaces whatever XFCC the client sent with what it verified itself, so the
server, trusting only the gateway's SVID, sees the client's real identity and certificate.
A client that talks to the sidecar directly can send any XFCC it likes: it is not a
trusted proxy, so the header grants nothing and is noted as a spoofing attempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_server.tools import devcerts, stack
from tests.e2e import harness
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

GATEWAY = "spiffe://example.org/gateway/edge"
FRONTEND = harness.FRONTEND
ALICE = harness.HUMAN
DEEP = "spiffe://example.org/ns/shop/sa/deep"  # issued through an intermediate CA

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

POLICY = f"""\
version: 1
identity:
  trust_domains: [example.org]
  sources: [xfcc, peer]
  require_certificate: true
  xfcc: {{trusted_proxies: ["spiffe://example.org/gateway/*"]}}
rules:
  - id: orders-read
    methods: [GET]
    paths: ["/v1/orders/**"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: admin
    paths: ["/admin/**"]
    principals: ["{ALICE}"]
    effect: allow
"""


@dataclass
class Setup:
    certs: harness.Certs
    gateway_port: int
    sidecar_port: int
    audit_log: Path

    def request(self, port: int, path: str, as_: str, **kwargs: Any) -> stack.Reply:
        cert = self.certs.pair(as_)
        return stack.https_request(port, path, ca=self.certs.ca, cert=cert, **kwargs)

    def record(self, reply: stack.Reply) -> dict[str, Any]:
        """The audit record of the decision behind `reply` (allowed or denied)."""
        decision_id = reply.headers.get("x-authz-decision-id")
        if decision_id is None:  # allowed: the id went upstream, the backend echoes it
            decision_id = reply.json()["headers"]["x-authz-decision-id"]
        (found,) = harness.wait_for_audit(self.audit_log, decision_id)
        return found


def _mint(out: Path) -> harness.Certs:
    out.mkdir(parents=True, exist_ok=True)
    ours = devcerts.mint_ca("example.org")
    intermediate = devcerts.mint_ca("example.org", issuer=ours, name="intermediate")
    (out / "ca.pem").write_bytes(devcerts.pem(ours.certificate))
    leaves = {
        "envoy": (ours, "spiffe://example.org/envoy/front-proxy", ("localhost",)),
        "gateway": (ours, GATEWAY, ()),
        "frontend": (ours, FRONTEND, ()),
        "deep": (intermediate, DEEP, ()),
    }
    for name, (authority, spiffe_id, dns) in leaves.items():
        cert, key = devcerts.mint_svid(authority, spiffe_id, dns_names=dns)
        chain = devcerts.pem(cert)
        if authority is intermediate:  # the client sends its intermediate along
            chain += devcerts.pem(intermediate.certificate)
        (out / f"{name}.pem").write_bytes(chain)
        (out / f"{name}.key").write_bytes(devcerts.key_pem(key))
    return harness.Certs(out)


def _hcm(document: dict[str, Any]) -> dict[str, Any]:
    hcm: dict[str, Any] = document["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]["typed_config"]
    return hcm


def _sidecar(config: str) -> str:
    """The shipped proxy with ext_authz, passing the XFCC header on unchanged."""
    document = yaml.safe_load(config)
    hcm = _hcm(document)
    hcm["forward_client_cert_details"] = "FORWARD_ONLY"
    hcm.pop("set_current_client_cert_details")
    return str(yaml.safe_dump(document, sort_keys=False))


def _gateway(config: str, certs: harness.Certs) -> str:
    """No ext_authz of its own: it verifies the client, writes XFCC and calls the sidecar
    over mTLS with the gateway SVID."""
    document = yaml.safe_load(config)
    hcm = _hcm(document)
    hcm["set_current_client_cert_details"] = {
        "uri": True,
        "cert": True,
        "chain": True,
        "subject": True,
    }
    hcm["http_filters"] = [f for f in hcm["http_filters"] if "ext_authz" not in f["name"]]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        route.pop("typed_per_filter_config", None)
    gateway_pem, gateway_key = certs.pair("gateway")
    for cluster in document["static_resources"]["clusters"]:
        if cluster["name"] != "backend":
            continue
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": UPSTREAM_TLS,
                "sni": "localhost",
                "common_tls_context": {
                    "tls_certificates": [
                        {
                            "certificate_chain": {"filename": str(gateway_pem)},
                            "private_key": {"filename": str(gateway_key)},
                        }
                    ],
                    "validation_context": {"trusted_ca": {"filename": str(certs.ca)}},
                },
            },
        }
    return str(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture(scope="module")
def setup(e2e: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("xfcc")
    certs = _mint(workdir / "certs")
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    audit_log = workdir / "audit.jsonl"
    logs = workdir / "logs"
    services: list[stack.Service] = []
    try:
        authz = stack.start_authz(
            logs, policy=policy, bundles={"example.org": certs.ca}, audit_log=audit_log
        )
        services.append(authz)
        ports = {name: (stack.free_port(), stack.free_port()) for name in ("sidecar", "gateway")}
        sidecar_port, sidecar_admin = ports["sidecar"]
        sidecar = harness.render_front_proxy(
            certs,
            authz_port=authz.port,
            backend_port=e2e.backend.port,
            listen_port=sidecar_port,
            admin_port=sidecar_admin,
        )
        services.append(
            stack.start_envoy(logs, "envoy-sidecar", _sidecar(sidecar), listen_port=sidecar_port)
        )
        gateway_port, gateway_admin = ports["gateway"]
        gateway = harness.render_front_proxy(
            certs,
            authz_port=authz.port,  # unused: the gateway has no ext_authz filter
            backend_port=sidecar_port,
            listen_port=gateway_port,
            admin_port=gateway_admin,
        )
        services.append(
            stack.start_envoy(
                logs, "envoy-gateway", _gateway(gateway, certs), listen_port=gateway_port
            )
        )
        e2e.services.extend(services)  # their logs are printed after a failure
        yield Setup(certs, gateway_port, sidecar_port, audit_log)
    finally:
        for service in reversed(services):
            service.stop()
            if service in e2e.services:
                e2e.services.remove(service)


def test_identity_forwarded_by_the_trusted_gateway(setup: Setup) -> None:
    """Through the gateway the server sees the client, verified from the forwarded Cert."""
    reply = setup.request(setup.gateway_port, "/v1/orders/7", as_="frontend")
    assert reply.status == 200, reply.body
    assert reply.json()["headers"]["x-authz-principal"] == FRONTEND
    record = setup.record(reply)
    assert (record["principal"], record["identity_source"]) == (FRONTEND, "xfcc")
    assert "identity_note" not in record


def test_chain_from_the_gateway_verifies_an_intermediate_issued_svid(setup: Setup) -> None:
    """A client SVID issued by an intermediate verifies with the intermediate from Chain=."""
    reply = setup.request(setup.gateway_port, "/v1/orders/7", as_="deep")
    assert reply.status == 200, reply.body
    assert setup.record(reply)["principal"] == DEEP


def test_forged_xfcc_through_the_gateway_is_replaced(setup: Setup) -> None:
    """The gateway drops the client's XFCC: claiming alice still leaves the client itself."""
    forged = f"By={GATEWAY};URI={ALICE}"
    reply = setup.request(
        setup.gateway_port,
        "/admin/users",
        as_="frontend",
        headers=[("x-forwarded-client-cert", forged)],
    )
    assert reply.status == 403, reply.body
    assert reply.json()["reason"] == "no_matching_rule"
    record = setup.record(reply)
    assert (record["principal"], record["identity_source"]) == (FRONTEND, "xfcc")


def test_forged_xfcc_from_an_untrusted_peer_grants_nothing(setup: Setup) -> None:
    """Sent straight to the sidecar, a forged XFCC is ignored and noted as spoofing."""
    forged = f"By={GATEWAY};URI={ALICE}"
    reply = setup.request(
        setup.sidecar_port,
        "/admin/users",
        as_="frontend",
        headers=[("x-forwarded-client-cert", forged)],
    )
    assert reply.status == 403, reply.body
    assert reply.json()["reason"] == "no_matching_rule"
    record = setup.record(reply)
    assert (record["principal"], record["identity_source"]) == (FRONTEND, "peer")
    assert record["identity_note"] == "xfcc_spoofing"


def test_gateway_without_xfcc_is_only_itself(setup: Setup) -> None:
    """The gateway calling on its own behalf (no header) is its own peer identity."""
    reply = setup.request(setup.sidecar_port, "/v1/orders/7", as_="gateway")
    assert reply.status == 403, reply.body
    assert (setup.record(reply)["principal"]) == GATEWAY
