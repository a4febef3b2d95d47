# authz-server — developer entry points. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install system-deps bench soak demo test test-unit test-shifted-clock test-e2e lint format docs protos clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# xds-protos ships old copies of opentelemetry/proto/* at the paths opentelemetry-proto
	# owns, and whichever pip installs last wins. The OTLP exporter needs opentelemetry-proto's,
	# so it goes in again, last (tests/integration/test_otel_xds_coexist.py proves both work).
	$(PY) -m pip install --quiet --force-reinstall --no-deps \
	  "opentelemetry-proto==$$($(PY) -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) ## create .venv and install the package with test and dev tools

# Programs the tests run for real: Redis (shared store), docker-compose (compose file
# validation, no engine needed), h2load (benchmark smoke test), curl (the documented
# AuthZEN examples); kubectl (kustomize rendering) comes with the machine image.
# Installed from Debian when missing and we are root; otherwise the missing ones are named.
SYSTEM_TOOLS := redis-server:redis-server docker-compose:docker-compose h2load:nghttp2-client chromium:chromium faketime:faketime curl:curl valgrind:valgrind
system-deps: ## install the system programs the tests use (Debian packages; needs root)
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "please install:$$missing" >&2; exit 1; fi; \
	fi

demo: $(STAMP) ## real Envoy + authz-server + echo backend on loopback, with a scripted tour
	$(PY) -m authz_server demo

test: $(STAMP) system-deps ## the whole suite: unit, integration, end-to-end through real Envoy
	$(PY) -m pytest

test-unit: $(STAMP) ## unit tests only (fast)
	$(PY) -m pytest tests/unit

# No test may depend on today's date. The unit suite runs again with this process's clock
# 400 days ahead (libfaketime): a test that pins a clock but mints certificates around the
# real time fails here long before the calendar catches up with it. Left out: the tracing
# benchmark's test, whose exporter thread waits on a timed lock that libfaketime cannot
# shift (it hangs under the tool, whatever the date); it mints no certificates.
test-shifted-clock: $(STAMP) system-deps ## unit tests with the clock shifted 400 days ahead
	AUTHZ_TEST_SHIFTED_CLOCK=1 faketime -f '+400d' $(PY) -m pytest tests/unit -q \
	  --ignore=tests/unit/telemetry/test_bench_tracing.py

test-e2e: $(STAMP) ## end-to-end tests through real Envoy only
	$(PY) -m pytest tests/e2e

lint: $(STAMP) ## ruff format check, ruff lint, mypy --strict, import layering (import-linter)
	$(VENV)/bin/ruff format --check authz_server tests bench
	$(VENV)/bin/ruff check authz_server tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

docs: $(STAMP) ## build the documentation (MkDocs, strict: broken links fail) into build/site
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

format: $(STAMP) ## apply ruff formatting
	$(VENV)/bin/ruff format authz_server tests
	$(VENV)/bin/ruff check --fix authz_server tests

protos: $(STAMP) ## compile protos/*.proto with grpcio-tools (the admin API)
	$(PY) -m grpc_tools.protoc -Iauthz_server/admin=protos --python_out=. --pyi_out=. protos/authz_admin.proto

BENCH_ARGS ?=
bench: $(STAMP) ## authz-server vs do-nothing server and Envoy RBAC; 10/1k/10k rules; memory; workers; instructions per Check (~8 min)
	@command -v h2load >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client; }
	@command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind; }
	$(PY) -m bench.run $(BENCH_ARGS)

soak: $(STAMP) ## minutes of load through real Envoy; fails if the server's memory keeps growing (not in CI)
	$(PY) -m tests.soak.soak --minutes $(or $(MINUTES),5)

clean: ## remove the venv, caches and demo state
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache build *.egg-info
