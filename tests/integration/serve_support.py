"""Pieces shared by the tests of `serve` with a store and an admin API: a policy with
stateful rules, certificates on disk, Checks and admin calls by port."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from authz_server.admin import authz_admin_pb2 as pb
from authz_server.admin.service import SERVICE_NAME
from authz_server.runtime.settings import Settings
from authz_server.tools import devcerts
from tests.integration.support import check, request_for

RELEASE = "spiffe://example.org/ci/release"
ALICE = "spiffe://example.org/humans/release-managers/alice"
BOB = "spiffe://example.org/humans/bob"  # an admin, not an approver
AGENT = "spiffe://example.org/agents/acme/bot"

POLICY = """\
version: 1
identity: {trust_domains: [example.org]}
admin:
  principals: ["spiffe://example.org/humans/**"]
rules:
  - id: releases-publish
    methods: [POST]
    paths: ["/v1/releases/**"]
    principals: ["spiffe://example.org/ci/release", "spiffe://example.org/humans/**"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/release-managers/*"], ttl: 15m}
  - id: transfers
    methods: [POST]
    paths: ["/v1/transfers"]
    effect: allow
    when:
      rate_limit: {requests: 2, per: 1h}
  - id: orders-read
    paths: ["/v1/orders/**"]
    effect: allow
"""


@dataclass(frozen=True)
class Files:
    """Certificates and the policy written to a directory."""

    dir: Path
    ca: devcerts.Authority

    @property
    def policy(self) -> Path:
        return self.dir / "policy.yaml"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def identity(self, name: str, spiffe_id: str, ca: devcerts.Authority | None = None) -> Path:
        """Mint `spiffe_id` as files `name.pem`/`name.key` (our CA unless `ca`)."""
        cert, key = devcerts.mint_svid(ca or self.ca, spiffe_id)
        (self.dir / f"{name}.pem").write_bytes(devcerts.pem(cert))
        (self.dir / f"{name}.key").write_bytes(devcerts.key_pem(key))
        return self.dir / f"{name}.pem"

    def settings(self, **kw: Any) -> Settings:
        """In-process serve settings with an mTLS admin API on a free port."""
        cert, key = self.pair("admin-server")
        base: dict[str, Any] = {
            "policy": str(self.policy),
            "listen": "127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "trust_bundles": {"example.org": str(self.ca_file)},
            "admin_listen": "127.0.0.1:0",
            "admin_tls_cert": str(cert),
            "admin_tls_key": str(key),
            "reload_interval": 0.1,
        }
        return Settings(**{**base, **kw})

    def admin_args(self, port: int) -> list[str]:
        cert, key = self.pair("admin-server")
        return [
            "--admin-listen", f"127.0.0.1:{port}",
            "--admin-tls-cert", str(cert), "--admin-tls-key", str(key),
        ]  # fmt: skip


def write_files(directory: Path, policy: str = POLICY) -> Files:
    ca = devcerts.mint_ca("example.org")
    files = Files(directory, ca)
    files.ca_file.write_bytes(devcerts.pem(ca.certificate))
    files.policy.write_text(policy)
    cert, key = devcerts.mint_svid(
        ca, "spiffe://example.org/authz-server", ip_addresses=["127.0.0.1"]
    )
    (directory / "admin-server.pem").write_bytes(devcerts.pem(cert))
    (directory / "admin-server.key").write_bytes(devcerts.key_pem(key))
    for name, spiffe_id in (("alice", ALICE), ("bob", BOB), ("release", RELEASE)):
        files.identity(name, spiffe_id)
    return files


def release(principal: str = RELEASE, body: bytes = b'{"tag":"v7"}') -> Any:
    """A CheckRequest: POST /v1/releases/7 with a JSON body, from `principal`."""
    return request_for(
        principal,
        method="POST",
        path="/v1/releases/7",
        headers={"content-type": "application/json"},
        body=body,
    )


def transfer(principal: str = AGENT) -> Any:
    return request_for(principal, method="POST", path="/v1/transfers")


def deny_body(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.denied_response.body)
    return body


def header(response: Any, name: str) -> str | None:
    for option in response.denied_response.headers:
        if option.header.key == name:
            return str(option.header.value)
    return None


async def approval_id_for(channel: grpc.aio.Channel, request: Any) -> str:
    """Send `request` once; it must be refused with approval_required: its approval id."""
    response = await check(channel, request)
    body = deny_body(response)
    assert body["reason"] == "approval_required", body
    assert header(response, "x-authz-approval-id") == body["approval_id"]
    return str(body["approval_id"])


async def admin_call(
    port: int,
    files: Files,
    method: str,
    request: Any,
    reply: Any,
    identity: tuple[Path, Path] | None,
) -> Any:
    """One admin API call to 127.0.0.1:`port` presenting `identity`, or no certificate."""
    key, cert = (identity[1].read_bytes(), identity[0].read_bytes()) if identity else (None, None)
    credentials = grpc.ssl_channel_credentials(files.ca_file.read_bytes(), key, cert)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE_NAME}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply.FromString,
        )
        return await stub(request, timeout=10)


async def approve(port: int, files: Files, approval_id: str, who: str = "alice") -> Any:
    request = pb.DecideRequest(approval_id=approval_id)
    return await admin_call(port, files, "Approve", request, pb.Approval, files.pair(who))
