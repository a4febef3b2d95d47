"""Opt-in tracing: settings from `--otlp-endpoint` and the standard `OTEL_*` variables, the
OpenTelemetry SDK set up behind them, and a shutdown that cannot hang.

    config = TracingConfig.resolve(settings.otlp_endpoint, os.environ)   # None: off
    tracing = start_tracing(config) if config else None                  # per process
    ...
    tracing.shutdown(timeout_s=2.0)                                      # flush, bounded

Tracing is on when `--otlp-endpoint` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
`OTEL_EXPORTER_OTLP_ENDPOINT` names a collector (the flag wins), unless
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Only OTLP over gRPC is built in.
Spans go to a `BatchSpanProcessor`: ending a span appends it to a bounded queue (full:
the span is dropped, never the Check delayed, and not logged: the exporter logs its
failures) and a background thread exports batches, retrying with backoff. Sampling
always follows the parent's decision (`ParentBased`); `OTEL_TRACES_SAMPLER`/`_ARG`
choose for Checks without a parent.

The SDK reads its other variables itself: `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`,
`_INSECURE`, `_CERTIFICATE`, `_CLIENT_KEY`, `_CLIENT_CERTIFICATE`, `_TIMEOUT`,
`_COMPRESSION`, `OTEL_RESOURCE_ATTRIBUTES`. This module reads `OTEL_SERVICE_NAME` and
`OTEL_BSP_MAX_QUEUE_SIZE`, `_SCHEDULE_DELAY`, `_MAX_EXPORT_BATCH_SIZE` itself. A bad value
is a ConfigError at start, not a log line on the export thread and a silent default.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Tracer

from authz_server.core.errors import ConfigError, quote
from authz_server.telemetry import spans
from authz_server.telemetry.otlp_protos import otlp_protos_problem

__all__ = ["DEFAULT_SERVICE_NAME", "Tracing", "TracingConfig", "start_tracing"]

#: The SDK's batching logger: with the export queue full it would log one warning per
#: dropped span, on the Check path (~15 µs each, filtered only after the record is made).
_BATCHING_LOGGER = "opentelemetry.sdk._shared_internal"

DEFAULT_SERVICE_NAME = "authz-server"
FLAG = "--otlp-endpoint"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
#: OTEL_TRACES_SAMPLER value → the root sampler (the parent's decision always wins).
_ROOT_SAMPLERS = {
    "always_on": "always_on",
    "parentbased_always_on": "always_on",
    "always_off": "always_off",
    "parentbased_always_off": "always_off",
    "traceidratio": "ratio",
    "parentbased_traceidratio": "ratio",
}


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """Where spans go and how Checks without a parent are sampled."""

    #: `http://HOST:PORT` (plaintext gRPC) or `https://HOST:PORT` (TLS).
    endpoint: str
    #: What named the endpoint (the flag or a variable), for messages.
    source: str = FLAG
    #: Share of Checks without a parent that start a trace: 1.0 all, 0.0 none.
    root_ratio: float = 1.0
    service_name: str = DEFAULT_SERVICE_NAME
    #: Ended spans waiting for export; when full, new spans are dropped.
    max_queue_size: int = 2048
    #: Export at least this often (milliseconds), or as soon as a batch is full.
    schedule_delay_ms: int = 5000
    max_export_batch_size: int = 512

    def __post_init__(self) -> None:
        problem = _endpoint_problem(self.endpoint)
        if problem is not None:
            raise ConfigError(f"{self.source} {quote(self.endpoint)}: {problem}")
        if not (math.isfinite(self.root_ratio) and 0.0 <= self.root_ratio <= 1.0):
            raise ConfigError(f"tracing root sampling ratio must be 0..1, got {self.root_ratio}")
        if min(self.max_queue_size, self.schedule_delay_ms, self.max_export_batch_size) < 1:
            raise ConfigError("tracing queue size, batch size and export delay must be positive")
        if self.max_export_batch_size > self.max_queue_size:
            raise ConfigError(
                f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={self.max_export_batch_size} is larger than "
                f"OTEL_BSP_MAX_QUEUE_SIZE={self.max_queue_size}"
            )

    @classmethod
    def resolve(cls, endpoint: str | None, environ: Mapping[str, str]) -> TracingConfig | None:
        """The configuration `--otlp-endpoint ENDPOINT` and `environ` ask for; None: off."""
        disabled = _disabled(environ)
        if endpoint and disabled:
            raise ConfigError(f"{FLAG} is set but tracing is disabled by {disabled}")
        if disabled:
            return None
        source = FLAG
        if not endpoint:
            source, endpoint = next(
                ((name, environ[name]) for name in _ENDPOINT_VARIABLES if environ.get(name)),
                (FLAG, None),
            )
        if not endpoint:
            return None
        for name in _PROTOCOL_VARIABLES:
            protocol = environ.get(name, "").strip().lower()
            if protocol and protocol != "grpc":
                raise ConfigError(
                    f"{name}={quote(protocol)}: only OTLP over gRPC is built in (grpc)"
                )
        return cls(
            endpoint.strip(),
            source,
            _root_ratio(environ),
            environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME,
            _positive(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
            _positive(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000),
            _positive(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        )

    def sampler(self) -> Sampler:
        if self.root_ratio >= 1.0:
            root: Sampler = ALWAYS_ON
        elif self.root_ratio <= 0.0:
            root = ALWAYS_OFF
        else:
            root = TraceIdRatioBased(self.root_ratio)
        return ParentBased(root)


def _disabled(environ: Mapping[str, str]) -> str | None:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "OTEL_SDK_DISABLED=true"
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return "OTEL_TRACES_EXPORTER=none"
    if exporter not in ("", "otlp"):
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={quote(exporter)}: only the OTLP exporter is built in "
            "(otlp, or none to turn tracing off)"
        )
    return None


def _root_ratio(environ: Mapping[str, str]) -> float:
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    root = _ROOT_SAMPLERS.get(name)
    if root is None:
        raise ConfigError(
            f"OTEL_TRACES_SAMPLER={quote(name)}: expected one of {', '.join(_ROOT_SAMPLERS)}"
        )
    if root != "ratio":
        return 1.0 if root == "always_on" else 0.0
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if not arg:
        return 1.0
    try:
        ratio = float(arg)
    except ValueError:
        ratio = math.nan
    if not (math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={quote(arg)}: expected a ratio from 0 to 1")
    return ratio


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    """An `OTEL_BSP_*` count or delay; the SDK itself would log and use its default."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name}={quote(text)}: expected a positive whole number")
    return int(text)


