"""Shared pieces of the admin API tests: certificates, a policy, a server, a client call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authz_server.admin.server import AdminServer, start_admin_server
from authz_server.admin.service import SERVICE_NAME, PolicyStatus, pipeline_explain
from authz_server.check.snapshot import Snapshot
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.patterns import compile_principal_pattern
from authz_server.policy.load import load_policy_text
from authz_server.state.fingerprint import action_fingerprint
from authz_server.state.memory import MemoryStore
from authz_server.state.store import PendingAction, Store
from authz_server.tools import devcerts

POLICY = """\
version: 1
identity:
  trust_domains: [example.org, partner.org]
admin:
  principals: ["spiffe://example.org/humans/**"]
rules:
  - id: releases-publish
    methods: [POST]
    paths: ["/v1/releases/**"]
    principals: ["spiffe://example.org/ci/release", "spiffe://example.org/humans/**"]
    effect: allow
"""

RELEASE = "spiffe://example.org/ci/release"
ALICE = "spiffe://example.org/humans/release-managers/alice"  # admin and approver
CAROL = "spiffe://example.org/humans/release-managers/carol"  # admin and approver
BOB = "spiffe://example.org/humans/bob"  # admin, not an approver
FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"  # not an admin
APPROVERS = {"releases-publish": (compile_principal_pattern(ALICE.rsplit("/", 1)[0] + "/*"),)}


@dataclass
class Pki:
    ca: devcerts.Authority
    partner: devcerts.Authority
    rogue: devcerts.Authority
    dir: Path
    files: dict[str, tuple[str, str]] = field(default_factory=dict)

    def client(
        self, spiffe_id: str, authority: devcerts.Authority | None = None
    ) -> tuple[str, str]:
        """(cert, key) files of an SVID for `spiffe_id`, by default from the example.org CA."""
        name = f"{len(self.files)}"
        cert, key = devcerts.mint_svid(authority or self.ca, spiffe_id)
        return self._write(name, cert, key)

    def _write(self, name: str, cert: Any, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"
        cert_path.write_bytes(devcerts.pem(cert))
        key_path.write_bytes(devcerts.key_pem(key))
        self.files[name] = (str(cert_path), str(key_path))
        return self.files[name]

    @property
    def ca_file(self) -> str:
        return str(self.dir / "ca.pem")

    @property
    def bundles(self) -> TrustBundles:
        return TrustBundles(
            {"example.org": (self.ca.certificate,), "partner.org": (self.partner.certificate,)}
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("admin-pki")
    pki = Pki(
        devcerts.mint_ca("example.org"),
        devcerts.mint_ca("partner.org"),
        devcerts.mint_ca("example.org", name="rogue CA"),
        out,
    )
    (out / "ca.pem").write_bytes(devcerts.pem(pki.ca.certificate))
    cert, key = devcerts.mint_svid(
        pki.ca, "spiffe://example.org/authz-server", ip_addresses=["127.0.0.1"]
    )
    pki._write("server", cert, key)
    return pki


@pytest.fixture
def snapshot(pki: Pki) -> Snapshot:
    return Snapshot(load_policy_text(POLICY), pki.bundles)


async def start_admin(
    pki: Pki, store: Store, snapshot_source: Callable[[], Snapshot | None]
) -> AdminServer:
    cert, key = pki.files["server"]
    return await start_admin_server(
        "127.0.0.1:0",
        tls_cert=cert,
        tls_key=key,
        client_ca_bundles=pki.bundles,
        insecure_local=False,
        store=store,
        snapshot_source=snapshot_source,
        explain=pipeline_explain(snapshot_source),
        approvers_for=lambda rule_id: APPROVERS.get(rule_id, ()),
        policy_status=lambda: PolicyStatus(last_error="policy.yaml:3: bad"),
    )


@pytest.fixture
def admin_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def admin(
    pki: Pki, admin_store: MemoryStore, snapshot: Snapshot
) -> AsyncIterator[AdminServer]:
    """A running admin server (mutual TLS) over `admin_store` and the test policy."""
    server = await start_admin(pki, admin_store, lambda: snapshot)
    yield server
    await server.stop(0)


async def call(
    server: AdminServer,
    pki: Pki,
    method: str,
    request: Any,
    reply: Any,
    identity: tuple[str, str] | None,
) -> Any:
    """One admin call presenting `identity` (cert, key files), or no client certificate."""
    cert_key = (
        (Path(identity[1]).read_bytes(), Path(identity[0]).read_bytes())
        if identity
        else (None, None)
    )
    credentials = grpc.ssl_channel_credentials(
        Path(pki.ca_file).read_bytes(), private_key=cert_key[0], certificate_chain=cert_key[1]
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE_NAME}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply.FromString,
        )
        return await stub(request, timeout=10)


async def refused(*args: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(*args)
    return info.value


def pending(principal: str = RELEASE, body: bytes = b'{"tag": "v1"}') -> PendingAction:
    return PendingAction(
        approval_id=action_fingerprint(principal, "POST", "", "/v1/releases/7", "", body),
        principal=principal,
        method="POST",
        host="",
        path="/v1/releases/7",
        query="",
        body_digest=None,
        rule_id="releases-publish",
        approvers=(APPROVERS["releases-publish"][0].text,),
        ttl_s=900,
    )
