"""The demo's approval round trip (SPEC §6.1), after the tour of `demo.py`.

The agent's transfer is refused with an approval id; a human approves it with the real
`authz-server approvals approve` command over mutual TLS (the admin API); the retry of the
identical call is allowed; a replay of it is refused again. Runs against the stack that
`demo.run_demo` started (the front proxy sends `/v1/transfers` bodies to authz-server, so
the approval covers the body).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from authz_server.tools import stack
from authz_server.tools.demo.tour import IDS, _allowed, _denied, _describe

__all__ = ["APPROVAL_STEPS", "approval_round_trip", "approve_command"]

TRANSFER = b'{"amount": 5000, "to": "DE89370400440532013000"}'
#: The approval round trip's steps, in order (counted with the tour).
APPROVAL_STEPS = (
    "The agent asks to transfer money: refused until a human approves",
    "A human approves it with `authz-server approvals approve` (mutual TLS)",
    "The agent retries the identical call: allowed, once",
    "The agent replays it: refused again (an approval is single use)",
)


def _transfer(port: int, certs: Path) -> stack.Reply:
    return stack.https_request(
        port,
        "/v1/transfers",
        ca=certs / "ca.pem",
        cert=(certs / "agent.pem", certs / "agent.key"),
        method="POST",
        headers=(("content-type", "application/json"),),
        body=TRANSFER,
    )


def approve_command(certs: Path, admin_port: int, approval_id: str) -> list[str]:
    """`authz-server approvals approve ID` as the demo's human, over mutual TLS."""
    return [
        sys.executable, "-m", "authz_server", "approvals", "approve", approval_id,
        "--admin", f"{stack.LOOPBACK}:{admin_port}", "--server-name", "localhost",
        "--cert", str(certs / "human.pem"), "--key", str(certs / "human.key"),
        "--ca", str(certs / "ca.pem"),
    ]  # fmt: skip


def approval_round_trip(first: int, port: int, admin_port: int, certs: Path) -> list[bool]:
    """Request → approval id → approve as a human → retry allowed → replay refused."""
    results: list[bool] = []

    def report(problem: str | None) -> None:
        print(f"   {'ok' if problem is None else 'UNEXPECTED: ' + problem}")
        results.append(problem is None)

    titles = iter(enumerate(APPROVAL_STEPS, first))
    number, title = next(titles)
    print(f"\n{number}. {title}\n   POST /v1/transfers {TRANSFER.decode()}  as {IDS['agent']}")
    reply = _transfer(port, certs)
    _describe(reply)
    approval_id = reply.headers.get("x-authz-approval-id", "")
    problem = _denied(403, "approval_required")(reply)
    if problem is None and (not approval_id or reply.json().get("approval_id") != approval_id):
        problem = "expected the approval id in x-authz-approval-id and in the body"
    report(problem)

    number, title = next(titles)
    command = approve_command(certs, admin_port, approval_id or "missing")
    shown = ["authz-server", *command[3:]]
    print(f"\n{number}. {title}\n   $ {shlex.join(shown)}")
    done = subprocess.run(  # noqa: S603 — argv is built here, never from input
        command, capture_output=True, text=True, timeout=30, check=False
    )
    for line in (done.stdout + done.stderr).splitlines():
        print(f"   | {line}")
    report(None if done.returncode == 0 else f"exit {done.returncode}")

    number, title = next(titles)
    print(f"\n{number}. {title}")
    reply = _transfer(port, certs)
    _describe(reply)
    report(_allowed("agent-transfers", IDS["agent"])(reply))

    number, title = next(titles)
    print(f"\n{number}. {title}")
    reply = _transfer(port, certs)
    _describe(reply)
    report(_denied(403, "approval_required")(reply))
    return results
