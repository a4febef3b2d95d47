"""xds-protos (the Envoy API stubs the Check service decodes with) and the OTLP exporter
in one process.

xds-protos ships old copies of `opentelemetry/proto/...` under the very paths
opentelemetry-proto installs; whichever pip installs last wins on disk, and the old copies
cannot serve the exporter (no ScopeSpans). These tests prove that, as installed:
- the files on disk are opentelemetry-proto's (a later `pip install xds-protos` that
  overwrote them fails here, naming the repair);
- in a fresh interpreter, in either import order, the ext_authz stubs, the Envoy modules
  that build on the OpenTelemetry protos (the OTel access logger and stats sink) and the
  exporter load into one descriptor pool, a CheckRequest decodes, and a span reaches a
  real OTLP receiver;
- the start-up check (`otlp_protos_problem`) passes, so tracing starts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from authz_server.telemetry.otlp_protos import REPAIR, otlp_protos_problem

ROOT = Path(__file__).resolve().parents[2]

ENVOY = """
from envoy.service.auth.v3 import external_auth_pb2
from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2 as access_log
from envoy.extensions.stat_sinks.open_telemetry.v3 import open_telemetry_pb2 as stats_sink
"""
EXPORTER = """
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
"""
SCRIPT = """
import json
{first}
{second}
from authz_server.telemetry.receiver import OtlpReceiver
from authz_server.telemetry.spans import check_span
from authz_server.telemetry.tracing import TracingConfig, start_tracing
from opentelemetry.proto.common.v1 import common_pb2

request = external_auth_pb2.CheckRequest()
request.attributes.request.http.path = "/v1/orders/7"
decoded = external_auth_pb2.CheckRequest.FromString(request.SerializeToString())
# The access logger's config holds OpenTelemetry messages: same pool, same classes.
config = access_log.OpenTelemetryAccessLogConfig()
config.body.string_value = "%REQ(:PATH)%"
config.attributes.values.add(key="rule", value=common_pb2.AnyValue(string_value="r"))
config = access_log.OpenTelemetryAccessLogConfig.FromString(config.SerializeToString())

receiver = OtlpReceiver()
receiver.start()
tracing = start_tracing(TracingConfig(receiver.endpoint))
with check_span([("traceparent", "00-{trace}-b7ad6b7169203331-01")]):
    pass
flushed = tracing.shutdown(timeout_s=10.0)
[span] = receiver.wait_for(1)
receiver.stop()
print(json.dumps({{
    "path": decoded.attributes.request.http.path,
    "access_log_body": config.body.string_value,
    "access_log_attribute": config.attributes.values[0].value.string_value,
    "stats_sink": stats_sink.SinkConfig.DESCRIPTOR.full_name,
    "request_type": trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR.full_name,
    "flushed": flushed,
    "trace_id": span.trace_id,
}}))
"""
TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(ENVOY, EXPORTER, id="envoy-first"),
        pytest.param(EXPORTER, ENVOY, id="otel-first"),
    ],
)
def test_one_process_decodes_envoy_and_exports_a_span(first: str, second: str) -> None:
    script = SCRIPT.format(first=first, second=second, trace=TRACE)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "path": "/v1/orders/7",
        "access_log_body": "%REQ(:PATH)%",
        "access_log_attribute": "r",
        "stats_sink": "envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig",
        "request_type": "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
        "flushed": True,
        "trace_id": TRACE,
    }


def _recorded(distribution: str) -> dict[str, str]:
    """The RECORD hashes of `distribution`'s files under opentelemetry/proto/."""
    files = metadata.distribution(distribution).files or []
    return {
        str(f): f.hash.value
        for f in files
        if str(f).startswith("opentelemetry/proto/") and str(f).endswith(".py") and f.hash
    }


def test_the_shared_files_on_disk_are_opentelemetry_protos() -> None:
    """The overlap exists (so install order matters) and opentelemetry-proto won it."""
    ours, theirs = _recorded("opentelemetry-proto"), _recorded("xds-protos")
    shared = sorted(set(ours) & set(theirs))
    assert "opentelemetry/proto/trace/v1/trace_pb2.py" in shared
    location = Path(str(metadata.distribution("opentelemetry-proto").locate_file("")))
    overwritten = []
    for name in shared:
        digest = hashlib.sha256((location / name).read_bytes()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != ours[name]:
            overwritten.append(name)
    assert not overwritten, f"{REPAIR}; not opentelemetry-proto's: {overwritten}"


def test_tracing_would_start() -> None:
    assert otlp_protos_problem() is None
