"""`authz-server` commands: argparse → Settings → run.

Every `serve` flag also reads an `AUTHZ_*` environment variable (flag wins). Repeatable
flags take a comma-separated list from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from authz_server import __version__, lint_envoy
from authz_server.clock import FixedClock, SystemClock
from authz_server.errors import AuthzError, ConfigError, PolicyError
from authz_server.identity.bundles import TrustBundles, parse_bundle_spec
from authz_server.pipeline import Pipeline, Snapshot
from authz_server.policy.evaluate import Trace
from authz_server.policy.load import load_policy
from authz_server.request import RequestView, normalize_host, split_path
from authz_server.settings import Settings, env_name

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DENY = 3


def _env_default(flag: str, default: str | None = None) -> str | None:
    return os.environ.get(env_name(flag), default)


def _env_list(flag: str) -> list[str]:
    value = os.environ.get(env_name(flag), "")
    return [item.strip() for item in value.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authz-server",
        description="Per-action authorization for Envoy, keyed on SPIFFE workload identity.",
    )
    parser.add_argument("--version", action="version", version=f"authz-server {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the ext_authz gRPC server")
    serve.add_argument("--policy", default=_env_default("--policy"), help="policy file or directory")
    serve.add_argument("--listen", default=_env_default("--listen", "0.0.0.0:9191"))
    serve.add_argument(
        "--trust-bundle",
        action="append",
        default=None,
        metavar="TRUST_DOMAIN=PEM_FILE",
        help="CA bundle for one trust domain (repeatable)",
    )
    serve.add_argument("--audit-log", default=_env_default("--audit-log"), help="file, or - for stdout")
    serve.add_argument(
        "--grace", type=float, default=float(_env_default("--grace", "10") or 10),
        help="seconds to drain in-flight Checks on SIGTERM",
    )
    serve.add_argument("--log-level", default=_env_default("--log-level", "INFO"))

    validate = commands.add_parser("validate", help="check a policy; exit 1 listing every error")
    validate.add_argument("path")

    check = commands.add_parser("check", help="evaluate one described request offline")
    check.add_argument("--policy", required=True)
    check.add_argument("--principal", default="", help="SPIFFE ID, taken as verified")
    check.add_argument("--method", required=True)
    check.add_argument("--path", required=True, help="path, optionally with ?query")
    check.add_argument("--host", default="")
    check.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    check.add_argument("--body", default=None, help="JSON text, or @FILE")
    check.add_argument("--at", default=None, help="ISO 8601 time to evaluate at")
    check.add_argument("--explain", action="store_true", help="include the rule trace")

    devcerts = commands.add_parser("dev-certs", help="mint a local CA and X509-SVIDs")
    devcerts.add_argument("--out", required=True)
    devcerts.add_argument("--trust-domain", required=True)
    devcerts.add_argument("--id", action="append", default=[], metavar="NAME=SPIFFE_ID", required=True)
    devcerts.add_argument("--dns", action="append", default=[], metavar="NAME=HOST")

    demo = commands.add_parser("demo", help="real Envoy + authz-server + backend on loopback")
    demo.add_argument("--workdir", default=".demo")
    demo.add_argument("--once", action="store_true", help="run the tour and exit")

    lint = commands.add_parser("lint-envoy", help="check an Envoy config for required settings")
    lint_envoy.add_arguments(lint)

    for module_name in _FEATURE_COMMANDS:
        module = importlib.import_module(module_name)
        _COMMANDS.update(module.add_commands(commands))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = _COMMANDS[args.command]
        return handler(args)
    except PolicyError as error:
        print(f"policy rejected ({len(error.issues)} error(s)):", file=sys.stderr)
        for issue in error.issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_ERROR
    except AuthzError as error:
        print(f"authz-server: {error}", file=sys.stderr)
        return EXIT_ERROR


def _serve(args: argparse.Namespace) -> int:
    if not args.policy:
        raise ConfigError("--policy (or AUTHZ_POLICY) is required")
    specs = args.trust_bundle if args.trust_bundle is not None else _env_list("--trust-bundle")
    bundles: dict[str, str] = {}
    for spec in specs:
        domain, path = parse_bundle_spec(spec)
        if domain in bundles:
            raise ConfigError(f"--trust-bundle given twice for trust domain {domain!r}")
        bundles[domain] = path
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = Settings(
        policy=args.policy,
        listen=args.listen,
        trust_bundles=bundles,
        audit_log=args.audit_log,
        grace_seconds=args.grace,
        log_level=args.log_level,
    )
    from authz_server.server import serve  # grpc import only for the commands that need it

    return asyncio.run(serve(settings))


def _validate(args: argparse.Namespace) -> int:
    policy = load_policy(args.path)
    print(f"ok: {len(policy.rules)} rules, version {policy.version[:12]}")
    return EXIT_OK


def _parse_at(text: str | None) -> FixedClock | SystemClock:
    if text is None:
        return SystemClock()
    try:
        at = datetime.fromisoformat(text)
    except ValueError as error:
        raise ConfigError(f"--at {text!r} is not ISO 8601") from error
    if at.tzinfo is None:
        raise ConfigError(f"--at {text!r} needs a UTC offset, e.g. 2026-11-28T10:00:00+01:00")
    return FixedClock(at)


def _check(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    # Offline, the principal stands for an identity that Envoy and the certificate check
    # already established; there is no certificate to require.
    policy = dataclasses.replace(
        policy, identity=dataclasses.replace(policy.identity, require_certificate=False)
    )
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header {item!r} must be NAME:VALUE")
        headers[name.strip().lower()] = value.strip()
    body: bytes | None = None
    if args.body is not None:
        body = Path(args.body[1:]).read_bytes() if args.body.startswith("@") else args.body.encode()
        headers.setdefault("content-type", "application/json")
    path, query = split_path(args.path)
    view = RequestView(
        method=args.method.upper(),
        host=normalize_host(args.host),
        path=path,
        query=query,
        headers=headers,
        body=body,
        principal=args.principal,
    )
    trace = Trace() if args.explain else None
    pipeline = Pipeline(clock=_parse_at(args.at))
    decision = pipeline.evaluate(view, Snapshot(policy, TrustBundles.empty()), trace)
    output: dict[str, object] = {
        "decision": decision.verdict,
        "reason": decision.reason.value,
        "rule": decision.rule,
        "status": decision.http_status,
        "principal": decision.principal,
        "dry_run": decision.dry_run,
        "enforced": "allow" if decision.enforced_allow else "deny",
    }
    if trace is not None:
        output["trace"] = trace.steps
    print(json.dumps(output, indent=2))
    return EXIT_OK if decision.enforced_allow else EXIT_DENY


def _dev_certs(args: argparse.Namespace) -> int:
    from authz_server.devcerts import parse_id_spec, write_dev_certs

    ids = dict(parse_id_spec(spec) for spec in args.id)
    dns: dict[str, list[str]] = {}
    for spec in args.dns:
        name, sep, host = spec.partition("=")
        if not sep or name not in ids:
            raise ConfigError(f"--dns {spec!r} must be NAME=HOST for a NAME given with --id")
        dns.setdefault(name, []).append(host)
    paths = write_dev_certs(Path(args.out), args.trust_domain, ids, dns)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from authz_server.demo import run_demo

    return run_demo(Path(args.workdir), once=args.once)


def _lint_envoy(args: argparse.Namespace) -> int:
    return lint_envoy.run_lint_envoy(
        args.file, body_rules=args.body_rules, behind_trusted_proxy=args.behind_trusted_proxy
    )


Handler = Callable[[argparse.Namespace], int]

#: Modules that define commands beside their feature: each has
#: `add_commands(subparsers) -> dict[str, Handler]`.
_FEATURE_COMMANDS: tuple[str, ...] = ()

_COMMANDS: dict[str, Handler] = {
    "serve": _serve,
    "validate": _validate,
    "check": _check,
    "dev-certs": _dev_certs,
    "demo": _demo,
    "lint-envoy": _lint_envoy,
}
