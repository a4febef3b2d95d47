"""The directory a page's examples run in: the files the page asks the reader to save,
the repository directories its commands name, and what a running server would have left
behind for the pages that read it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from authz_server.audit.format import audit_record
from authz_server.audit.log import AuditLog
from authz_server.check.offline import OfflineRequest, decide_offline, offline_snapshot
from authz_server.policy.load import load_policy
from tests.docs.pages import DOCS, ROOT, named_files

#: Repository directories commands name by relative path (`--policy examples/policy`).
SHARED = ("examples", "envoy")
FIRST_POLICY = DOCS / "examples" / "first-policy"


def _getting_started_audit_log(workdir: Path) -> None:
    """operations/audit.md reads `audit.jsonl`, the log `serve --audit-log` writes for the
    getting-started setup after three requests. No server runs in these tests, so the log
    is written by the server's own audit writer from the decisions the real pipeline makes
    for those requests."""
    (workdir / "policy.yaml").write_bytes((FIRST_POLICY / "policy.yaml").read_bytes())
    policy = load_policy(workdir / "policy.yaml")
    frontend = "spiffe://example.org/ns/shop/sa/frontend"
    agent = "spiffe://example.org/agents/billing/bot"
    requests = [
        OfflineRequest(principal=frontend, method="GET", path="/v1/orders/42"),
        OfflineRequest(principal=agent, method="DELETE", path="/v1/orders/42"),
        OfflineRequest(principal=frontend, method="HEAD", path="/v1/orders"),
    ]
    # No `at`: the records carry the real time, as the server's would, and replay
    # decides each at its recorded time.
    requests = [replace(r, host="orders.internal") for r in requests]
    log = AuditLog(str(workdir / "audit.jsonl"))
    try:
        for request in requests:
            view = request.view()
            decision = asyncio.run(decide_offline(offline_snapshot(policy), view))
            log.record(audit_record(decision, view, policy_version=policy.version, latency_us=250))
    finally:
        log.close()


#: Pages whose commands read what a running server writes, with how to make it.
PAGE_FIXTURES: dict[str, Callable[[Path], None]] = {
    "operations/audit.md": _getting_started_audit_log,
}


def prepare(page: str, workdir: Path) -> Path:
    """Fill `workdir` for `page`; returns a bin directory holding an `authz-server` that is
    `python -m authz_server` of this interpreter."""
    for name in SHARED:
        (workdir / name).symlink_to(ROOT / name, target_is_directory=True)
    for name, text in named_files(page).items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    fixture = PAGE_FIXTURES.get(page)
    if fixture is not None:
        fixture(workdir)
    bin_dir = workdir.parent / f"{workdir.name}-bin"
    bin_dir.mkdir()
    program = bin_dir / "authz-server"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m authz_server "$@"\n')
    program.chmod(0o755)
    return bin_dir


def environment(bin_dir: Path) -> dict[str, str]:
    """The commands' environment: no AUTHZ_* variable of this machine, unbuffered output
    (stdout and stderr interleave as on a terminal), this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "100"
    return env
