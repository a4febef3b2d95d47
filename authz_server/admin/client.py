"""The admin API client behind `authz-server approvals|revoke|unrevoke` (mutual TLS, sync grpc).

Loaded only when one of those commands runs. Each function prints what the server did and
returns the exit code: 0 done, 1 refused (the server's status and reason on stderr) or not
connected (grpc's reason, and which flag to change when the cause is recognisable).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from authz_server.admin import authz_admin_pb2 as pb
from authz_server.admin.address import is_loopback, listen_host
from authz_server.admin.service import SERVICE_NAME
from authz_server.core.errors import ConfigError

__all__ = ["approvals", "revoke", "unrevoke"]

EXIT_OK = 0
EXIT_REFUSED = 1
_TIMEOUT_S = 10.0

_Resp = TypeVar("_Resp", bound=Message)
Handler = Callable[[argparse.Namespace], int]


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.insecure_local:
        if not is_loopback(listen_host(args.admin)):
            raise ConfigError(f"--insecure-local talks to loopback only, not {args.admin!r}")
        return grpc.insecure_channel(args.admin)
    missing = [flag for flag in ("cert", "key", "ca") if not getattr(args, flag)]
    if missing:
        names = ", ".join(f"--{m} (AUTHZ_{m.upper()})" for m in missing)
        raise ConfigError(f"mutual TLS to the admin API needs {names}")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(args.ca),
        private_key=_read(args.key),
        certificate_chain=_read(args.cert),
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.admin, credentials, options=options)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{path!r}: cannot read: {error.strerror or error}") from None


def _call(args: argparse.Namespace, method: str, request: Message, reply: type[_Resp]) -> _Resp:
    """One unary call; `_Refused` carries the server's reason."""
    with _channel(args) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE_NAME}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply.FromString,
        )
        try:
            response: _Resp = stub(request, timeout=_TIMEOUT_S)
        except grpc.RpcError as error:
            raise _Refused(error) from None
        return response


class _Refused(Exception):
    def __init__(self, error: grpc.RpcError) -> None:
        self.code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        self.details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
        super().__init__(f"{self.code.name}: {self.details}")

    @property
    def not_connected(self) -> bool:
        """grpc never reached the service: the server did not refuse anything."""
        return self.code is grpc.StatusCode.UNAVAILABLE and "failed to connect" in self.details


def _refusable(run: Callable[[argparse.Namespace], int]) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except _Refused as refused:
            if not refused.not_connected:
                print(f"refused: {refused}", file=sys.stderr)
                return EXIT_REFUSED
            print(f"cannot connect to the admin API at {args.admin}: {refused}", file=sys.stderr)
            hint = connection_hint(args, refused.details)
            if hint is not None:
                print(f"  {hint}", file=sys.stderr)
            return EXIT_REFUSED

    return handler


def connection_hint(args: argparse.Namespace, details: str) -> str | None:
    """What to change when grpc's connection error has a recognisable cause."""
    host = args.server_name or listen_host(args.admin)
    if "Hostname Verification" in details or "No match found for server name" in details:
        if args.server_name:
            return (
                f"the server's certificate does not name {host!r} (--server-name): give a "
                "DNS name or IP address the certificate carries"
            )
        return (
            f"the server's certificate does not name {host!r}: connect by a name it carries, "
            "or give that name with --server-name NAME"
        )
    if "WRONG_VERSION_NUMBER" in details and not args.insecure_local:
        return (
            f"{args.admin} does not speak TLS: a server run with --admin-insecure-local "
            "serves plaintext on loopback; connect to it with --insecure-local"
        )
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            f"the server's certificate does not chain to --ca {args.ca}: give the CA that issued it"
        )
    if args.insecure_local and ("Socket closed" in details or "Connection reset" in details):
        return (
            f"{args.admin} closed the plaintext connection: it probably requires mutual TLS; "
            "drop --insecure-local and give --cert, --key and --ca"
        )
    if "Connection refused" in details:
        return f"nothing listens on {args.admin}: is the server's --admin-listen that address?"
    return None


def _when(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _action(approval: pb.Approval) -> str:
    query = f"?{approval.query}" if approval.query else ""
    return f"{approval.method} {approval.host}{approval.path}{query}"


@_refusable
def approvals(args: argparse.Namespace) -> int:
    if args.approvals_command == "list":
        listed = _call(args, "ListApprovals", pb.ListApprovalsRequest(), pb.ListApprovalsResponse)
        if not listed.approvals:
            print("no approvals pending")
        for approval in listed.approvals:
            print(f"{approval.approval_id}  {approval.status}  rule {approval.rule_id}")
            print(f"  principal  {approval.principal}")
            print(f"  action     {_action(approval)}")
            print(f"  body       {approval.body_digest or '(none)'}")
            print(
                f"  created    {_when(approval.created_at)}   expires {_when(approval.expires_at)}"
            )
            if approval.decided_by:
                print(
                    f"  {approval.status} by {approval.decided_by} at {_when(approval.decided_at)}"
                )
        return EXIT_OK
    method = "Approve" if args.approvals_command == "approve" else "Reject"
    request = pb.DecideRequest(approval_id=args.approval_id)
    approval = _call(args, method, request, pb.Approval)
    print(f"{approval.status} {approval.approval_id}")
    print(f"  {_action(approval)} by {approval.principal} (rule {approval.rule_id})")
    if approval.status == "approved":
        print(f"  valid for one use until {_when(approval.expires_at)}")
    else:
        print(f"  retries are denied until {_when(approval.expires_at)}")
    return EXIT_OK


@_refusable
def revoke(args: argparse.Namespace) -> int:
    request = pb.RevokeRequest(
        pattern=args.pattern, ttl_seconds=args.ttl_seconds, reason=args.reason
    )
    revocation = _call(args, "Revoke", request, pb.Revocation)
    print(f"revoked {revocation.pattern} until {_when(revocation.expires_at)}")
    print(f"  reason: {revocation.reason} (by {revocation.revoked_by})")
    return EXIT_OK


@_refusable
def unrevoke(args: argparse.Namespace) -> int:
    result = _call(args, "Unrevoke", pb.UnrevokeRequest(pattern=args.pattern), pb.UnrevokeResponse)
    if not result.removed:
        print(f"no revocation for exactly {args.pattern}: nothing changed", file=sys.stderr)
        return EXIT_REFUSED
    print(f"unrevoked {args.pattern}")
    return EXIT_OK
