"""`authz-server` commands: argparse → Settings → run.

Every flag of every command also reads an `AUTHZ_*` environment variable (`--trust-bundle`
→ `AUTHZ_TRUST_BUNDLE`); a flag on the command line wins. Repeatable flags take a
comma-separated list from the environment, switches take 1/true/yes/on or 0/false/no/off;
a value the flag would refuse is a usage error naming the variable (`env.py`). The
`serve` command's flags and settings are `serve.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from authz_server import __version__
from authz_server.admin import cli as admin_cli
from authz_server.cli import audit as audit_cli
from authz_server.cli.env import apply_environment, environment_error
from authz_server.cli.parser import CommandParser, environment_epilog, walk_parsers
from authz_server.cli.serve import add_serve, run_serve
from authz_server.core.errors import AuthzError, ConfigError, PolicyError
from authz_server.policy.load import load_policy
from authz_server.tools import envoy_render, lint_envoy, policy_tests

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DENY = 3


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="authz-server",
        description="Per-action authorization for Envoy, keyed on SPIFFE workload identity.",
        epilog="`authz-server COMMAND --help` lists a command's flags and their defaults.",
    )
    parser.add_argument("--version", action="version", version=f"authz-server {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_serve(commands)

    validate = commands.add_parser("validate", help="check a policy; exit 1 listing every error")
    validate.add_argument("path", help="policy file, or directory of *.yaml/*.yml files")

    _add_check(commands)

    devcerts = commands.add_parser("dev-certs", help="mint a local CA and X509-SVIDs")
    devcerts.add_argument("--out", required=True, metavar="DIR", help="directory to write to")
    devcerts.add_argument(
        "--trust-domain", required=True, metavar="TD", help="trust domain of the CA and SVIDs"
    )
    devcerts.add_argument(
        "--id",
        action="append",
        default=[],
        metavar="NAME=SPIFFE_ID",
        required=True,
        help="one SVID: NAME.pem and NAME.key for SPIFFE_ID (repeatable)",
    )
    devcerts.add_argument(
        "--dns",
        action="append",
        default=[],
        metavar="NAME=HOST",
        help="add a DNS name to the SVID NAME, for a server's certificate (repeatable)",
    )
    devcerts.add_argument(
        "--force",
        action="store_true",
        help="mint a new CA even when DIR holds one (by default its ca.pem/ca.key sign the "
        "new SVIDs, so certificates it issued before keep verifying)",
    )

    demo = commands.add_parser("demo", help="real Envoy + authz-server + backend on loopback")
    demo.add_argument(
        "--workdir", default=".demo", metavar="DIR", help="certificates, configs and logs"
    )
    demo.add_argument("--once", action="store_true", help="run the tour and exit")

    lint = commands.add_parser("lint-envoy", help="check an Envoy config for required settings")
    lint_envoy.add_arguments(lint)

    # Commands defined beside their feature.
    _COMMANDS.update(admin_cli.add_commands(commands))
    _COMMANDS.update(audit_cli.add_commands(commands))
    _COMMANDS.update(envoy_render.add_commands(commands))
    _COMMANDS.update(policy_tests.add_commands(commands))
    for command in walk_parsers(parser):
        apply_environment(command)
        env_help = environment_epilog(command)
        if env_help is not None:
            command.epilog = f"{command.epilog}\n\n{env_help}" if command.epilog else env_help
    return parser


_CHECK_EXIT_CODES = """\
Exit 0 when the decision is enforced as allow, 3 when the policy denies, 2 when the \
described request is invalid (a malformed --principal, --path, --header, --body or --at: \
the decision printed says what the server would answer), 1 when the policy does not load."""


def _add_check(commands: Any) -> None:
    check = commands.add_parser(
        "check",
        help="evaluate one described request offline",
        description="Decide one described request against a policy, without a server, and "
        "print the decision as JSON.",
        epilog=_CHECK_EXIT_CODES,
    )
    check.add_argument("--policy", required=True, help="policy file or directory")
    check.add_argument(
        "--principal",
        default="",
        metavar="SPIFFE_ID",
        help="the caller, taken as verified; empty for an anonymous caller",
    )
    check.add_argument("--method", required=True, help="HTTP method")
    check.add_argument("--path", required=True, help="path, optionally with ?query")
    check.add_argument(
        "--host", default="", help="the request's host; rules with hosts: never match ''"
    )
    check.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a request header (repeatable; repeated names are joined with ',' as Envoy does)",
    )
    check.add_argument(
        "--body",
        default=None,
        metavar="JSON|@FILE",
        help="request body: JSON text, or @FILE to read it (sent as application/json)",
    )
    check.add_argument(
        "--at",
        default=None,
        metavar="ISO8601",
        help="the time to decide at, with a UTC offset (default: now)",
    )
    check.add_argument(
        "--explain", action="store_true", help="add the trace: each rule considered and why"
    )


#: The status a shell reports for a tool killed by SIGPIPE (128 + 13), which is how `cat`,
#: `grep` or `yes` end when the reader of their output goes away (`... | head -1`): quiet,
#: yet a failure under `set -o pipefail`. Python ignores SIGPIPE, so it is returned instead.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status; a closed stdout ends it quietly."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        with contextlib.suppress(OSError, ValueError):  # nothing more reaches the pipe
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _stdout_gone() -> bool:
    """Whether stdout is a pipe or socket nobody reads any more (not some other EPIPE)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    bad_environment = environment_error(args)
    if bad_environment is not None:
        print(bad_environment, file=sys.stderr)
        return EXIT_USAGE
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
    return run_serve(args)


def _validate(args: argparse.Namespace) -> int:
    policy = load_policy(args.path)
    print(f"ok: {len(policy.rules)} rules, version {policy.version[:12]}")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from authz_server.cli.check import run_check

    return run_check(args)


def _dev_certs(args: argparse.Namespace) -> int:
    from authz_server.tools.devcerts import parse_id_spec, write_dev_certs

    ids = dict(parse_id_spec(spec) for spec in args.id)
    dns: dict[str, list[str]] = {}
    for spec in args.dns:
        name, sep, host = spec.partition("=")
        if not sep or name not in ids:
            raise ConfigError(f"--dns {spec!r} must be NAME=HOST for a NAME given with --id")
        dns.setdefault(name, []).append(host)
    written = write_dev_certs(Path(args.out), args.trust_domain, ids, dns, force=args.force)
    ca_file = written.paths["ca.pem"]
    until = written.authority.certificate.not_valid_after_utc.date().isoformat()
    print(
        {
            "new": f"minted a new CA: {ca_file} (until {until})",
            "reused": f"reused the CA in {ca_file} (until {until}); --force mints a new one",
            "replaced": f"minted a new CA in place of the old one (--force): {ca_file}; "
            "certificates the old CA signed no longer verify against it",
        }[written.ca]
    )
    for name, path in written.paths.items():
        print(f"{name}: {path}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from authz_server.tools.demo.tour import run_demo

    return run_demo(Path(args.workdir), once=args.once)


def _lint_envoy(args: argparse.Namespace) -> int:
    return lint_envoy.run_lint_envoy(
        args.file,
        body_rules=args.body_rules,
        behind_trusted_proxy=args.behind_trusted_proxy,
        policy=args.policy,
    )


Handler = Callable[[argparse.Namespace], int]

_COMMANDS: dict[str, Handler] = {
    "serve": _serve,
    "validate": _validate,
    "check": _check,
    "dev-certs": _dev_certs,
    "demo": _demo,
    "lint-envoy": _lint_envoy,
}
