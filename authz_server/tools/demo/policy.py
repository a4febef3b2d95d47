"""The demo's policy: the rules the tour exercises, and the approvals section that points
notifications at the demo's receiver and links them to its console."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DEMO_POLICY", "demo_policy"]

DEMO_POLICY = """\
# The demo's policy: edit it and restart the demo to try your own rules.
version: 1
identity:
  trust_domains: [example.org]
  sources: [peer]
  require_certificate: true
defaults:
  decision: deny
  mode: enforce
admin:
  principals: ["spiffe://example.org/humans/*"]   # who may use the admin API and console
rules:
  - id: agent-transfers
    description: An agent moves money only with a human's approval, once per approval
    methods: [POST]
    paths: ["/v1/transfers"]
    principals: ["spiffe://example.org/agents/*/*"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/*"], ttl: 15m}
  - id: orders-read
    description: Shop frontends read orders
    methods: [GET, HEAD]
    paths: ["/v1/orders", "/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: tenant-scope
    description: An agent acts only inside its own tenant
    paths: ["/v1/tenants/{tenant}/**"]
    principals: ["spiffe://example.org/agents/{tenant}/*"]
    effect: allow
  - id: humans-read-reports
    methods: [GET]
    paths: ["/v1/reports/**"]
    principals: ["spiffe://example.org/humans/*"]
    effect: allow
  - id: no-admin-from-agents
    paths: ["/admin/**"]
    principals: ["spiffe://example.org/agents/**"]
    effect: deny
"""


def demo_policy(console_url: str, hook_url: str, secret_file: Path) -> str:
    """`DEMO_POLICY` with `admin.approvals`: the console that notifications link to, and the
    demo's receiver with the file of the secret that signs them."""
    approvals = (
        "  approvals:\n"
        f"    console_url: {json.dumps(console_url)}   # links: <console_url>/approvals/<id>\n"
        "    notify:\n"
        f"      - url: {json.dumps(hook_url)}\n"
        f"        secret_file: {json.dumps(str(secret_file))}\n"
        "        name: demo-receiver\n"
    )
    return DEMO_POLICY.replace("\nrules:\n", f"\n{approvals}rules:\n", 1)
