"""`authz-server approvals|revoke|unrevoke`: the admin API from a terminal, over mutual TLS.

    authz-server approvals list|approve ID|reject ID --admin ADDR --cert PEM --key PEM --ca PEM
    authz-server revoke PATTERN --ttl DURATION --reason TEXT --admin ADDR --cert --key --ca
    authz-server unrevoke PATTERN --admin ADDR --cert --key --ca

Each flag also reads `AUTHZ_<FLAG>` (e.g. `AUTHZ_ADMIN`, `AUTHZ_CERT`). Exit 0 when the
server did it, 1 when it refused or could not be reached (its reason is printed, with the
flag to change when the connection itself failed); every command says what it did.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from authz_server.admin.address import DEFAULT_ADMIN_LISTEN
from authz_server.core.durations import parse_duration_s
from authz_server.core.errors import ConfigError

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


CONNECTION_HELP = (
    "The admin API speaks mutual TLS: give your X509-SVID (--cert, --key) and the CA that "
    "issued the server's certificate (--ca). The server's certificate must name the host "
    "of --admin (a DNS name or IP address); when it names another one, e.g. when you "
    "connect by IP address or through a tunnel, give that name with --server-name. "
    "A server run with --admin-insecure-local (demos) speaks plaintext on loopback: "
    "connect to it with --insecure-local instead of --cert/--key/--ca."
)


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.description = CONNECTION_HELP
    group = parser.add_argument_group("admin API connection")
    group.add_argument(
        "--admin",
        default=_env("--admin") or DEFAULT_ADMIN_LISTEN,
        metavar="HOST:PORT",
        help="the server's admin API (its --admin-listen)",
    )
    group.add_argument(
        "--cert", default=_env("--cert"), metavar="PEM", help="your X509-SVID (client certificate)"
    )
    group.add_argument("--key", default=_env("--key"), metavar="PEM", help="its private key")
    group.add_argument(
        "--ca",
        default=_env("--ca"),
        metavar="PEM",
        help="the CA that issued the server's certificate",
    )
    group.add_argument(
        "--server-name",
        default=_env("--server-name"),
        metavar="NAME",
        help="the DNS name (or IP address) the server's certificate carries, when it is not "
        "the host of --admin (default: the host of --admin)",
    )
    group.add_argument(
        "--insecure-local",
        action="store_true",
        default=_env("--insecure-local") in ("1", "true"),
        help="plaintext, no certificates, loopback only: for a server run with "
        "--admin-insecure-local",
    )


def add_commands(subparsers: Any) -> dict[str, Handler]:
    approvals = subparsers.add_parser("approvals", help="list, approve or reject pending actions")
    actions = approvals.add_subparsers(dest="approvals_command", required=True, metavar="ACTION")
    _connection_flags(actions.add_parser("list", help="pending and decided approvals"))
    for verb in ("approve", "reject"):
        sub = actions.add_parser(verb, help=f"{verb} one pending action")
        sub.add_argument("approval_id", metavar="ID", help="the id `approvals list` shows")
        _connection_flags(sub)

    revoke = subparsers.add_parser("revoke", help="deny every identity matching a pattern")
    revoke.add_argument(
        "pattern", metavar="PRINCIPAL_PATTERN", help="SPIFFE ID pattern, e.g. spiffe://td/agents/**"
    )
    revoke.add_argument(
        "--ttl",
        required=_env("--ttl") is None,
        default=_env("--ttl"),
        metavar="DURATION",
        help="how long the revocation lasts: 90s, 15m, 1h30m, 7d",
    )
    revoke.add_argument(
        "--reason",
        required=_env("--reason") is None,
        default=_env("--reason"),
        metavar="TEXT",
        help="why; recorded with the revocation",
    )
    _connection_flags(revoke)

    unrevoke = subparsers.add_parser("unrevoke", help="lift a revocation")
    unrevoke.add_argument(
        "pattern", metavar="PRINCIPAL_PATTERN", help="exactly the pattern given to revoke"
    )
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
