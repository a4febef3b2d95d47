"""`authz-server demo`: real Envoy + authz-server + echo backend on loopback, and a tour.

It mints dev certificates, writes a small policy, starts the three processes with the
shipped `envoy/front-proxy.yaml`, then makes the calls that show what the server is for:
an allowed call with the headers upstream can trust, denials with their reasons, a
certificate Envoy accepts but the server refuses, path tricks and a forged header.
Then one human approval round trip through the web approval console (`approval.py`): the
agent's transfer is refused with an approval id, the demo's webhook receiver gets the
signed notification with the console link, a human approves it in the console over mutual
TLS, the retry is allowed, a replay is refused again and rejected with the admin CLI.
It exits 0 only if every step gave the expected answer, so `make demo` doubles as a smoke
test; on a terminal (and without `--once`) it then keeps the stack up until Ctrl-C and
prints curl commands to try against it, and the console URL with the certificate to
import in a browser. Otherwise the stack stops with the tour, so it prints no commands
that could only fail, and says how to keep the stack running.
"""

from __future__ import annotations

import secrets
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from authz_server.tools import stack
from authz_server.tools.demo.approval import ApprovalStack, approval_round_trip
from authz_server.tools.demo.certs import (
    BROWSER_P12,
    IDS,
    P12_PASSWORD,
    TRUST_DOMAIN,
    mint_demo_certs,
    write_private,
)
from authz_server.tools.demo.policy import DEMO_POLICY, demo_policy
from authz_server.tools.demo.receiver import DemoReceiver
from authz_server.tools.demo.replies import allowed, denied, describe
from authz_server.tools.envoy_config import render_envoy_config, with_trusted_ca

__all__ = ["DEMO_POLICY", "IDS", "TOUR", "demo_policy", "run_demo"]

#: How the tour names each caller: the SPIFFE ID in the certificate it presents.
CALLERS = {**IDS, "two-uris": f"{IDS['frontend']} + {IDS['agent']} (two URI SANs)"}


@dataclass(frozen=True)
class Step:
    """One call of the tour and the answer it must get."""

    title: str
    path: str
    caller: str | None  # a name in IDS (or "two-uris"), None for no certificate
    check: Callable[[stack.Reply | None], str | None]  # None: as expected; else the problem
    headers: tuple[tuple[str, str], ...] = ()
    #: "spiffe": the shipped front proxy; "optional": the single-trust-domain variant in
    #: which a client certificate is really optional.
    proxy: str = "spiffe"


def _refused_or_401(reply: stack.Reply | None) -> str | None:
    # Envoy 1.40's SPIFFE validator requires a client certificate whatever
    # require_client_certificate says (envoyproxy/envoy#26412); a fixed Envoy lets the
    # caller through to authz-server, which answers 401 no_identity. Both are correct.
    return None if reply is None else denied(401, "no_identity")(reply)


def _exactly_401(reply: stack.Reply | None) -> str | None:
    return denied(401, "no_identity")(reply)


FORGED = (("x-authz-principal", "spiffe://example.org/humans/root"), ("x-authz-rule", "forged"))

TOUR = [
    Step(
        "A shop frontend reads an order",
        "/v1/orders/42",
        "frontend",
        allowed("orders-read", IDS["frontend"]),
    ),
    Step(
        "The agent works inside its own tenant",
        "/v1/tenants/acme/reports",
        "agent",
        allowed("tenant-scope", IDS["agent"]),
    ),
    Step(
        "The agent reaches into another tenant",
        "/v1/tenants/globex/reports",
        "agent",
        denied(403, "no_matching_rule"),
    ),
    Step("The agent tries an admin page", "/admin/users", "agent", denied(403, "denied_by_rule")),
    Step(
        "No client certificate at all (shipped proxy: the SPIFFE validator refuses the handshake)",
        "/v1/orders/42",
        None,
        _refused_or_401,
    ),
    Step(
        "No client certificate, through the single-trust-domain proxy where it is optional",
        "/v1/orders/42",
        None,
        _exactly_401,
        proxy="optional",
    ),
    Step(
        "Two URI SANs: Envoy accepts it, the server does not",
        "/v1/orders/42",
        "two-uris",
        denied(401, "certificate_invalid"),
    ),
    Step(
        "Path trick: encoded dots climb to /admin (Envoy normalises, rule denies)",
        "/v1/orders/%2e%2e/%2e%2e/admin",
        "frontend",
        denied(403, "no_matching_rule"),
    ),
    Step(
        "Path trick: a ';' path parameter (Envoy passes it on, the server refuses it)",
        "/v1/orders/42;jsessionid=x",
        "frontend",
        denied(400, "non_canonical_path"),
    ),
    Step(
        "Path trick: encoded slash (Envoy rejects it)",
        "/v1/orders/42%2F..%2F..%2Fadmin",
        "frontend",
        denied(400),
    ),
    Step(
        "A forged x-authz-principal header",
        "/v1/orders/42",
        "frontend",
        allowed("orders-read", IDS["frontend"]),
        FORGED,
    ),
]


