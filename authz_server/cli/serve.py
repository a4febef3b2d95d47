"""`authz-server serve`: its flags, and the `Settings` they make.

The flags are grouped the way the server is: the Check listener and what it shares (policy,
trust bundles, store, audit log), the admin API, the approval console and the AuthZEN API.
Each listener beside the Check server is off unless its `--*-listen` is given (the admin
API: unless it has credentials), so `serve --policy P` opens no port nobody asked for.
Every flag also reads its `AUTHZ_*` variable (`env.py`); `off` (or empty) turns a listener
with a default address off.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from authz_server.core.errors import ConfigError
from authz_server.identity.bundles import parse_bundle_spec
from authz_server.runtime.settings import DEFAULT_AUTHZEN_MAX_BODY, Settings

__all__ = ["add_serve", "run_serve", "settings_from_args"]

_SERVE_DESCRIPTION = """\
Run the ext_authz gRPC server (the Check listener) for Envoy, and beside it on the same \
policy, store and audit log: the admin API (approvals, revocations, explain), the web \
approval console (--console-listen) and the AuthZEN API for other enforcement points \
(--authzen-listen). SIGHUP reloads the policy and bundles; SIGTERM drains and exits 0."""


def add_serve(commands: Any) -> None:
    """The `serve` subcommand and its flags."""
    serve = commands.add_parser(
        "serve", help="run the ext_authz gRPC server", description=_SERVE_DESCRIPTION
    )
    _add_check_flags(serve)
    _add_admin_flags(serve)
    _add_console_flags(serve)
    _add_authzen_flags(serve)
    _add_tracing_flags(serve)


def _add_check_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--policy", required=True, help="policy file or directory (reloaded when it changes)"
    )
    serve.add_argument(
        "--listen",
        default="0.0.0.0:9191",
        metavar="HOST:PORT",
        help="the Check (ext_authz gRPC) listener, on every interface by default; plaintext "
        "unless --tls-cert/--tls-key or --tls-workload-api",
    )
    serve.add_argument(
        "--metrics-listen",
        default="0.0.0.0:9090",
        metavar="HOST:PORT|off",
        help="HTTP /metrics, /healthz, /readyz, plaintext",
    )
    serve.add_argument(
        "--trust-bundle",
        action="append",
        default=None,
        metavar="TRUST_DOMAIN=FILE",
        help="CA bundle (PEM or SPIFFE bundle JSON) for one trust domain (repeatable)",
    )
    serve.add_argument(
        "--workload-api",
        default=None,
        metavar="SOCKET",
        help="SPIFFE Workload API socket (unix:///path): trust bundles, and the SVID for TLS",
    )
    serve.add_argument(
        "--tls-cert",
        default=None,
        metavar="PEM",
        help="serve the Check listener over mutual TLS with this certificate (with --tls-key)",
    )
    serve.add_argument("--tls-key", default=None, metavar="PEM", help="its private key")
    serve.add_argument(
        "--tls-client-ca",
        default=None,
        metavar="PEM",
        help="client CAs for the handshake (default: every trust bundle)",
    )
    serve.add_argument(
        "--tls-workload-api",
        action="store_true",
        help="serve the Check listener with the Workload API SVID (rotated without restart)",
    )
    serve.add_argument(
        "--allowed-caller",
        action="append",
        default=None,
        metavar="SPIFFE_PATTERN",
        help="with TLS: SPIFFE IDs allowed to call Check (repeatable)",
    )
    serve.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between checks of policy, bundle and TLS files (0: on SIGHUP only)",
    )
    serve.add_argument(
        "--audit-log",
        default=None,
        metavar="FILE|-",
        help="one hash-chained JSON line per decision, to FILE or - for stdout (default: off)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds to drain in-flight Checks on SIGTERM",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING or ERROR (to stderr)",
    )
    serve.add_argument(
        "--store",
        default="memory",
        metavar="memory|redis://HOST:PORT/DB",
        help="approvals, rate counters, revocations: memory (one process) or shared Redis",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the Check port (SO_REUSEPORT); N>1 with approvals or rate "
        "limits needs --store redis://",
    )


def _add_admin_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--admin-listen",
        default="127.0.0.1:9192",
        metavar="HOST:PORT|off",
        help="admin API (approvals, revocations, explain); mutual TLS, so it stays off "
        "without --admin-tls-cert/--admin-tls-key, a Workload API SVID or "
        "--admin-insecure-local",
    )
    serve.add_argument(
        "--admin-tls-cert",
        default=None,
        metavar="PEM",
        help="the admin API's certificate (with --admin-tls-key; default: the Workload "
        "API SVID when --workload-api is given)",
    )
    serve.add_argument("--admin-tls-key", default=None, metavar="PEM", help="its key")
    serve.add_argument(
        "--admin-insecure-local",
        action="store_true",
        help="admin API in plaintext on loopback, every local caller an admin: demos only",
    )


def _add_console_flags(serve: argparse.ArgumentParser) -> None:
    console = serve.add_argument_group(
        "approval console",
        "A web page where approvers see pending approvals and approve or reject them, and "
        "admins revoke identities: HTTPS with mutual TLS only (each person presents the "
        "client certificate of their SPIFFE ID, checked against the policy's admin "
        "principals and each rule's approvers). Off by default. With --workers N it runs "
        "in worker 0. Set admin.approvals.console_url in the policy to the URL people open, "
        "so approval notifications link to it.",
    )
    console.add_argument(
        "--console-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve the approval console on HOST:PORT (needs --console-tls-cert/"
        "--console-tls-key; default: off)",
    )
    console.add_argument(
        "--console-tls-cert",
        default=None,
        metavar="PEM",
        help="the console's server certificate chain, leaf first, with a DNS or IP name "
        "browsers connect to (reloaded when it changes)",
    )
    console.add_argument("--console-tls-key", default=None, metavar="PEM", help="its key")


def _add_authzen_flags(serve: argparse.ArgumentParser) -> None:
    authzen = serve.add_argument_group(
        "AuthZEN API",
        "The OpenID AuthZEN Authorization API (POST /access/v1/evaluation and "
        "/access/v1/evaluations, GET /.well-known/authzen-configuration) for enforcement "
        "points that are not Envoy, decided by the same engine and policy as Check. HTTPS "
        "with mutual TLS: callers present X509-SVIDs; only the policy's authzen.trusted_peps "
        "may ask about other subjects. Off by default.",
    )
    authzen.add_argument(
        "--authzen-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve the AuthZEN API on HOST:PORT (default: off)",
    )
    authzen.add_argument(
        "--authzen-tls-cert",
        default=None,
        metavar="PEM",
        help="its server certificate chain (with --authzen-tls-key); default: the Check "
        "listener's certificate and client CAs (--tls-cert or --tls-workload-api)",
    )
    authzen.add_argument("--authzen-tls-key", default=None, metavar="PEM", help="its key")
    authzen.add_argument(
        "--authzen-insecure-local",
        action="store_true",
        help="AuthZEN in plaintext on a loopback IP, every local caller a trusted PEP that "
        "may ask about anyone: demos and benchmarks only",
    )
    authzen.add_argument(
        "--authzen-public-url",
        default=None,
        metavar="https://HOST[:PORT]",
        help="the PDP's address in /.well-known/authzen-configuration (default: the scheme "
        "and Host header of each request)",
    )
    authzen.add_argument(
        "--authzen-max-body",
        type=int,
        default=DEFAULT_AUTHZEN_MAX_BODY,
        metavar="BYTES",
        help="largest request body accepted; larger is 413",
    )


def _add_tracing_flags(serve: argparse.ArgumentParser) -> None:
    tracing = serve.add_argument_group(
        "tracing",
        "OpenTelemetry traces of each Check, exported over OTLP/gRPC. Off unless a collector "
        "is named here or by OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT; "
        "the other standard OTEL_* variables (sampler, service name, exporter headers and "
        "TLS) apply. Sampling follows the parent: Envoy's span, else the request's own "
        "traceparent or B3 headers.",
    )
    tracing.add_argument(
        "--otlp-endpoint",
        default=None,
        metavar="http[s]://HOST:PORT",
        help="the OTLP/gRPC collector to send spans to: http:// plaintext, https:// TLS "
        "(default: off, or the OTEL_* variables)",
    )


def _off(value: str | None) -> str | None:
    """None for a listener turned off (`off` or empty), else the address."""
    if value is None or value.strip().lower() in ("", "off"):
        return None
    return value


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The `Settings` of a parsed `serve` command line (not yet validated)."""
    if not args.policy:
        raise ConfigError("--policy (or AUTHZ_POLICY) is required")
    bundles: dict[str, str] = {}
    for spec in args.trust_bundle or ():
        domain, path = parse_bundle_spec(spec)
        if domain in bundles:
            raise ConfigError(f"--trust-bundle given twice for trust domain {domain!r}")
        bundles[domain] = path
    workload_api = args.workload_api
    if args.tls_workload_api and not workload_api:
        workload_api = os.environ.get("SPIFFE_ENDPOINT_SOCKET") or None
    return Settings(
        policy=args.policy,
        listen=args.listen,
        trust_bundles=bundles,
        audit_log=args.audit_log,
        grace_seconds=args.grace,
        log_level=args.log_level,
        metrics_listen=_off(args.metrics_listen),
        workload_api=workload_api,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        tls_workload_api=args.tls_workload_api,
        allowed_callers=tuple(args.allowed_caller or ()),
        reload_interval=args.reload_interval,
        store=args.store,
        workers=args.workers,
        admin_listen=_off(args.admin_listen),
        admin_tls_cert=args.admin_tls_cert,
        admin_tls_key=args.admin_tls_key,
        admin_insecure_local=args.admin_insecure_local,
        console_listen=_off(args.console_listen),
        console_tls_cert=args.console_tls_cert,
        console_tls_key=args.console_tls_key,
        authzen_listen=_off(args.authzen_listen),
        authzen_tls_cert=args.authzen_tls_cert,
        authzen_tls_key=args.authzen_tls_key,
        authzen_insecure_local=args.authzen_insecure_local,
        authzen_public_url=args.authzen_public_url,
        authzen_max_body=args.authzen_max_body,
        otlp_endpoint=args.otlp_endpoint or None,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Validate the settings, then serve in this process or supervise `--workers N`."""
    settings = settings_from_args(args)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings.validate()
    if settings.workers > 1:
        from authz_server.runtime.workers import run_workers

        return run_workers(settings)
    from authz_server.runtime.server import serve  # grpc import only for the commands that need it

    return asyncio.run(serve(settings))
