"""Policies, actions and records for the notifier tests."""

from __future__ import annotations

from authz_server.policy.load import load_policy_text
from authz_server.policy.model import Policy
from authz_server.state.fingerprint import action_fingerprint, body_digest
from authz_server.state.store import ApprovalRecord, PendingAction

AGENT = "spiffe://example.org/agents/acme/bot"
HUMAN = "spiffe://example.org/humans/alice"
BODY = b'{"amount": 250, "destination": {"country": "DE", "iban": "DE89 3704"}}'

POLICY = """\
version: 1
identity: {{trust_domains: [example.org]}}
admin:
  principals: ["spiffe://example.org/humans/*"]
  approvals:
    console_url: https://console.example.org/authz/
    notify:
{endpoints}
rules:
  - id: agent-transfers
    description: Agents move money only with a human's approval
    methods: [POST]
    paths: ["/v1/transfers"]
    effect: allow
    when:
      approval:
        approvers: ["spiffe://example.org/humans/*"]
        ttl: 15m
        preview_fields: [amount, destination.country]
"""


def endpoint(url: str, secret_file: str | None = None, **extra: str) -> str:
    """One `notify` list item, indented for POLICY."""
    lines = [f"      - url: {url}"]
    if secret_file is not None:
        lines.append(f"        secret_file: {secret_file}")
    lines += [f"        {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines)


def policy(*endpoints: str) -> Policy:
    return load_policy_text(POLICY.format(endpoints="\n".join(endpoints) or "      []"))


def action(
    body: bytes | None = BODY, path: str = "/v1/transfers", ttl: float = 900
) -> PendingAction:
    return PendingAction(
        approval_id=action_fingerprint(AGENT, "POST", "pay.internal", path, "", body),
        principal=AGENT,
        method="POST",
        host="pay.internal",
        path=path,
        query="",
        body_digest=body_digest(body),
        rule_id="agent-transfers",
        approvers=("spiffe://example.org/humans/*",),
        ttl_s=ttl,
    )


def record(now_us: int = 1_800_000_000_000_000, path: str = "/v1/transfers") -> ApprovalRecord:
    return ApprovalRecord.pending(action(path=path), now_us)
