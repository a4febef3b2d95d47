"""The AuthZEN listener for real: aiohttp on 127.0.0.1, mutual TLS with minted SVIDs (around
the real time: the server reads the real clock), the real pipeline, store and audit log.

Proves: the same decisions as a Check for the shared case table; only trusted PEPs ask
about others; a foreign CA cannot mint our IDs; a revoked subject is denied; HTTP-level
behaviour (statuses, X-Request-ID, metadata, limits); certificate rotation.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from envoy.service.auth.v3 import external_auth_pb2

from authz_server.audit.log import MemoryAudit
from authz_server.authzen import AuthzenServer, AuthzenService, Limits, start_authzen
from authz_server.check.pipeline import Pipeline
from authz_server.check.service import CheckService
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.telemetry.metrics import Metrics
from authz_server.tools import devcerts
from authz_server.transport.tls import TlsCredentials, server_certificate
from tests.authzen_cases import (
    BACKEND,
    CASES,
    COMPROMISED,
    FRONTEND,
    GATEWAY,
    IDENTITIES,
    POLICY,
    Case,
)
from tests.conftest import make_check_request

SERVER_ID = "spiffe://example.org/authz-server"


@dataclass
class Pki:
    ca: devcerts.Authority
    partner: devcerts.Authority
    dir: Path
    #: SPIFFE ID → (certificate file, key file, certificate)
    svids: dict[str, tuple[str, str, x509.Certificate]] = field(default_factory=dict)

    def mint(
        self, name: str, spiffe_id: str, authority: devcerts.Authority | None = None
    ) -> tuple[str, str]:
        if authority is None:
            authority = self.partner if spiffe_id.startswith("spiffe://partner.org/") else self.ca
        cert, key = devcerts.mint_svid(authority, spiffe_id, ip_addresses=["127.0.0.1"])
        stem = str(len(self.svids))  # names may be SPIFFE IDs: not file names
        cert_path, key_path = self.dir / f"{stem}.pem", self.dir / f"{stem}-key.pem"
        cert_path.write_bytes(devcerts.pem(cert))
        key_path.write_bytes(devcerts.key_pem(key))
        self.svids[name] = (str(cert_path), str(key_path), cert)
        return str(cert_path), str(key_path)

    def files(self, name: str) -> tuple[str, str]:
        return self.svids[name][:2]

    def envoy_certificate(self, spiffe_id: str) -> str:
        """The URL-encoded PEM Envoy puts in `source.certificate`."""
        return urllib.parse.quote(devcerts.pem(self.svids[spiffe_id][2]).decode(), safe="")

    @property
    def bundles(self) -> TrustBundles:
        return TrustBundles(
            {"example.org": (self.ca.certificate,), "partner.org": (self.partner.certificate,)}
        )

    @property
    def ca_file(self) -> str:
        return str(self.dir / "ca.pem")


@pytest.fixture(scope="module")
def authzen_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    # Minted around the real time: the listener verifies callers with the real clock.
    pki = Pki(
        devcerts.mint_ca("example.org"),
        devcerts.mint_ca("partner.org"),
        tmp_path_factory.mktemp("authzen"),
    )
    (pki.dir / "ca.pem").write_bytes(devcerts.pem(pki.ca.certificate))
    for spiffe_id in IDENTITIES:
        pki.mint(spiffe_id, spiffe_id)
    pki.mint("server", SERVER_ID)
    # A partner.org CA minting an example.org ID: passes the pooled-roots handshake.
    pki.mint("forged-gateway", GATEWAY, authority=pki.partner)
    return pki


@dataclass
class Rig:
    server: AuthzenServer
    pki: Pki
    audit: MemoryAudit
    store: MemoryStore
    metrics: Metrics
    credentials: TlsCredentials
    holder: SnapshotHolder

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def session(self, identity: str | None) -> aiohttp.ClientSession:
        context = ssl.create_default_context(cafile=self.pki.ca_file)
        if identity is not None:
            context.load_cert_chain(*self.pki.files(identity))
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    async def ask(
        self, identity: str, path: str, document: Any, **headers: str
    ) -> tuple[int, Any, Any]:
        async with self.session(identity) as session:
            body = document if isinstance(document, bytes) else json.dumps(document).encode()
            headers.setdefault("Content-Type", "application/json")
            async with session.post(self.base + path, data=body, headers=headers) as response:
                return response.status, await response.json(), response.headers


@pytest.fixture
async def rig(authzen_pki: Pki) -> AsyncIterator[Rig]:
    audit, store, metrics = MemoryAudit(), MemoryStore(), Metrics()
    holder = SnapshotHolder(Snapshot(load_policy_text(POLICY), authzen_pki.bundles))
    service = AuthzenService(Pipeline(store=store), holder, audit, metrics)
    _, key_file, cert = authzen_pki.svids["server"]
    credentials = TlsCredentials(
        server_certificate(_key(key_file), [cert], SERVER_ID), authzen_pki.bundles.roots_pem()
    )
    server = await start_authzen(
        "127.0.0.1:0", service, credentials=credentials, limits=Limits(max_body_bytes=64 * 1024)
    )
    yield Rig(server, authzen_pki, audit, store, metrics, credentials, holder)
    await server.stop()


def _key(path: str) -> Any:
    return load_pem_private_key(Path(path).read_bytes(), password=None)


def _evaluation(subject: str, path: str = "/v1/orders/17") -> dict[str, Any]:
    return {
        "subject": {"type": "spiffe", "id": subject},
        "action": {"name": "GET"},
        "resource": {"type": "http", "id": path, "properties": {"host": "orders.internal"}},
    }


def _outcome(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["decision"], record["reason"], record["rule"], record["dry_run"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_same_decision_as_a_check(rig: Rig, case: Case) -> None:
    """A trusted gateway asks about the subject; the Check carries the subject's SVID."""
    status, body, _ = await rig.ask(GATEWAY, "/access/v1/evaluation", case.evaluation)
    assert status == 200

    check_audit = MemoryAudit()
    check = CheckService(Pipeline(MemoryStore()), SnapshotHolder(rig.holder.snapshot), check_audit)
    http = case.http
    request = make_check_request(
        method=http.method,
        host=http.host,
        path=http.path,
        headers=dict(http.headers),
        body=http.body,
        principal=case.subject,
        certificate=rig.pki.envoy_certificate(case.subject),
    )
    response = external_auth_pb2.CheckResponse.FromString(
        await check.check_bytes(request.SerializeToString())
    )

    (authzen_record,), (check_record,) = rig.audit.records, check_audit.records
    expected = (
        "allow" if case.decision and not case.dry_run else "deny",
        case.reason,
        case.rule,
        case.dry_run,
    )
    assert _outcome(check_record) == expected
    assert _outcome(authzen_record) == expected
    assert authzen_record["principal"] == check_record["principal"]
    assert body["decision"] is case.decision is (response.status.code == 0)
    assert (body["context"]["reason"], body["context"].get("rule")) == (case.reason, case.rule)
    assert authzen_record["api"] == "authzen" and authzen_record["vouched_by"] == GATEWAY
    assert "api" not in check_record