def _run_step(number: int, step: Step, ports: dict[str, int], certs: Path) -> bool:
    port = ports[step.proxy]
    cert = (certs / f"{step.caller}.pem", certs / f"{step.caller}.key") if step.caller else None
    who = CALLERS.get(step.caller or "", "no client certificate")
    print(f"\n{number}. {step.title}\n   GET {step.path}  as {who}")
    for name, value in step.headers:
        print(f"   with header {name}: {value}")
    reply: stack.Reply | None
    try:
        reply = stack.https_request(
            port, step.path, ca=certs / "ca.pem", cert=cert, headers=step.headers
        )
    except OSError as exc:  # ssl.SSLError and ConnectionError are OSErrors
        reply = None
        print(f"   → TLS handshake refused by Envoy ({exc.__class__.__name__})")
    if reply is not None:
        describe(reply)
    problem = step.check(reply)
    print(f"   {'ok' if problem is None else 'UNEXPECTED: ' + problem}")
    return problem is None


def _console_help(console_url: str, certs: Path) -> None:
    print(f"Approval console: {console_url}/approvals")
    print(
        f"  in a browser: import {certs / BROWSER_P12} (password: {P12_PASSWORD}) as your "
        f"certificate, trust {certs / 'ca.pem'} for websites, then open the URL"
    )


def _try_next(port: int, console_url: str, certs: Path, audit_log: Path, logs: Path) -> None:
    def curl(caller: str, path: str, *extra: str) -> str:
        args = ["curl", "-s", "--cacert", str(certs / "ca.pem")]
        args += ["--cert", str(certs / f"{caller}.pem"), "--key", str(certs / f"{caller}.key")]
        return shlex.join([*args, *extra, f"https://localhost:{port}{path}"])

    print("\nThe stack is running. Try your own calls (in another terminal):")
    print(f"  {curl('frontend', '/v1/orders/42')}")
    print(f"  {curl('human', '/v1/reports/q3')}")
    print(f"  {curl('agent', '/v1/orders/42', '-i')}")
    print(f"  {curl('frontend', '/v1/orders/42;x', '--path-as-is', '-i')}")
    _console_help(console_url, certs)
    print(f"Audit log: {audit_log}\nProcess logs: {logs}")


def _stopped(once: bool, audit_log: Path, logs: Path) -> None:
    why = "--once" if once else "standard input is not a terminal"
    print(
        f"\nThe stack has stopped ({why}): Envoy, authz-server and the backend exit with the"
        " tour, so there is nothing left to call.\n"
        "To keep it running and try your own calls, run `authz-server demo` (or `make demo`)"
        " from a terminal, without --once; it prints curl commands and the console URL and"
        " stays up until Ctrl-C."
    )
    print(f"Audit log: {audit_log}\nProcess logs: {logs}")


