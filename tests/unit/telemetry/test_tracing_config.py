"""When tracing is on and how: `--otlp-endpoint`, the standard `OTEL_*` variables, and a
ConfigError naming the flag or variable for every value that cannot work."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased

from authz_server.core.errors import ConfigError
from authz_server.telemetry import spans
from authz_server.telemetry.tracing import TracingConfig, start_tracing

COLLECTOR = "http://collector:4317"

ON = [
    pytest.param(COLLECTOR, {}, (COLLECTOR, "--otlp-endpoint", 1.0, "authz-server"), id="flag"),
    pytest.param(
        None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example:4317"},
        ("https://otel.example:4317", "OTEL_EXPORTER_OTLP_ENDPOINT", 1.0, "authz-server"),
        id="general-variable",
    ),
    pytest.param(
        None,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2"},
        ("http://b:2", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", 1.0, "authz-server"),
        id="traces-variable-wins",
    ),
    pytest.param(
        COLLECTOR, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2"},
        (COLLECTOR, "--otlp-endpoint", 1.0, "authz-server"), id="flag-wins",
    ),
    pytest.param(
        COLLECTOR, {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
        (COLLECTOR, "--otlp-endpoint", 0.25, "authz-server"), id="ratio",
    ),
    pytest.param(
        COLLECTOR, {"OTEL_TRACES_SAMPLER": "traceidratio"},
        (COLLECTOR, "--otlp-endpoint", 1.0, "authz-server"), id="ratio-default-arg",
    ),
    pytest.param(
        COLLECTOR, {"OTEL_TRACES_SAMPLER": "always_off"},
        (COLLECTOR, "--otlp-endpoint", 0.0, "authz-server"), id="only-with-a-parent",
    ),
    pytest.param(
        COLLECTOR, {"OTEL_SERVICE_NAME": "authz-eu", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        (COLLECTOR, "--otlp-endpoint", 1.0, "authz-eu"), id="service-name-and-protocol",
    ),
    pytest.param(
        " http://[::1]:4317/ ", {}, ("http://[::1]:4317/", "--otlp-endpoint", 1.0, "authz-server"),
        id="ipv6-trailing-slash",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "environ", "expected"), ON)
def test_on(flag: str | None, environ: dict[str, str], expected: tuple[object, ...]) -> None:
    config = TracingConfig.resolve(flag, environ)
    assert config is not None
    assert (config.endpoint, config.source, config.root_ratio, config.service_name) == expected
    assert isinstance(config.sampler(), ParentBased)


OFF = [
    pytest.param(None, {}, id="nothing-set"),
    pytest.param("", {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, id="empty"),
    pytest.param(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR, "OTEL_SDK_DISABLED": "TRUE"},
                 id="sdk-disabled"),
    pytest.param(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR, "OTEL_TRACES_EXPORTER": "none"},
                 id="exporter-none"),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "environ"), OFF)
def test_off(flag: str | None, environ: dict[str, str]) -> None:
    assert TracingConfig.resolve(flag, environ) is None


REFUSED = [
    pytest.param("collector:4317", {}, "--otlp-endpoint 'collector:4317': expected http://HOST:PORT", id="no-scheme"),
    pytest.param("grpc://collector:4317", {}, "expected http://HOST:PORT", id="grpc-scheme"),
    pytest.param("http://collector", {}, "expected http://HOST:PORT", id="no-port"),
    pytest.param("http://collector:99999", {}, "expected http://HOST:PORT", id="bad-port"),
    pytest.param("http://collector:4317/v1/traces", {}, "has no path", id="http-path"),
    pytest.param("http://user@collector:4317", {}, "has no path, query or user", id="user"),
    pytest.param(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"},
                 "OTEL_EXPORTER_OTLP_ENDPOINT 'localhost:4317'", id="variable-named"),
    pytest.param(COLLECTOR, {"OTEL_SDK_DISABLED": "true"},
                 "--otlp-endpoint is set but tracing is disabled by OTEL_SDK_DISABLED=true",
                 id="flag-but-disabled"),
    pytest.param(COLLECTOR, {"OTEL_TRACES_EXPORTER": "none"}, "disabled by OTEL_TRACES_EXPORTER=none",
                 id="flag-but-exporter-none"),
    pytest.param(COLLECTOR, {"OTEL_TRACES_EXPORTER": "zipkin"}, "only the OTLP exporter", id="zipkin"),
    pytest.param(COLLECTOR, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
                 "OTEL_EXPORTER_OTLP_PROTOCOL='http/protobuf': only OTLP over gRPC", id="http-protocol"),
    pytest.param(COLLECTOR, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
                 "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", id="traces-protocol"),
    pytest.param(COLLECTOR, {"OTEL_TRACES_SAMPLER": "jaeger_remote"},
                 "OTEL_TRACES_SAMPLER='jaeger_remote': expected one of", id="unknown-sampler"),
    pytest.param(COLLECTOR, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
                 "OTEL_TRACES_SAMPLER_ARG='1.5': expected a ratio from 0 to 1", id="ratio-above-1"),
    pytest.param(COLLECTOR, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "nan"},
                 "expected a ratio", id="ratio-nan"),
    pytest.param(COLLECTOR, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
                 "expected a ratio", id="ratio-word"),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "environ", "message"), REFUSED)
def test_refused(flag: str | None, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        TracingConfig.resolve(flag, environ)
    assert message in str(refused.value)


BATCHING = [
    pytest.param({}, (2048, 5000, 512), None, id="defaults"),
    pytest.param({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_SCHEDULE_DELAY": "250",
                  "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "50"}, (100, 250, 50), None, id="set"),
    pytest.param({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, None,
                 "OTEL_BSP_MAX_QUEUE_SIZE='lots': expected a positive whole number", id="word"),
    pytest.param({"OTEL_BSP_SCHEDULE_DELAY": "0"}, None, "OTEL_BSP_SCHEDULE_DELAY='0'", id="zero"),
    pytest.param({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "-5"}, None, "expected a positive",
                 id="negative"),
    pytest.param({"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"}, None,
                 "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=20 is larger than OTEL_BSP_MAX_QUEUE_SIZE=10",
                 id="batch-above-queue"),
]  # fmt: skip


@pytest.mark.parametrize(("environ", "expected", "message"), BATCHING)
def test_batching_variables(
    environ: dict[str, str], expected: tuple[int, int, int] | None, message: str | None
) -> None:
    """Read here, not by the SDK, which would log a traceback and use its default."""
    if message is not None:
        with pytest.raises(ConfigError) as refused:
            TracingConfig.resolve(COLLECTOR, environ)
        assert message in str(refused.value)
        return
    config = TracingConfig.resolve(COLLECTOR, environ)
    assert config is not None
    assert (config.max_queue_size, config.schedule_delay_ms, config.max_export_batch_size) == (
        expected
    )


def test_exporter_variables_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value the exporter parses itself fails the start, naming what asked for tracing."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match=r"--otlp-endpoint: cannot trace: .*soon"):
        start_tracing(TracingConfig(COLLECTOR))
    assert spans.tracer() is None


def test_start_with_a_given_exporter_installs_the_tracer() -> None:
    tracing = start_tracing(TracingConfig(COLLECTOR), exporter=InMemorySpanExporter())
    assert spans.tracer() is tracing.tracer
    assert tracing.shutdown(timeout_s=5.0)


def test_ratio_bounds_are_checked_in_code_too() -> None:
    with pytest.raises(ConfigError, match=r"ratio must be 0\.\.1"):
        TracingConfig(COLLECTOR, root_ratio=2.0)
