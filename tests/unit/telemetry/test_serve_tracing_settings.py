"""`serve --otlp-endpoint` (AUTHZ_OTLP_ENDPOINT) and the `OTEL_*` variables become the
settings' tracing configuration; a bad value stops `serve` with a message naming it,
before anything starts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from authz_server.cli import main as cli
from authz_server.cli.serve import settings_from_args
from authz_server.core.errors import ConfigError
from authz_server.runtime.settings import Settings
from authz_server.runtime.workers import worker_settings

_OTEL = (
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "AUTHZ_OTLP_ENDPOINT",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL:
        monkeypatch.delenv(name, raising=False)


def _settings(*argv: str) -> Settings:
    return settings_from_args(cli.build_parser().parse_args(["serve", "--policy", "p", *argv]))


def test_the_flag_names_the_collector() -> None:
    settings = _settings("--otlp-endpoint", "http://127.0.0.1:4317")
    assert settings.otlp_endpoint == "http://127.0.0.1:4317"
    config = settings.tracing()
    assert config is not None and config.endpoint == "http://127.0.0.1:4317"
    assert config.source == "--otlp-endpoint"


def test_the_flag_reads_its_authz_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHZ_OTLP_ENDPOINT", "https://collector.example:4317")
    assert _settings().otlp_endpoint == "https://collector.example:4317"


def test_off_by_default() -> None:
    settings = _settings()
    assert settings.otlp_endpoint is None and settings.tracing() is None


def test_the_standard_variables_turn_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    config = _settings().tracing()
    assert config is not None
    assert (config.endpoint, config.source, config.root_ratio) == (
        "http://otel:4317", "OTEL_EXPORTER_OTLP_ENDPOINT", 0.25,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "variables", "message"),
    [
        pytest.param("grpc://otel:4317", {}, "--otlp-endpoint 'grpc://otel:4317'", id="scheme"),
        pytest.param("http://otel", {}, "expected http://HOST:PORT", id="no-port"),
        pytest.param(
            None,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317", "OTEL_TRACES_SAMPLER": "often"},
            "OTEL_TRACES_SAMPLER='often'",
            id="sampler",
        ),
        pytest.param(
            "http://otel:4317", {"OTEL_SDK_DISABLED": "true"}, "disabled by", id="disabled"
        ),
        pytest.param(
            "http://otel:4317",
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "only OTLP over gRPC",
            id="protocol",
        ),
    ],
)
def test_bad_values_are_refused_at_validation(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str | None,
    variables: dict[str, str],
    message: str,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = Settings(policy="p.yaml", otlp_endpoint=flag)
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        settings.validate()
    argv = ["serve", "--policy", "p.yaml", *(["--otlp-endpoint", flag] if flag else [])]
    assert cli.main(argv) == 1  # before reading the policy or binding anything
    err = capsys.readouterr().err
    assert err.startswith("authz-server: ") and message in err and "Traceback" not in err


def test_workers_receive_the_endpoint() -> None:
    """Each worker process starts its own tracing from the settings it is handed."""
    base = Settings(policy="p.yaml", otlp_endpoint="http://otel:4317", workers=2)
    encoded = json.dumps(dataclasses.asdict(worker_settings(base, 1)))
    assert json.loads(encoded)["otlp_endpoint"] == "http://otel:4317"