def _start_stack(
    template: Path, certs: Path, logs: Path, policy: Path, audit_log: Path, ports: dict[str, int]
) -> list[stack.Service]:
    """Backend, authz-server (admin API and console on `ports`), the shipped front proxy
    and its optional-certificate variant; `ports` gains "spiffe" and "optional"."""
    services: list[stack.Service] = []
    try:
        backend = stack.start_backend(logs)
        services.append(backend)
        server_cert, server_key = str(certs / "authz-admin.pem"), str(certs / "authz-admin.key")
        listeners = [
            "--admin-listen", f"{stack.LOOPBACK}:{ports['admin']}",
            "--admin-tls-cert", server_cert, "--admin-tls-key", server_key,
            "--console-listen", f"{stack.LOOPBACK}:{ports['console']}",
            "--console-tls-cert", server_cert, "--console-tls-key", server_key,
        ]  # fmt: skip
        authz = stack.start_authz(
            logs,
            policy=policy,
            bundles={TRUST_DOMAIN: certs / "ca.pem"},
            audit_log=audit_log,
            extra_args=listeners,
        )
        services.append(authz)
        for name, variant in (("envoy", None), ("envoy-optional-cert", certs / "ca.pem")):
            port = stack.free_port()
            config = render_envoy_config(
                template,
                LISTEN_ADDRESS=stack.LOOPBACK,
                LISTEN_PORT=port,
                ADMIN_PORT=stack.free_port(),
                CERT_DIR=certs,
                TRUST_DOMAIN=TRUST_DOMAIN,
                AUTHZ_PORT=authz.port,
                BACKEND_PORT=backend.port,
            )
            if variant is not None:
                config = with_trusted_ca(config, variant)
            services.append(stack.start_envoy(logs, name, config, listen_port=port))
            ports["spiffe" if variant is None else "optional"] = port
        ports["authz"], ports["backend"] = authz.port, backend.port
        return services
    except BaseException:
        _stop_all(services)
        raise


def run_demo(workdir: Path, once: bool = False) -> int:
    """Start the stack in `workdir`, run the tour; 0 only if every step was as expected."""
    template = Path(__file__).resolve().parents[3] / "envoy" / "front-proxy.yaml"
    if not template.is_file():
        print(f"demo: {template} not found; the demo runs from a source checkout")
        return 1
    workdir = workdir.resolve()
    certs, logs = workdir / "certs", workdir / "logs"
    mint_demo_certs(certs)
    secret = secrets.token_hex(32).encode()
    secret_file = certs / "notify-secret"
    write_private(secret_file, secret)
    policy, audit_log = workdir / "policy.yaml", workdir / "audit.jsonl"
    ports = {"admin": stack.free_port(), "console": stack.free_port()}
    console_url = f"https://localhost:{ports['console']}"
    receiver = DemoReceiver(secret)
    policy.write_text(demo_policy(console_url, receiver.url, secret_file), encoding="utf-8")
    services: list[stack.Service] = []
    receiver.start()
    try:
        services = _start_stack(template, certs, logs, policy, audit_log, ports)
        print(
            f"Envoy https://localhost:{ports['spiffe']} → authz-server 127.0.0.1:{ports['authz']}"
            f" → backend 127.0.0.1:{ports['backend']}  (policy: {policy})"
        )
        _console_help(console_url, certs)
        print(f"Approval notifications → the demo's receiver at {receiver.url}")
        results = [_run_step(n, step, ports, certs) for n, step in enumerate(TOUR, 1)]
        demo = ApprovalStack(ports["spiffe"], ports["admin"], ports["console"], certs, receiver)
        results += approval_round_trip(len(TOUR) + 1, demo)
        passed = sum(results)
        print(f"\n{passed}/{len(results)} steps as expected.")
        if not once and sys.stdin.isatty():
            # only while the stack is there to call
            _try_next(ports["spiffe"], console_url, certs, audit_log, logs)
            _wait_for_interrupt(services)
        else:
            _stop_all(services)  # before saying so
            _stopped(once, audit_log, logs)
        return 0 if passed == len(results) else 1
    except stack.StartupError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the tour finished
        return 130
    finally:
        _stop_all(services)
        receiver.stop()


def _stop_all(services: Sequence[stack.Service]) -> None:
    for service in reversed(services):
        service.stop()  # a no-op for one already stopped


def _wait_for_interrupt(services: Sequence[stack.Service]) -> None:
    print("\nRunning; Ctrl-C stops everything.")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM too must stop the children, not orphan them

    signal.signal(signal.SIGTERM, interrupt)
    try:
        while all(service.running() for service in services):
            time.sleep(0.5)
        dead = [s for s in services if not s.running()]
        for service in dead:
            print(f"demo: {service.name} exited:\n{service.log_tail()}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nStopping.")
