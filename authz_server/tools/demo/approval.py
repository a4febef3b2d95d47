"""The demo's approval round trip, after the tour of `tour.py`, through the web console.

The agent's transfer is refused with an approval id, and the demo's webhook receiver gets
the signed `pending` notification with its link to the console. A human opens that
approval in the console over mutual TLS (their client certificate, as a browser would
present it) and approves it with the form the page carries, CSRF token included; the
`approved` notification follows. The retry of the identical call is allowed; a replay
of it is refused again (an approval is single use), and a human rejects that new request
with the real `authz-server approvals reject` command over the admin API. Runs against
the stack `tour.run_demo` started (the front proxy sends `/v1/transfers` bodies to
authz-server, so the approval covers the body).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from authz_server.tools import stack
from authz_server.tools.demo.certs import IDS
from authz_server.tools.demo.receiver import DemoReceiver
from authz_server.tools.demo.replies import allowed, denied, describe

__all__ = ["APPROVAL_STEPS", "ApprovalStack", "admin_command", "approval_round_trip"]

TRANSFER = b'{"amount": 5000, "to": "DE89370400440532013000"}'
#: The approval round trip's steps, in order (counted with the tour).
APPROVAL_STEPS = (
    "The agent asks to transfer money: refused until a human approves; the receiver is told",
    "A human opens the approval in the web console (mutual TLS, their client certificate)",
    "The human approves it there (the page's form, with its CSRF token)",
    "The agent retries the identical call: allowed, once",
    "The agent replays it: refused again (an approval is single use)",
    "A human rejects the replay with `authz-server approvals reject` (admin API)",
)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True)
class ApprovalStack:
    """Where the round trip's calls go: Envoy, the admin API, the console, the receiver."""

    envoy_port: int
    admin_port: int
    console_port: int
    certs: Path
    receiver: DemoReceiver

    @property
    def console_url(self) -> str:
        return f"https://localhost:{self.console_port}"

    def transfer(self) -> stack.Reply:
        return stack.https_request(
            self.envoy_port,
            "/v1/transfers",
            ca=self.certs / "ca.pem",
            cert=(self.certs / "agent.pem", self.certs / "agent.key"),
            method="POST",
            headers=(("content-type", "application/json"),),
            body=TRANSFER,
        )

    def console(self, method: str, path: str, form: dict[str, str] | None = None) -> stack.Reply:
        """One console request as the demo's human (its client certificate)."""
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        headers = (("content-type", "application/x-www-form-urlencoded"),) if body else ()
        return stack.https_request(
            self.console_port,
            path,
            ca=self.certs / "ca.pem",
            cert=(self.certs / "human.pem", self.certs / "human.key"),
            method=method,
            headers=headers,
            body=body,
            host=f"localhost:{self.console_port}",
            server_name="localhost",
        )


def admin_command(certs: Path, admin_port: int, verb: str, approval_id: str) -> list[str]:
    """`authz-server approvals VERB ID` as the demo's human, over mutual TLS."""
    return [
        sys.executable, "-m", "authz_server", "approvals", verb, approval_id,
        "--admin", f"{stack.LOOPBACK}:{admin_port}", "--server-name", "localhost",
        "--cert", str(certs / "human.pem"), "--key", str(certs / "human.key"),
        "--ca", str(certs / "ca.pem"),
    ]  # fmt: skip


def _told(demo: ApprovalStack, event: str, approval_id: str) -> str | None:
    """Print the notification `event` about `approval_id`; the problem if none came."""
    notification = demo.receiver.wait_for(event, approval_id)
    if notification is None:
        return f"expected a {event} notification at the receiver"
    print(f"   ← notification {notification.describe()}")
    return None if notification.signature_ok else "the notification's signature is wrong"


def _refused_with_id(reply: stack.Reply) -> tuple[str, str | None]:
    """The approval id of an approval_required refusal, and the problem if it is not one."""
    approval_id = reply.headers.get("x-authz-approval-id", "")
    problem = denied(403, "approval_required")(reply)
    if problem is None and (not approval_id or reply.json().get("approval_id") != approval_id):
        problem = "expected the approval id in x-authz-approval-id and in the body"
    return approval_id, problem


def approval_round_trip(first: int, demo: ApprovalStack) -> list[bool]:
    """Request → pending notification → console page → approve → retry allowed → replay
    refused → rejected with the CLI."""
    results: list[bool] = []

    def report(problem: str | None) -> None:
        print(f"   {'ok' if problem is None else 'UNEXPECTED: ' + problem}")
        results.append(problem is None)

    titles = iter(enumerate(APPROVAL_STEPS, first))
    number, title = next(titles)
    print(f"\n{number}. {title}\n   POST /v1/transfers {TRANSFER.decode()}  as {IDS['agent']}")
    reply = demo.transfer()
    describe(reply)
    approval_id, problem = _refused_with_id(reply)
    report(problem or _told(demo, "pending", approval_id))

    number, title = next(titles)
    page_path = f"/approvals/{approval_id or 'missing'}"
    print(f"\n{number}. {title}\n   GET {demo.console_url}{page_path}  as {IDS['human']}")
    page = demo.console("GET", page_path)
    text = page.body.decode(errors="replace")
    token = _CSRF.search(text)
    problem = None
    if page.status != 200 or "agent-transfers" not in text or IDS["agent"] not in text:
        problem = f"expected 200 and the pending transfer on the page, got {page.status}"
    elif token is None:
        problem = "expected an approve form with a CSRF token on the page"
    else:
        print(f"   → {page.status}: the agent's transfer (rule agent-transfers), Approve/Reject")
    report(problem)

    number, title = next(titles)
    print(f"\n{number}. {title}\n   POST {demo.console_url}{page_path}/decide  decision=approve")
    form = {"decision": "approve", "reason": "demo", "csrf": token.group(1) if token else ""}
    decided = demo.console("POST", f"{page_path}/decide", form)
    location = decided.headers.get("location", "")
    print(f"   → {decided.status}, to {location}")
    problem = None
    if (decided.status, location) != (303, f"{page_path}?done=approved"):
        problem = "expected 303 to the approval page, marked approved"
    report(problem or _told(demo, "approved", approval_id))

    number, title = next(titles)
    print(f"\n{number}. {title}")
    reply = demo.transfer()
    describe(reply)
    report(allowed("agent-transfers", IDS["agent"])(reply))

    number, title = next(titles)
    print(f"\n{number}. {title}")
    reply = demo.transfer()
    describe(reply)
    replay_id, problem = _refused_with_id(reply)
    report(problem)

    number, title = next(titles)
    command = admin_command(demo.certs, demo.admin_port, "reject", replay_id or "missing")
    print(f"\n{number}. {title}\n   $ {shlex.join(['authz-server', *command[3:]])}")
    done = subprocess.run(  # noqa: S603 — argv is built here, never from input
        command, capture_output=True, text=True, timeout=30, check=False
    )
    for line in (done.stdout + done.stderr).splitlines():
        print(f"   | {line}")
    problem = None if done.returncode == 0 else f"exit {done.returncode}"
    report(problem or _told(demo, "rejected", replay_id))
    return results
