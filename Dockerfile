# syntax=docker/dockerfile:1
# authz-server: multi-stage, slim, non-root. Only the virtualenv crosses into the final
# stage: no pip cache, no build backend, no compiler (every dependency is a wheel).
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authz_server ./authz_server
# The project's own wheel is built here; dependencies are installed from wheels only.
# opentelemetry-proto goes in again last: xds-protos ships old copies of its files at the
# same paths, and the OTLP exporter needs opentelemetry-proto's own.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --only-binary=:all: /wheels/*.whl \
 && pip --python /opt/venv/bin/python install --force-reinstall --no-deps --only-binary=:all: \
      "opentelemetry-proto==$(/opt/venv/bin/python -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="authz-server" \
      org.opencontainers.image.description="Per-action authorization for Envoy, keyed on SPIFFE workload identity" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTHZ_LISTEN=0.0.0.0:9191
COPY --from=build /opt/venv /opt/venv
# 65532 is the conventional "nonroot" id: numeric, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin nonroot
USER 65532:65532
EXPOSE 9191 9090
# gRPC health (docs/concepts/interfaces.md#check-service): SERVING only with a policy loaded and
# trust bundles present. Plaintext, like Kubernetes' grpc probes; with --tls-* probe /readyz on 9090
# instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ.get('AUTHZ_LISTEN', '0.0.0.0:9191').rsplit(':', 1)[1]; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + port)).Check(h.HealthCheckRequest(), timeout=2); sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"]
ENTRYPOINT ["authz-server"]
CMD ["serve"]
