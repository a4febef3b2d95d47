"""`serve` settings: unsafe or inconsistent combinations are refused before start."""

from __future__ import annotations

from typing import Any

import pytest

from authz_server.cli import main as cli
from authz_server.core.errors import ConfigError
from authz_server.runtime.settings import Settings

TLS = {"tls_cert": "c.pem", "tls_key": "k.pem", "allowed_callers": ("spiffe://example.org/envoy",)}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"listen": "9191"}, "--listen '9191': expected HOST:PORT", id="listen-no-host"
        ),
        pytest.param({"metrics_listen": "x:99999"}, "--metrics-listen", id="metrics-port-range"),
        pytest.param({"grace_seconds": -1}, "--grace must be >= 0", id="negative-grace"),
        pytest.param(
            {"reload_interval": -1}, "--reload-interval must be >= 0", id="negative-interval"
        ),
        pytest.param(
            {"tls_cert": "c.pem"}, "--tls-cert and --tls-key go together", id="cert-without-key"
        ),
        pytest.param(
            {"tls_client_ca": "ca.pem"}, "--tls-client-ca needs --tls-cert", id="ca-without-cert"
        ),
        pytest.param(
            {**TLS, "tls_workload_api": True, "workload_api": "unix:///s"},
            "choose one",
            id="files-and-workload-api",
        ),
        pytest.param(
            {"tls_workload_api": True, "allowed_callers": TLS["allowed_callers"]},
            "--tls-workload-api needs the socket",
            id="workload-api-tls-without-socket",
        ),
        pytest.param(
            {**TLS, "allowed_callers": ()},
            "needs at least one --allowed-caller",
            id="tls-without-callers",
        ),
        pytest.param(
            {"allowed_callers": ("spiffe://example.org/envoy",)},
            "--allowed-caller needs TLS",
            id="callers-without-tls",
        ),
        pytest.param(
            {**TLS, "allowed_callers": ("spiffe://Example.org/x",)},
            "--allowed-caller",
            id="bad-pattern",
        ),
        pytest.param(
            {"workload_api": "tcp://127.0.0.1:1"}, "expected a unix socket", id="tcp-socket"
        ),
        pytest.param({"store": "mysql://db"}, "--store 'mysql://db'", id="unknown-store"),
        pytest.param(
            {"store": "redis://h:6379/x"}, "the database must be a number", id="redis-db-name"
        ),
        pytest.param(
            {"workers": 2, "store": "redis://h:6379/0", "listen": "0.0.0.0:0"},
            "needs a fixed --listen port",
            id="workers-on-port-zero",
        ),
        pytest.param({"workers": 0}, "--workers must be between 1 and 64", id="zero-workers"),
        pytest.param({"admin_listen": "9192"}, "--admin-listen '9192'", id="admin-listen-no-host"),
        pytest.param(
            {"admin_tls_cert": "c.pem"},
            "--admin-tls-cert and --admin-tls-key",
            id="admin-cert-only",
        ),
        pytest.param(
            {"admin_insecure_local": True, "admin_tls_cert": "c.pem", "admin_tls_key": "k.pem"},
            "choose one: --admin-tls-cert/--admin-tls-key or --admin-insecure-local",
            id="admin-insecure-and-tls",
        ),
        pytest.param(
            {"admin_insecure_local": True, "admin_listen": "0.0.0.0:9192"},
            "--admin-insecure-local binds loopback only",
            id="admin-insecure-off-loopback",
        ),
    ],
)
def test_refused(fields: dict[str, Any], message: str) -> None:
    """Each bad combination names the flags involved."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings(policy="p.yaml", **fields).validate()


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="plaintext"),
        pytest.param({**TLS, "tls_client_ca": "ca.pem"}, id="tls-files"),
        pytest.param(
            {
                "tls_workload_api": True,
                "workload_api": "unix:///run/spire/agent.sock",
                "allowed_callers": ("spiffe://example.org/ns/*/sa/envoy",),
            },
            id="tls-workload-api",
        ),
        pytest.param({"listen": "[::1]:9191", "metrics_listen": "127.0.0.1:0"}, id="ipv6-listen"),
        pytest.param(
            {"workers": 4, "store": "redis://redis:6379/0", "listen": "0.0.0.0:9191"},
            id="workers-on-redis",
        ),
        # the policy decides (shared_state.require_shareable): no approvals or rate limits
        pytest.param({"workers": 2, "listen": "0.0.0.0:9191"}, id="workers-on-memory-store"),
        pytest.param({"admin_insecure_local": True}, id="admin-insecure-on-loopback"),
        pytest.param({"admin_listen": None}, id="admin-off"),
    ],
)
def test_accepted(fields: dict[str, Any]) -> None:
    """Consistent combinations pass."""
    Settings(policy="p.yaml", **fields).validate()


def test_serve_flags_from_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """AUTHZ_* variables feed the new flags, and validation runs before anything starts."""
    monkeypatch.setenv("AUTHZ_ALLOWED_CALLER", "spiffe://example.org/envoy")
    monkeypatch.setenv("AUTHZ_TLS_WORKLOAD_API", "true")
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    monkeypatch.delenv("AUTHZ_WORKLOAD_API", raising=False)
    assert cli.main(["serve", "--policy", "p.yaml"]) == 1
    assert "--tls-workload-api needs the socket" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fields", "enabled"),
    [
        pytest.param({}, False, id="no-credentials"),
        pytest.param({"admin_tls_cert": "c", "admin_tls_key": "k"}, True, id="files"),
        pytest.param({"workload_api": "unix:///s"}, True, id="workload-api-svid"),
        pytest.param({"admin_insecure_local": True}, True, id="insecure-local"),
        pytest.param({"admin_listen": None, "admin_insecure_local": True}, False, id="off"),
    ],
)
def test_admin_enabled(fields: dict[str, Any], enabled: bool) -> None:
    """The admin API runs only with an address and a way to authenticate its callers."""
    assert Settings(policy="p.yaml", **fields).admin_enabled is enabled


def test_worker_settings() -> None:
    """Worker i gets the metrics port + i and its own audit file; port 0 stays ephemeral."""
    from authz_server.runtime.workers import worker_settings

    base = Settings(policy="p.yaml", metrics_listen="0.0.0.0:9090", audit_log="/var/a.jsonl")
    second = worker_settings(base, 1)
    assert (second.metrics_listen, second.audit_log, second.worker, second.workers) == (
        "0.0.0.0:9091", "/var/a.jsonl.worker1", 1, 1,
    )  # fmt: skip
    ephemeral = Settings(policy="p.yaml", metrics_listen="127.0.0.1:0", audit_log="-")
    third = worker_settings(ephemeral, 3)
    assert (third.metrics_listen, third.audit_log) == ("127.0.0.1:0", "-")
