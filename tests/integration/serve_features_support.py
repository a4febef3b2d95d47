"""A real `serve` with the approval console, AuthZEN and approval notifications turned on.

A `python -m authz_server serve` process: the Check listener over mutual TLS (only the
Envoy identity may call it), the admin API, the console on its own certificate, AuthZEN
sharing the Check listener's certificate, an audit log, and a policy whose
`admin.approvals.notify` points at a real aiohttp receiver in the test. Certificates are
minted around the real time: the server reads the real clock. Shared by the integration
tests of these features and the browser test of the whole approval round trip.
"""

from __future__ import annotations

import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from authz_server.notify.signing import verify
from authz_server.tools.stack import free_port
from tests.integration.serve_support import Files, write_files
from tests.integration.support import SERVING, eventually, health, serve_process
from tests.unit.notify.receiver import SECRET, Received, Receiver, receiver

__all__ = [
    "AGENT",
    "ENVOY",
    "FRONTEND",
    "GATEWAY",
    "POLICY",
    "SERVER",
    "Served",
    "received",
    "serve_with_features",
    "verified",
]

ENVOY = "spiffe://example.org/envoy/front-proxy"
GATEWAY = "spiffe://example.org/gateways/edge"
FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
AGENT = "spiffe://example.org/agents/acme/bot"
SERVER = "spiffe://example.org/authz-server"

POLICY = """\
version: 1
identity: {{trust_domains: [example.org]}}
admin:
  principals: ["spiffe://example.org/humans/**"]
  approvals:
    console_url: https://127.0.0.1:{console_port}
    notify:
      - url: {hook_url}
        secret_file: {secret_file}
        name: test-hook
authzen:
  trusted_peps: ["spiffe://example.org/gateways/*"]
rules:
  - id: releases-publish
    description: Publish a release to the public package registry
    methods: [POST]
    paths: ["/v1/releases/**"]
    principals: ["spiffe://example.org/ci/release"]
    effect: allow
    when:
      approval: {{approvers: ["spiffe://example.org/humans/release-managers/*"], ttl: 15m}}
  - id: orders-read
    methods: [GET]
    paths: ["/v1/orders/**"]
    principals: ["spiffe://example.org/ns/shop/**"]
    effect: allow
  - id: orders-admin-deny
    paths: ["/v1/orders/admin/**"]
    effect: deny
"""


@dataclass
class Served:
    """One running `serve` and everything the tests need to talk to it."""

    files: Files
    process: subprocess.Popen[str]
    ports: dict[str, int]
    hook: Receiver
    log: Path
    audit_log: Path

    def tls(self, name: str | None) -> ssl.SSLContext:
        """A client context trusting our CA, presenting the SVID files `name` (or none)."""
        context = ssl.create_default_context(cafile=str(self.files.ca_file))
        if name is not None:
            context.load_cert_chain(*(str(p) for p in self.files.pair(name)))
        return context

    def channel(self, name: str = "envoy") -> grpc.aio.Channel:
        """A channel to the Check listener over mutual TLS, as `name`."""
        cert, key = self.files.pair(name)
        credentials = grpc.ssl_channel_credentials(
            self.files.ca_file.read_bytes(), key.read_bytes(), cert.read_bytes()
        )
        return grpc.aio.secure_channel(f"127.0.0.1:{self.ports['check']}", credentials)

    def url(self, listener: str, path: str) -> str:
        return f"https://127.0.0.1:{self.ports[listener]}{path}"

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit status and what the process printed."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return self.process.returncode, out

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


@asynccontextmanager
async def serve_with_features(directory: Path) -> AsyncIterator[Served]:
    """`serve` with every listener, files in `directory`, answering health SERVING; killed
    on the way out if the test did not stop it."""
    async with receiver() as hook:
        ports = {name: free_port() for name in ("check", "admin", "console", "authzen")}
        secret = directory / "hook-secret"
        secret.write_bytes(SECRET)
        policy = POLICY.format(console_port=ports["console"], hook_url=hook.url, secret_file=secret)
        files = write_files(directory, policy)
        for name, spiffe_id in (("envoy", ENVOY), ("gateway", GATEWAY), ("frontend", FRONTEND)):
            files.identity(name, spiffe_id)
        cert, key = (str(p) for p in files.pair("admin-server"))
        log, audit_log = directory / "serve.log", directory / "audit.jsonl"
        process = serve_process(
            files.policy,
            ports["check"],
            "--trust-bundle", f"example.org={files.ca_file}",
            "--tls-cert", cert, "--tls-key", key,
            "--allowed-caller", "spiffe://example.org/envoy/*",
            *files.admin_args(ports["admin"]),
            "--console-listen", f"127.0.0.1:{ports['console']}",
            "--console-tls-cert", cert, "--console-tls-key", key,
            "--authzen-listen", f"127.0.0.1:{ports['authzen']}",
            "--audit-log", str(audit_log),
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            text=True,
        )  # fmt: skip
        running = Served(files, process, ports, hook, log, audit_log)
        try:
            await eventually(lambda: _serving(running), "health SERVING")
            yield running
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()


async def _serving(served: Served) -> bool:
    if served.process.poll() is not None:
        raise AssertionError(f"serve exited {served.process.returncode}:\n{served.log_tail()}")
    try:
        async with served.channel() as channel:
            return bool(await health(channel) == SERVING)
    except grpc.aio.AioRpcError:
        return False


def received(hook: Receiver, event: str, count: int = 1) -> bool:
    """Whether `hook` holds at least `count` notifications of type `event`."""
    return sum(bool(r.json()["type"] == event) for r in hook.received) >= count


def verified(hook: Receiver, event: str, count: int = 1) -> list[dict[str, Any]]:
    """The received notifications of type `event` (exactly `count`), in order of arrival,
    each after checking its signature (and that another secret does not verify it)."""
    found: list[Received] = [r for r in hook.received if r.json()["type"] == event]
    assert len(found) == count, [r.json()["type"] for r in hook.received]
    bodies: list[dict[str, Any]] = []
    for delivery in found:
        assert verify(SECRET, delivery.headers, delivery.body, time.time())
        wrong = b"another-secret-of-16+bytes"
        assert not verify(wrong, delivery.headers, delivery.body, time.time())
        bodies.append(delivery.json())
    return bodies
