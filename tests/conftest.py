"""Shared test helpers: CheckRequest builders and policy text."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2

# `make test-shifted-clock` runs the unit suite under libfaketime, a year and more ahead of
# the real date, so that a test pinning a clock while minting certificates around the real
# time fails today instead of on some future day. Only this process is shifted: programs the
# tests start (redis-server, envoy) run on the real clock, as they would in production.
# FAKETIME itself must stay: libfaketime re-reads it, and without it this process would
# jump back to the real time halfway through the run.
if os.environ.get("AUTHZ_TEST_SHIFTED_CLOCK"):
    os.environ.pop("LD_PRELOAD", None)


def make_check_request(
    *,
    method: str = "GET",
    host: str = "orders.internal",
    path: str = "/v1/orders",
    headers: dict[str, str] | None = None,
    principal: str = "",
    certificate: str = "",
    body: bytes | None = None,
) -> Any:
    """A CheckRequest shaped like the ones Envoy's ext_authz filter sends."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.host = host
    http.path = path
    http.id = "1234"
    for name, value in (headers or {}).items():
        http.headers[name] = value
    if body is not None:
        http.raw_body = body
    request.attributes.source.principal = principal
    request.attributes.source.certificate = certificate
    return request


@pytest.fixture
def check_request() -> Any:
    return make_check_request


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI, a skipped test is a failure: a missing tool must not pass as a green run."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (a required tool is missing?): {report.longrepr}"
