"""`authz-server approvals|revoke|unrevoke`: the admin API from a terminal, over mutual TLS.

    authz-server approvals list|approve ID|reject ID --admin ADDR --cert PEM --key PEM --ca PEM
    authz-server revoke PATTERN --ttl DURATION --reason TEXT --admin ADDR --cert --key --ca
    authz-server unrevoke PATTERN --admin ADDR --cert --key --ca

Each flag also reads `AUTHZ_<FLAG>` (e.g. `AUTHZ_ADMIN`, `AUTHZ_CERT`). Exit 0 when the
server did it, 1 when it refused or could not be reached (its reason is printed); every
command says what it did.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from authz_server.admin.address import DEFAULT_ADMIN_LISTEN
from authz_server.durations import parse_duration_s
from authz_server.errors import ConfigError

__all__ = ["add_commands", "parse_duration"]

Handler = Callable[[argparse.Namespace], int]


def parse_duration(text: str) -> int:
    """`90s`, `15m`, `1h30m`, `7d` → seconds (the policy's syntax); ConfigError otherwise."""
    try:
        return parse_duration_s(text)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _env(flag: str) -> str | None:
    return os.environ.get("AUTHZ_" + flag.lstrip("-").upper().replace("-", "_"))


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("admin API connection")
    group.add_argument("--admin", default=_env("--admin") or DEFAULT_ADMIN_LISTEN, metavar="ADDR")
    group.add_argument("--cert", default=_env("--cert"), metavar="PEM", help="client X509-SVID")
    group.add_argument("--key", default=_env("--key"), metavar="PEM", help="its private key")
    group.add_argument("--ca", default=_env("--ca"), metavar="PEM", help="CA of the server")
    group.add_argument(
        "--server-name",
        default=_env("--server-name"),
        metavar="NAME",
        help="DNS name to expect in the server certificate (default: the ADDR host)",
    )
    group.add_argument(
        "--insecure-local",
        action="store_true",
        default=_env("--insecure-local") in ("1", "true"),
        help="plaintext, loopback only: for a server run with --admin-insecure-local",
    )


def add_commands(subparsers: Any) -> dict[str, Handler]:
    approvals = subparsers.add_parser("approvals", help="list, approve or reject pending actions")
    actions = approvals.add_subparsers(dest="approvals_command", required=True, metavar="ACTION")
    _connection_flags(actions.add_parser("list", help="pending and decided approvals"))
    for verb in ("approve", "reject"):
        sub = actions.add_parser(verb, help=f"{verb} one pending action")
        sub.add_argument("approval_id", metavar="ID")
        _connection_flags(sub)

    revoke = subparsers.add_parser("revoke", help="deny every identity matching a pattern")
    revoke.add_argument("pattern", metavar="PRINCIPAL_PATTERN")
    revoke.add_argument("--ttl", required=_env("--ttl") is None, default=_env("--ttl"))
    revoke.add_argument("--reason", required=_env("--reason") is None, default=_env("--reason"))
    _connection_flags(revoke)

    unrevoke = subparsers.add_parser("unrevoke", help="lift a revocation")
    unrevoke.add_argument("pattern", metavar="PRINCIPAL_PATTERN")
    _connection_flags(unrevoke)
    return {"approvals": _approvals, "revoke": _revoke, "unrevoke": _unrevoke}


# grpc and the generated messages load only when one of these commands runs.
def _approvals(args: argparse.Namespace) -> int:
    from authz_server.admin import client

    return client.approvals(args)


def _revoke(args: argparse.Namespace) -> int:
    args.ttl_seconds = parse_duration(args.ttl)  # a bad duration fails before connecting
    from authz_server.admin import client

    return client.revoke(args)


def _unrevoke(args: argparse.Namespace) -> int:
    from authz_server.admin import client

    return client.unrevoke(args)