async def test_a_workload_may_ask_only_about_itself(rig: Rig) -> None:
    document = {
        "subject": {"type": "spiffe", "id": FRONTEND},
        "action": {"name": "GET"},
        "evaluations": [
            {
                "resource": {
                    "type": "http",
                    "id": "/v1/orders/1",
                    "properties": {"host": "orders.internal"},
                }
            },
            {
                "subject": {"type": "spiffe", "id": BACKEND},
                "resource": {"type": "http", "id": "/v1/orders/1"},
            },
        ],
    }
    status, body, _ = await rig.ask(FRONTEND, "/access/v1/evaluations", document)
    assert status == 200
    itself, other = body["evaluations"]
    assert (itself["decision"], itself["context"]["reason"]) == (True, "allowed_by_rule")
    assert (other["decision"], other["context"]["reason"]) == (False, "subject_not_caller")
    assert [r["vouched_by"] for r in rig.audit.records] == [FRONTEND, FRONTEND]
    # The same question from a trusted gateway is answered on its merits.
    status, body, _ = await rig.ask(GATEWAY, "/access/v1/evaluation", _evaluation(BACKEND))
    assert body["context"]["reason"] == "no_matching_rule"


async def test_a_foreign_ca_cannot_mint_our_ids(rig: Rig) -> None:
    """partner.org's CA passes the pooled-roots handshake; its example.org ID is refused."""
    status, body, _ = await rig.ask(
        "forged-gateway", "/access/v1/evaluation", _evaluation(FRONTEND)
    )
    assert status == 401
    assert "does not chain to the trust bundle of 'example.org'" in body["error"]["message"]
    assert rig.audit.records == []


async def test_a_trust_domain_the_policy_does_not_trust_is_refused(rig: Rig) -> None:
    rig.holder.snapshot = Snapshot(
        load_policy_text(
            POLICY.replace("[example.org, partner.org]", "[example.org]").replace(
                '"spiffe://partner.org/**"', '"spiffe://example.org/partners/**"'
            )
        ),
        rig.pki.bundles,
    )
    status, body, _ = await rig.ask(
        "spiffe://partner.org/analytics", "/access/v1/evaluation", _evaluation(FRONTEND)
    )
    assert (
        status == 401 and "'partner.org' is not trusted by the policy" in body["error"]["message"]
    )


async def test_no_client_certificate_no_connection(rig: Rig) -> None:
    async with rig.session(None) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(rig.base + "/.well-known/authzen-configuration") as response:
                await response.read()


