"""`examples/audit.jsonl`: the sample audit log docs/operations/audit.md verifies and
replays against `examples/policy`, six decisions of the seed scenarios at fixed times.

`python -m tests.docs.audit_sample` rewrites it when the audit format changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from authz_server.audit.format import audit_record
from authz_server.audit.log import AuditLog
from authz_server.check.offline import OfflineRequest, decide_offline, parse_at
from authz_server.policy.load import load_policy
from tests.docs.pages import ROOT

AUDIT_SAMPLE = ROOT / "examples" / "audit.jsonl"


def write_audit_sample(path: Path) -> None:
    """Decide a few requests of the seed scenarios with `examples/policy` at fixed times
    and write them as the server would: one hash-chained audit record each."""
    policy = load_policy(ROOT / "examples" / "policy")
    release, deployer = "spiffe://example.org/ci/release", "spiffe://example.org/ci/deployer"
    requests = [
        OfflineRequest(
            "/v1/deployments/prod/api?confirm=yes",
            "DELETE",
            deployer,
            at=parse_at("2026-11-25T11:30:00+01:00"),
        ),
        OfflineRequest("/v1/releases", "GET", release, at=parse_at("2026-11-26T09:58:12+01:00")),
        OfflineRequest(
            "/v1/releases/1.4.2/publish",
            "POST",
            release,
            headers=(("x-change-ticket", "CHG-1234"), ("x-git-ref", "refs/heads/main")),
            body=b'{"version":"1.4.2","channel":"stable"}',
            at=parse_at("2026-11-26T10:00:03+01:00"),
        ),
        OfflineRequest(
            "/v1/releases/1.4.3/publish",
            "POST",
            release,
            headers=(("x-change-ticket", "CHG-1240"), ("x-git-ref", "refs/heads/main")),
            body=b'{"version":"1.4.3","channel":"stable"}',
            at=parse_at("2026-11-28T10:00:00+01:00"),
        ),
        OfflineRequest("/healthz", at=parse_at("2026-11-26T10:00:05+01:00")),
        OfflineRequest("/admin/users", "GET", release, at=parse_at("2026-11-26T10:01:00+01:00")),
    ]
    path.unlink(missing_ok=True)
    audit = AuditLog(str(path))
    for request in requests:
        assert request.at is not None
        decision = asyncio.run(decide_offline(policy, request))
        decision = dataclasses.replace(decision, at=request.at.timestamp())
        audit.record(
            audit_record(decision, request.view(), policy_version=policy.version, latency_us=180)
        )
    audit.close()


if __name__ == "__main__":
    write_audit_sample(AUDIT_SAMPLE)
    print(f"wrote {AUDIT_SAMPLE.relative_to(ROOT)}")