def _endpoint_problem(endpoint: str) -> str | None:
    expected = "expected http://HOST:PORT (plaintext) or https://HOST:PORT (TLS)"
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return expected
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return expected
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return f"{expected}; a gRPC endpoint has no path, query or user"
    return None


class Tracing:
    """A running TracerProvider with its batch processor and exporter."""

    def __init__(self, provider: TracerProvider, exporter: SpanExporter) -> None:
        self.provider = provider
        self.exporter = exporter
        self.tracer: Tracer = provider.get_tracer("authz_server")

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Stop tracing Checks, export what is queued, stop; at most `timeout_s` seconds.

        True when everything queued was handed over in time. Past the timeout the
        exporter is told to stop retrying and its connection is closed; spans still
        queued are lost (the export thread is a daemon: it never holds the process).
        """
        if spans.tracer() is self.tracer:
            spans.install(None)
        worker = threading.Thread(
            target=self.provider.shutdown, name="authz-tracing-shutdown", daemon=True
        )
        worker.start()
        worker.join(max(timeout_s, 0.0))
        if worker.is_alive():
            self.exporter.shutdown()  # ends the retry wait of an export in flight
            return False
        return True


def start_tracing(config: TracingConfig, exporter: SpanExporter | None = None) -> Tracing:
    """Set up the SDK for `config` and trace every Check from now on.

    `exporter` replaces the OTLP exporter `config` would create (benchmarks, tests).
    ConfigError when the exporter or the variables the SDK reads are unusable.
    """
    problem = otlp_protos_problem()
    if problem is not None:
        raise ConfigError(f"{config.source}: cannot trace: {problem}")
    try:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.endpoint)
        processor = BatchSpanProcessor(
            exporter,
            max_queue_size=config.max_queue_size,
            schedule_delay_millis=config.schedule_delay_ms,
            max_export_batch_size=config.max_export_batch_size,
            export_timeout_millis=30_000,  # unused by the SDK; given so it reads no variable
        )
    except Exception as error:  # the SDK's own parsing of OTEL_* variables
        raise ConfigError(f"{config.source}: cannot trace: {error}") from None
    resource = Resource.create({SERVICE_NAME: config.service_name})
    # No atexit hook: its shutdown would wait 30 s for an unreachable collector.
    provider = TracerProvider(resource=resource, sampler=config.sampler(), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    # Failed exports are still logged, by the exporter on its own thread.
    logging.getLogger(_BATCHING_LOGGER).setLevel(logging.ERROR)
    tracing = Tracing(provider, exporter)
    spans.install(tracing.tracer)
    return tracing
