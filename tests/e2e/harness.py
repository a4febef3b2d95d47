"""Certificates, policy and Envoy config variants for the e2e tests.

The processes themselves are started by `authz_server.tools.stack`, shared with the demo;
this module adds what only the tests need: deliberately bad certificates and the
misconfigured Envoy variants that show the server holding the line on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz_server.tools import devcerts, envoy_config
from authz_server.tools.envoy_config import render_envoy_config

ROOT = Path(__file__).resolve().parents[2]
FRONT_PROXY = ROOT / "envoy" / "front-proxy.yaml"

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
AGENT = "spiffe://example.org/agents/acme/bot"
HUMAN = "spiffe://example.org/humans/alice"
PARTNER = "spiffe://partner.org/billing/app"

POLICY = """\
version: 1
identity:
  trust_domains: [example.org, partner.org]
  sources: [peer]
  require_certificate: true
defaults:
  decision: deny
  mode: enforce
rules:
  - id: orders-read
    methods: [GET, HEAD]
    paths: ["/v1/orders", "/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: tenant-scope
    paths: ["/v1/tenants/{tenant}/**"]
    principals: ["spiffe://example.org/agents/{tenant}/*"]
    effect: allow
  - id: public-read               # wide on purpose: a path trick must not ride on it
    methods: [GET]
    paths: ["/public/**"]
    effect: allow
  - id: partner-billing
    paths: ["/v1/billing/**"]
    principals: ["spiffe://partner.org/**"]
    effect: allow
  - id: no-admin-from-agents
    paths: ["/admin/**"]
    principals: ["spiffe://example.org/agents/**"]
    effect: deny
"""


@dataclass(frozen=True)
class Certs:
    """A directory of PEM files: `ca.pem` (example.org), `partner-ca.pem`, and per name
    `NAME.pem`/`NAME.key`. `envoy` is the proxy's own SVID (DNS SAN localhost)."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def partner_ca(self) -> Path:
        return self.dir / "partner-ca.pem"

    @property
    def pooled_ca(self) -> Path:
        return self.dir / "pooled-ca.pem"

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"


def mint_certs(out: Path, extra: dict[str, str] | None = None) -> Certs:
    """Good SVIDs for each caller, plus the bad ones the tests present on purpose.

    `extra` adds more good SVIDs of our trust domain, as name → SPIFFE ID.
    """
    out.mkdir(parents=True, exist_ok=True)
    ours = devcerts.mint_ca("example.org")
    partner = devcerts.mint_ca("partner.org")
    (out / "ca.pem").write_bytes(devcerts.pem(ours.certificate))
    (out / "partner-ca.pem").write_bytes(devcerts.pem(partner.certificate))
    # Both CAs in one trust store: the misconfiguration the pooled variant reproduces.
    (out / "pooled-ca.pem").write_bytes(
        devcerts.pem(ours.certificate) + devcerts.pem(partner.certificate)
    )
    none: tuple[str, ...] = ()
    leaves = {  # name: (issuer, URI SAN, extra URI SANs, DNS SANs)
        "envoy": (ours, "spiffe://example.org/envoy/front-proxy", none, ("localhost",)),
        "frontend": (ours, FRONTEND, none, none),
        "agent": (ours, AGENT, none, none),
        "human": (ours, HUMAN, none, none),
        # First URI SAN is a permitted identity: Envoy reports it as the principal.
        "two-uris": (ours, FRONTEND, (AGENT,), none),
        # The partner's CA minting one of *our* identities.
        "forged": (partner, FRONTEND, none, none),
        "partner": (partner, PARTNER, none, none),
    }
    for name, spiffe_id in (extra or {}).items():
        leaves[name] = (ours, spiffe_id, none, none)
    for name, (authority, spiffe_id, extra_uris, dns_names) in leaves.items():
        cert, key = devcerts.mint_svid(
            authority, spiffe_id, extra_uris=extra_uris, dns_names=dns_names
        )
        (out / f"{name}.pem").write_bytes(devcerts.pem(cert))
        (out / f"{name}.key").write_bytes(devcerts.key_pem(key))
    return Certs(out)


def render_front_proxy(
    certs: Certs, *, authz_port: int, backend_port: int, listen_port: int, admin_port: int
) -> str:
    """The shipped front proxy, filled in for loopback."""
    return render_envoy_config(
        FRONT_PROXY,
        LISTEN_ADDRESS="127.0.0.1",
        LISTEN_PORT=listen_port,
        ADMIN_PORT=admin_port,
        CERT_DIR=certs.dir,
        TRUST_DOMAIN="example.org",
        AUTHZ_PORT=authz_port,
        BACKEND_PORT=backend_port,
    )


with_trusted_ca = envoy_config.with_trusted_ca


def _edit(config: str, change: Callable[[dict[str, Any], dict[str, Any]], None]) -> str:
    """Apply `change(tls_context, http_connection_manager)` to the one listener."""
    document = yaml.safe_load(config)
    chain = document["static_resources"]["listeners"][0]["filter_chains"][0]
    change(chain["transport_socket"]["typed_config"], chain["filters"][0]["typed_config"])
    return str(yaml.safe_dump(document, sort_keys=False))


def without_path_normalisation(config: str) -> str:
    """The path settings turned off, so non-canonical paths reach the server."""

    def change(_tls: dict[str, Any], hcm: dict[str, Any]) -> None:
        hcm["normalize_path"] = False
        hcm["merge_slashes"] = False
        hcm["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"

    return _edit(config, change)


def with_string_body(config: str) -> str:
    """The body sent as the UTF-8 `body` string instead of `raw_body` (pack_as_bytes off):
    the server must judge both alike."""

    def change(_tls: dict[str, Any], hcm: dict[str, Any]) -> None:
        hcm["http_filters"][0]["typed_config"]["with_request_body"]["pack_as_bytes"] = False

    return _edit(config, change)


def without_request_body(config: str) -> str:
    """No route sends the body: a deployment that forgot the body routes."""

    def change(_tls: dict[str, Any], hcm: dict[str, Any]) -> None:
        off = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"disable_request_body_buffering": True},
        }
        for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
            if "route" in route:
                per_filter = route.setdefault("typed_per_filter_config", {})
                per_filter["envoy.filters.http.ext_authz"] = off

    return _edit(config, change)


def audit_records(path: Path) -> list[dict[str, Any]]:
    """Every record in the audit log (one JSON object per line)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def wait_for_audit(path: Path, decision_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The records carrying `decision_id`, once at least one is flushed (audit is buffered)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in audit_records(path) if r.get("decision_id") == decision_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
