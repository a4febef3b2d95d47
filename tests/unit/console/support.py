"""A real console for the tests: certificates minted around the real time (the console uses
the real clock), a memory store, a policy with an approval rule, the real Check pipeline
that creates pending approvals, and HTTPS clients presenting client certificates."""

from __future__ import annotations

import re
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from authz_server.admin.operations import AdminOperations
from authz_server.admin.service import policy_approvers
from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.console.server import ConsoleServer, start_console
from authz_server.core.decision import Decision
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.state.store import Store
from authz_server.tools import devcerts

POLICY = """\
version: 1
identity:
  trust_domains: [example.org, partner.org]
admin:
  principals: ["spiffe://example.org/humans/**"]
rules:
  - id: releases-publish
    description: Publish a release to the public package registry
    methods: [POST]
    paths: ["/v1/releases/**"]
    principals: ["spiffe://example.org/agents/**", "spiffe://example.org/humans/**"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/release-managers/*"], ttl: 15m}
"""

AGENT = "spiffe://example.org/agents/acme/release-bot"
ALICE = "spiffe://example.org/humans/release-managers/alice"  # admin and approver
CAROL = "spiffe://example.org/humans/release-managers/carol"  # admin and approver
BOB = "spiffe://example.org/humans/bob"  # admin, not an approver
FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"  # not an admin
RELEASE_BODY = b'{"tag": "v1.4.0"}'
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Pki:
    """A CA per trust domain, a rogue CA, and certificate files written on demand."""

    ca: devcerts.Authority
    partner: devcerts.Authority
    rogue: devcerts.Authority
    dir: Path
    files: dict[str, tuple[str, str]] = field(default_factory=dict)

    def client(
        self, spiffe_id: str, authority: devcerts.Authority | None = None, *chain: x509.Certificate
    ) -> tuple[str, str]:
        """(cert, key) files of an SVID for `spiffe_id` (then `chain`), example.org's CA by
        default."""
        name = f"client{len(self.files)}"
        cert, key = devcerts.mint_svid(authority or self.ca, spiffe_id)
        return self.write(name, [cert, *chain], key)

    def write(self, name: str, chain: list[x509.Certificate], key: Any) -> tuple[str, str]:
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"
        cert_path.write_bytes(b"".join(devcerts.pem(c) for c in chain))
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

    def certificate_header(self, spiffe_id: str) -> str:
        """The URL-encoded PEM of a fresh SVID, as Envoy passes a peer certificate."""
        cert, _ = devcerts.mint_svid(self.ca, spiffe_id)
        return urllib.parse.quote(devcerts.pem(cert).decode(), safe="")


def make_pki(directory: Path) -> Pki:
    pki = Pki(
        devcerts.mint_ca("example.org"),
        devcerts.mint_ca("partner.org"),
        devcerts.mint_ca("example.org", name="rogue CA"),
        directory,
    )
    (directory / "ca.pem").write_bytes(devcerts.pem(pki.ca.certificate))
    cert, key = devcerts.mint_svid(
        pki.ca, "spiffe://example.org/authz-server/console", ip_addresses=["127.0.0.1"]
    )
    pki.write("server", [cert], key)
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("console-pki"))


@dataclass
class Console:
    """A running console over `store`, and the Check pipeline sharing that store."""

    pki: Pki
    store: Store
    #: The snapshot in force (None: no policy loaded); the console reads it per request.
    holder: SnapshotHolder
    server: ConsoleServer
    operations: AdminOperations

    @property
    def snapshot(self) -> Snapshot:
        assert self.holder.snapshot is not None
        return self.holder.snapshot

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    async def check(
        self, principal: str = AGENT, body: bytes = RELEASE_BODY, path: str = "/v1/releases/acme"
    ) -> Decision:
        """One Check of `principal` publishing a release, through the real pipeline."""
        view = RequestView(
            method="POST",
            host="registry.internal",
            path=path,
            headers={"content-type": "application/json", "content-length": str(len(body))},
            body=body,
            principal=principal,
            certificate=self.pki.certificate_header(principal),
        )
        return await Pipeline(store=self.store).evaluate(view, self.snapshot)

    def session(self, identity: tuple[str, str] | None) -> aiohttp.ClientSession:
        """An HTTPS client trusting the console's CA, presenting `identity` (cert, key)."""
        context = ssl.create_default_context(cafile=self.pki.ca_file)
        if identity is not None:
            context.load_cert_chain(*identity)
        connector = aiohttp.TCPConnector(ssl=context, force_close=True)
        return aiohttp.ClientSession(self.url, connector=connector)


async def start_test_console(
    pki: Pki,
    store: Store | None = None,
    *,
    listen: str = "127.0.0.1:0",
    tls: tuple[str | None, str | None] | None = None,
) -> Console:
    """A console on `listen`, serving `tls` (cert, key files; the server SVID by default)."""
    store = store or MemoryStore()
    holder = SnapshotHolder(Snapshot(load_policy_text(POLICY), pki.bundles))

    def approvers_for(rule_id: str) -> tuple[PrincipalMatcher, ...]:
        snapshot = holder.snapshot
        return policy_approvers(snapshot.policy, rule_id) if snapshot is not None else ()

    operations = AdminOperations(store, approvers_for)
    cert, key = tls if tls is not None else pki.files["server"]
    server = await start_console(
        listen,
        operations=operations,
        snapshot_source=lambda: holder.snapshot,
        client_ca_bundles=pki.bundles,
        tls_cert=cert,
        tls_key=key,
    )
    return Console(pki, store, holder, server, operations)


@pytest.fixture
async def console(pki: Pki) -> AsyncIterator[Console]:
    running = await start_test_console(pki)
    yield running
    await running.server.stop()


def csrf_token(page: str) -> str:
    match = CSRF_FIELD.search(page)
    assert match is not None, "no CSRF field on the page"
    return match.group(1)