async def test_a_revoked_subject_is_denied(rig: Rig) -> None:
    await rig.store.revoke(FRONTEND, 600, "laptop stolen", "test")
    status, body, _ = await rig.ask(GATEWAY, "/access/v1/evaluation", _evaluation(FRONTEND))
    assert (status, body["decision"], body["context"]["reason"]) == (200, False, "revoked")
    status, body, _ = await rig.ask(FRONTEND, "/access/v1/evaluation", _evaluation(FRONTEND))
    assert body["context"]["reason"] == "revoked"  # asking about itself: the same
    status, body, _ = await rig.ask(GATEWAY, "/access/v1/evaluation", _evaluation(COMPROMISED))
    assert body["context"]["reason"] == "revoked"  # identity.deny
    assert [r["reason"] for r in rig.audit.records] == ["revoked"] * 3
    counted = rig.metrics.registry.get_sample_value(
        "authz_decisions_total",
        {"decision": "deny", "reason": "revoked", "rule": "", "dry_run": "false"},
    )
    assert counted == 3


async def test_a_revoked_gateway_vouches_for_nobody(rig: Rig) -> None:
    await rig.store.revoke("spiffe://example.org/gateways/*", 600, "compromised", "test")
    status, body, _ = await rig.ask(GATEWAY, "/access/v1/evaluation", _evaluation(FRONTEND))
    assert (status, body["decision"], body["context"]["reason"]) == (200, False, "revoked")
    assert rig.audit.records[0]["principal"] == GATEWAY


async def test_http_behaviour(rig: Rig) -> None:
    status, body, headers = await rig.ask(
        GATEWAY, "/access/v1/evaluation", _evaluation(FRONTEND), **{"X-Request-ID": "bfe9eb29-ab87"}
    )
    assert status == 200 and headers["X-Request-ID"] == "bfe9eb29-ab87"
    assert headers["Content-Type"] == "application/json" and headers["Cache-Control"] == "no-store"
    assert rig.audit.records[0]["request_id"] == "bfe9eb29-ab87"

    status, body, headers = await rig.ask(
        GATEWAY, "/access/v1/evaluation", b"{", **{"X-Request-ID": "r2"}
    )
    assert (status, headers["X-Request-ID"]) == (400, "r2") and "not valid JSON" in body["error"][
        "message"
    ]
    status, body, _ = await rig.ask(GATEWAY, "/access/v1/evaluation", b" " * (64 * 1024 + 1))
    assert status == 413 and "larger than 65536 bytes" in body["error"]["message"]
    status, body, _ = await rig.ask(GATEWAY, "/access/v1/search/subject", {})
    assert status == 404 and body["error"]["status"] == 404
    status, body, _ = await rig.ask(
        GATEWAY, "/access/v1/evaluation", _evaluation(FRONTEND), **{"Content-Type": "text/plain"}
    )
    assert status == 415

    async with rig.session(GATEWAY) as session:
        async with session.get(rig.base + "/access/v1/evaluation") as response:
            assert (response.status, response.headers["Allow"]) == (405, "POST")
            assert (await response.json())["error"]["status"] == 405
        async with session.get(rig.base + "/.well-known/authzen-configuration") as response:
            assert response.status == 200
            assert await response.json() == {
                "policy_decision_point": rig.base,
                "access_evaluation_endpoint": rig.base + "/access/v1/evaluation",
                "access_evaluations_endpoint": rig.base + "/access/v1/evaluations",
            }


async def test_chunked_body_over_the_limit_is_413(rig: Rig) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    async with rig.session(GATEWAY) as session:
        headers = {"Content-Type": "application/json"}
        async with session.post(
            rig.base + "/access/v1/evaluation", data=chunks(), headers=headers
        ) as response:
            assert response.status == 413


async def test_certificate_rotation(rig: Rig) -> None:
    async def served_serial() -> int:
        context = ssl.create_default_context(cafile=rig.pki.ca_file)
        context.load_cert_chain(*rig.pki.files(GATEWAY))
        _, writer = await asyncio.open_connection("127.0.0.1", rig.server.port, ssl=context)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number

    assert await served_serial() == rig.pki.svids["server"][2].serial_number
    cert, key = devcerts.mint_svid(rig.pki.ca, SERVER_ID, ip_addresses=["127.0.0.1"])
    rig.credentials.update(certificate=server_certificate(key, [cert], SERVER_ID))
    assert await served_serial() == cert.serial_number


async def test_insecure_local_plaintext_on_loopback() -> None:
    audit = MemoryAudit()
    holder = SnapshotHolder(Snapshot(load_policy_text(POLICY), TrustBundles.empty()))
    server = await start_authzen(
        "127.0.0.1:0", AuthzenService(Pipeline(MemoryStore()), holder, audit), insecure_local=True
    )
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(
                base + "/access/v1/evaluation", json=_evaluation(FRONTEND)
            ) as response:
                assert (response.status, (await response.json())["decision"]) == (200, True)
            async with session.get(base + "/.well-known/authzen-configuration") as response:
                assert (await response.json())["policy_decision_point"] == base
    finally:
        await server.stop()
    assert audit.records[0]["vouched_by"] == "local-pep (--authzen-insecure-local)"
