"""`authz-server check`: one described request, decided offline, printed as JSON.

Exit 0 when the decision is enforced as allow, 3 when the policy denies, 2 when the
described request is invalid (a malformed --principal, --path, --header, --body or --at),
1 when the policy does not load. The printed decision gets a `note` when the trace alone
would not say why: the request was refused before any rule was considered (the grammar
rule a principal breaks, the part of a path that is not canonical), or no rule's route
matched (with the rules that would have matched another --host or --method).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from authz_server.check.offline import (
    OfflineRequest,
    decide_offline,
    offline_policy,
    offline_snapshot,
    parse_at,
)
from authz_server.core.clock import SystemClock
from authz_server.core.decision import Decision, Reason
from authz_server.core.errors import ConfigError, IdentityError
from authz_server.core.paths import canonical_path_problem
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.resolve import IdentityResolver
from authz_server.identity.x509 import CertificateVerifier
from authz_server.policy.evaluate import Trace
from authz_server.policy.load import load_policy
from authz_server.policy.model import Policy, Rule

__all__ = ["EXIT_DENY", "EXIT_INVALID", "EXIT_OK", "explain_note", "run_check"]

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_DENY = 3

#: Denies that come from the described request itself, not from the policy: exit 2.
_INVALID_INPUT = frozenset({Reason.INVALID_SPIFFE_ID, Reason.NON_CANONICAL_PATH})
_BEFORE_RULES = "refused before any rule is considered"


def run_check(args: argparse.Namespace) -> int:
    try:
        request = _request(args)
    except ConfigError as error:
        print(f"authz-server check: {error}", file=sys.stderr)
        return EXIT_INVALID
    policy = load_policy(args.policy)  # a policy that does not load: exit 1 (`cli.main`)
    trace = Trace() if args.explain else None
    snapshot = offline_snapshot(policy)
    decision = asyncio.run(decide_offline(snapshot, request.view(), request.at, trace))
    output: dict[str, object] = {
        "decision": decision.verdict,
        "reason": decision.reason.value,
        "rule": decision.rule,
        "status": decision.http_status,
        "principal": decision.principal,
        "dry_run": decision.dry_run,
        "enforced": "allow" if decision.enforced_allow else "deny",
        "enforced_rule": decision.enforced_rule if decision.dry_run else decision.rule,
    }
    note = explain_note(policy, request, decision)
    if note is not None:
        output["note"] = note
    if trace is not None:
        output["trace"] = trace.steps
    print(json.dumps(output, indent=2))
    if decision.enforced_allow:
        return EXIT_OK
    if decision.reason in _INVALID_INPUT:
        print(f"authz-server check: invalid request: {note}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_DENY


def _request(args: argparse.Namespace) -> OfflineRequest:
    """The flags as a request; ConfigError naming the flag that is malformed."""
    headers: list[tuple[str, str]] = []
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header {item!r} must be NAME:VALUE")
        headers.append((name.strip(), value.strip()))
    body: bytes | None = None
    if args.body is not None:
        try:
            body = Path(args.body[1:]).read_bytes() if args.body[:1] == "@" else args.body.encode()
        except OSError as error:
            raise ConfigError(f"--body {args.body!r}: {error.strerror}") from error
        types = [v for n, v in headers if n.lower() == "content-type"]
        if not types or all(t.split(";")[0].strip().lower() == "application/json" for t in types):
            _require_json(body)
    try:
        at = parse_at(args.at) if args.at is not None else None
    except ValueError as error:
        raise ConfigError(f"--at {error}") from error
    return OfflineRequest(
        path=args.path,
        method=args.method,
        principal=args.principal,
        host=args.host,
        headers=tuple(headers),
        body=body,
        at=at,
    )


def _require_json(body: bytes) -> None:
    """A body sent as JSON must be JSON text; what the server additionally refuses
    (duplicate keys, NaN, ...) is left to the decision (`body_unavailable`)."""
    try:
        json.loads(body)
    except ValueError as error:
        raise ConfigError(
            f"--body is not JSON ({error}); give a content-type header to send other bytes"
        ) from None


def explain_note(policy: Policy, request: OfflineRequest, decision: Decision) -> str | None:
    """Why the request was decided as it was, when the trace cannot show it; else None."""
    view = request.view()
    reason = decision.reason
    if reason is Reason.NON_CANONICAL_PATH:
        problem = canonical_path_problem(view.path)
        return f"the path is not canonical ({problem}): {_BEFORE_RULES}"
    if decision.rule is None and reason not in (Reason.NO_MATCHING_RULE, Reason.NO_IDENTITY):
        problem = _identity_problem(policy, view, request)
        if problem is not None:
            return f"{problem}: {_BEFORE_RULES}"
    if policy.index.candidates(view.method, view.host, view.path):
        if reason is Reason.NO_IDENTITY:
            return (
                "no --principal: an anonymous caller is matched only by rules with "
                "unauthenticated: true (and deny rules that name no principals)"
            )
        return None
    return _no_route(policy, view)


def _identity_problem(policy: Policy, view: RequestView, request: OfflineRequest) -> str | None:
    """The identity check's own message, from the same resolver the server uses."""
    now = request.at if request.at is not None else SystemClock().now()
    resolver = IdentityResolver(CertificateVerifier())
    try:
        resolver.resolve(view, offline_policy(policy).identity, TrustBundles.empty(), now)
    except IdentityError as error:
        return str(error)
    return None


def _no_route(policy: Policy, view: RequestView) -> str:
    """No rule matches host, method and path: say so, and which rules nearly did."""
    path = view.path + (f"?{view.query}" if view.query else "")
    note = f"no rule matches host {view.host!r}, method {view.method}, path {path}"
    hosts: dict[str, list[str]] = {}
    for rule in policy.rules:
        for host in rule.hosts:
            concrete = host.replace("*.", "x.", 1) if host.startswith("*.") else host
            if _matches(policy, rule, view.method, concrete, view.path):
                hosts.setdefault(rule.id, []).append(host)
    if hosts:
        named = "; ".join(f"{rule} (hosts {', '.join(h)})" for rule, h in sorted(hosts.items()))
        if view.host:
            note += f"; rules that match another host: {named}"
        else:
            note += (
                "; rules with hosts: never match an empty --host (the default), "
                f"and these would match with theirs: {named}"
            )
    methods: dict[str, list[str]] = {}
    for rule in policy.rules:
        for method in rule.methods:
            if method != view.method and _matches(policy, rule, method, view.host, view.path):
                methods.setdefault(rule.id, []).append(method)
    if methods:
        named = "; ".join(f"{rule} ({', '.join(m)})" for rule, m in sorted(methods.items()))
        note += f"; rules that match this path with another --method: {named}"
    return note


def _matches(policy: Policy, rule: Rule, method: str, host: str, path: str) -> bool:
    return any(match.rule is rule for match in policy.index.candidates(method, host, path))
