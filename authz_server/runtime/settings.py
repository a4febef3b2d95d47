"""Frozen settings for `serve`, from flags with `AUTHZ_*` environment fallbacks.

`Settings.validate` refuses combinations that would leave the server less protected than
the operator thinks: TLS without an `--allowed-caller` (nobody could call, or everybody
would be meant), allowed callers without TLS (nothing to check them against), a
certificate without its key, a plaintext admin or AuthZEN API off loopback, a console or
AuthZEN listener with no certificate to serve (the console has no plaintext mode; AuthZEN
borrows the Check listener's when it has none of its own). Several workers on the
memory store are refused later, once the policy is read, if it keeps state that the
workers would have to share (`shared_state.require_shareable`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from authz_server.admin.address import DEFAULT_ADMIN_LISTEN, is_loopback, listen_host
from authz_server.core.errors import ConfigError, quote
from authz_server.identity.patterns import compile_principal_pattern
from authz_server.state import check_store_url

if TYPE_CHECKING:
    from authz_server.telemetry.tracing import TracingConfig

__all__ = ["Settings", "env_name"]

MAX_WORKERS = 64
#: `--authzen-max-body` default: a batch of 100 evaluations with generous contexts fits.
DEFAULT_AUTHZEN_MAX_BODY = 1024 * 1024
#: Its upper bound: the whole body is held in memory while it is decided.
MAX_AUTHZEN_BODY = 64 * 1024 * 1024
_ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]*):([0-9]{1,5})")


@dataclass(frozen=True, slots=True)
class Settings:
    policy: str
    listen: str = "0.0.0.0:9191"
    #: TRUST_DOMAIN → PEM or SPIFFE bundle JSON file.
    trust_bundles: Mapping[str, str] = field(default_factory=dict)
    audit_log: str | None = None
    grace_seconds: float = 10.0
    log_level: str = "INFO"
    #: `/metrics`, `/healthz`, `/readyz`; None: no HTTP listener (the CLI defaults to :9090).
    metrics_listen: str | None = None
    #: Workload API socket: trust bundles, and with `tls_workload_api` the serving SVID.
    workload_api: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: CA certificates for the TLS handshake; default: every trust bundle's authorities.
    tls_client_ca: str | None = None
    tls_workload_api: bool = False
    #: SPIFFE ID patterns of the callers allowed on the Check listener (TLS only).
    allowed_callers: tuple[str, ...] = ()
    #: Seconds between checks of policy/bundle/TLS files for changes; 0: SIGHUP only.
    reload_interval: float = 1.0
    #: `memory` (one process) or `redis://HOST:PORT/DB` (workers and replicas share it).
    store: str = "memory"
    #: Processes serving the Check port together (SO_REUSEPORT); >1 with approvals or rate
    #: limits needs a shared store.
    workers: int = 1
    #: Set by the supervisor in each worker process: its index (metrics port offset).
    worker: int | None = None
    #: Set by the supervisor of workers on the memory store: the file through which the
    #: workers share revocations (`state.worker_memory`).
    revocations_file: str | None = None
    #: The admin API (docs/operations/admin-api.md); None: off. Served only with credentials
    #: (below), with the Workload API SVID, or with `admin_insecure_local`.
    admin_listen: str | None = DEFAULT_ADMIN_LISTEN
    admin_tls_cert: str | None = None
    admin_tls_key: str | None = None
    admin_insecure_local: bool = False
    #: The web approval console (HTTPS, mutual TLS); None: off. Needs its own certificate.
    console_listen: str | None = None
    console_tls_cert: str | None = None
    console_tls_key: str | None = None
    #: The AuthZEN API (HTTPS, mutual TLS); None: off. Without its own certificate it
    #: serves with the Check listener's credentials.
    authzen_listen: str | None = None
    authzen_tls_cert: str | None = None
    authzen_tls_key: str | None = None
    authzen_insecure_local: bool = False
    #: `policy_decision_point` of the PDP metadata; None: the scheme and Host of the request.
    authzen_public_url: str | None = None
    authzen_max_body: int = DEFAULT_AUTHZEN_MAX_BODY
    #: OTLP/gRPC collector for traces (`http://HOST:PORT` or `https://HOST:PORT`); None:
    #: the `OTEL_*` variables decide (`telemetry.tracing`), off unless they name one.
    otlp_endpoint: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None or self.tls_workload_api

    @property
    def admin_enabled(self) -> bool:
        """Whether `serve` starts the admin API: a listen address and a way to authenticate."""
        return self.admin_listen is not None and (
            self.admin_tls_cert is not None
            or self.admin_insecure_local
            or self.workload_api is not None
        )

    def validate(self) -> None:
        """Raise `ConfigError` for an inconsistent or unsafe combination."""
        _check_address("--listen", self.listen)
        if self.metrics_listen is not None:
            _check_address("--metrics-listen", self.metrics_listen)
        if not 0 <= self.grace_seconds < math.inf:  # also refuses nan
            raise ConfigError(f"--grace must be >= 0 and finite, got {self.grace_seconds:g}")
        if not 0 <= self.reload_interval < math.inf:
            raise ConfigError(
                f"--reload-interval must be >= 0 and finite, got {self.reload_interval:g}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca needs --tls-cert/--tls-key")
        if self.tls_cert is not None and self.tls_workload_api:
            raise ConfigError("choose one: --tls-cert/--tls-key or --tls-workload-api")
        if self.tls_workload_api and not self.workload_api:
            raise ConfigError(
                "--tls-workload-api needs the socket: --workload-api or SPIFFE_ENDPOINT_SOCKET"
            )
        if self.tls and not self.allowed_callers:
            raise ConfigError(
                "TLS on the Check listener needs at least one --allowed-caller SPIFFE pattern "
                "(the Envoy identities that may ask for decisions)"
            )
        if self.allowed_callers and not self.tls:
            raise ConfigError(
                "--allowed-caller needs TLS on the Check listener (--tls-cert/--tls-key or "
                "--tls-workload-api): without it callers have no identity to check"
            )
        if self.workload_api is not None and not self.workload_api.startswith(("unix:", "/")):
            raise ConfigError(
                f"--workload-api {quote(self.workload_api)}: expected a unix socket "
                "(unix:///path or /path)"
            )
        for pattern in self.allowed_callers:
            try:
                compile_principal_pattern(pattern)
            except ValueError as exc:
                raise ConfigError(f"--allowed-caller: {exc}") from None
        self._validate_state_and_admin()
        self._validate_console()
        self._validate_authzen()
        self.tracing()

    def tracing(self, environ: Mapping[str, str] | None = None) -> TracingConfig | None:
        """Where traces go, from `--otlp-endpoint` and the `OTEL_*` variables of `environ`
        (default: this process's); None: tracing off. ConfigError for a bad value."""
        # Imported here: the OpenTelemetry SDK is for `serve` only, not every command.
        from authz_server.telemetry.tracing import TracingConfig

        return TracingConfig.resolve(self.otlp_endpoint, os.environ if environ is None else environ)

    def _validate_state_and_admin(self) -> None:
        check_store_url(self.store)
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS}, got {self.workers}")
        if self.workers > 1 and self.listen.rpartition(":")[2] == "0":
            raise ConfigError("--workers N>1 needs a fixed --listen port (they share it)")
        if self.admin_listen is not None:
            _check_address("--admin-listen", self.admin_listen)
        if (self.admin_tls_cert is None) != (self.admin_tls_key is None):
            raise ConfigError("--admin-tls-cert and --admin-tls-key go together")
        if self.admin_insecure_local:
            if self.admin_tls_cert is not None:
                raise ConfigError(
                    "choose one: --admin-tls-cert/--admin-tls-key or --admin-insecure-local"
                )
            if self.admin_listen is None or not is_loopback(listen_host(self.admin_listen)):
                raise ConfigError(
                    "--admin-insecure-local binds loopback only: --admin-listen 127.0.0.1:PORT"
                )

    def _validate_console(self) -> None:
        if (self.console_tls_cert is None) != (self.console_tls_key is None):
            raise ConfigError("--console-tls-cert and --console-tls-key go together")
        if self.console_listen is None:
            if self.console_tls_cert is not None:
                raise ConfigError("--console-tls-cert/--console-tls-key need --console-listen")
            return
        _check_address("--console-listen", self.console_listen)
        if self.console_tls_cert is None:
            raise ConfigError(
                "--console-listen needs --console-tls-cert and --console-tls-key: the console "
                "speaks mutual TLS only (approvers present their client certificates)"
            )

    def _validate_authzen(self) -> None:
        if (self.authzen_tls_cert is None) != (self.authzen_tls_key is None):
            raise ConfigError("--authzen-tls-cert and --authzen-tls-key go together")
        if self.authzen_insecure_local and self.authzen_tls_cert is not None:
            raise ConfigError(
                "choose one: --authzen-tls-cert/--authzen-tls-key or --authzen-insecure-local"
            )
        if not 1 <= self.authzen_max_body <= MAX_AUTHZEN_BODY:
            raise ConfigError(
                f"--authzen-max-body must be between 1 and {MAX_AUTHZEN_BODY} bytes, "
                f"got {self.authzen_max_body}"
            )
        if self.authzen_public_url is not None:
            # Imported here: the authzen package brings aiohttp, which no other command needs.
            from authz_server.authzen.wellknown import check_public_url

            try:
                check_public_url(self.authzen_public_url)
            except ConfigError as error:
                raise ConfigError(f"--authzen-public-url: {error}") from None
        if self.authzen_listen is None:
            if self.authzen_tls_cert is not None or self.authzen_insecure_local:
                raise ConfigError(
                    "--authzen-tls-cert/--authzen-tls-key and --authzen-insecure-local need "
                    "--authzen-listen"
                )
            return
        _check_address("--authzen-listen", self.authzen_listen)
        if self.authzen_insecure_local:
            if not is_loopback(listen_host(self.authzen_listen)):
                raise ConfigError(
                    "--authzen-insecure-local binds loopback only: --authzen-listen "
                    "127.0.0.1:PORT (or [::1]:PORT)"
                )
        elif self.authzen_tls_cert is None and not self.tls:
            raise ConfigError(
                "--authzen-listen needs TLS: --authzen-tls-cert/--authzen-tls-key, or TLS on "
                "the Check listener to share (--tls-cert/--tls-key or --tls-workload-api); "
                "plaintext only with --authzen-insecure-local on loopback (demos)"
            )


def _check_address(flag: str, value: str) -> None:
    match = _ADDRESS.fullmatch(value)
    if match is None or int(match.group(2)) > 65535:
        raise ConfigError(f"{flag} {quote(value)}: expected HOST:PORT, e.g. 0.0.0.0:9191")


def env_name(flag: str) -> str:
    """`--trust-bundle` → `AUTHZ_TRUST_BUNDLE`."""
    return "AUTHZ_" + flag.lstrip("-").upper().replace("-", "_")
