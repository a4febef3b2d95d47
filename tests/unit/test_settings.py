"""`serve` settings: unsafe or inconsistent combinations are refused before start."""

from __future__ import annotations

from typing import Any

import pytest

from authz_server import cli
from authz_server.errors import ConfigError
from authz_server.settings import Settings

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
