"""`authz-server lint-envoy`: the Envoy settings this server relies on.

The server refuses what it cannot judge, but some guarantees live in Envoy alone: that every
request is sent to Check at all, that a timeout is a deny, that the path Envoy routes is the
path the server judged, that a client cannot hand in its own identity. This module walks every
inbound listener → HttpConnectionManager → ext_authz filter and routes, and reports each
setting that is missing or unsafe.

Each code's severity, reason and fix live in one table, `lint_envoy_codes.CODES`; reading
the config (either field spelling, typed configs, the HTTP connection managers) is
`lint_envoy_walk.py`, the routes that must send the body `lint_envoy_policy.py`. Errors
and warnings both make the command exit 1. Listeners with `traffic_direction: OUTBOUND`
(a sidecar's egress) are skipped; routes loaded over RDS cannot be checked offline.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from authz_server.core.errors import ConfigError, PolicyError
from authz_server.tools.lint_envoy_codes import CODES, EXT_AUTHZ_TYPE, HEALTH_PATHS
from authz_server.tools.lint_envoy_policy import BodyRule, check_body_routes, load_body_rules
from authz_server.tools.lint_envoy_walk import (
    EXT_AUTHZ_PER_ROUTE_TYPE,
    ROUTER_TYPE,
    Finding,
    Hcm,
    field,
    finding,
    http_connection_managers,
    load_envoy_file,
    maps,
    typed,
)

__all__ = ["CODES", "Finding", "lint_envoy_config", "lint_envoy_file", "main", "run_lint_envoy"]

_ROUTER_NAME = "envoy.filters.http.router"
_SAFE_ESCAPED_SLASHES = {"REJECT_REQUEST", "UNESCAPE_AND_REDIRECT"}
_FORWARDING_XFCC = {"APPEND_FORWARD", "FORWARD_ONLY", "ALWAYS_FORWARD_ONLY"}
_STATUS_NAMES = {
    "ServiceUnavailable": 503,
    "InternalServerError": 500,
    "BadGateway": 502,
    "GatewayTimeout": 504,
    "Forbidden": 403,
    "Unauthorized": 401,
}


def lint_envoy_config(
    config: Mapping[str, Any],
    *,
    body_rules: bool = False,
    behind_trusted_proxy: bool = False,
    policy_body_rules: Sequence[BodyRule] = (),
) -> list[Finding]:
    """Every finding in one parsed Envoy config (bootstrap or LDS resources).

    `body_rules`: the policy has body conditions, so a whole-body limit is required.
    `behind_trusted_proxy`: a proxy in front sets XFCC, so forwarding it is intended.
    `policy_body_rules`: the policy's rules that read the body (`lint_envoy_policy`);
    each route they reach must send it. Implies `body_rules` when not empty.
    """
    hcms = http_connection_managers(config)
    if not hcms:
        where = "static_resources.listeners"
        return [finding("no_http_connection_manager", where, "no inbound HTTP listener")]
    findings: list[Finding] = []
    for hcm in hcms:
        findings += _check_hcm(hcm, behind_trusted_proxy)
        findings += _check_filters(hcm, body_rules or bool(policy_body_rules), policy_body_rules)
    return findings


def _check_hcm(hcm: Hcm, behind_trusted_proxy: bool) -> Iterator[Finding]:
    c, at, who = hcm.config, hcm.path, hcm.who
    if field(c, "normalize_path") is not True:
        yield finding("normalize_path", f"{at}.normalize_path", f"{who}normalize_path is not true")
    if field(c, "merge_slashes") is not True:
        yield finding("merge_slashes", f"{at}.merge_slashes", f"{who}merge_slashes is not true")
    action = field(c, "path_with_escaped_slashes_action") or "unset (KEEP_UNCHANGED)"
    if action not in _SAFE_ESCAPED_SLASHES:
        where = f"{at}.path_with_escaped_slashes_action"
        yield finding(
            "escaped_slashes_action", where, f"{who}path_with_escaped_slashes_action is {action}"
        )
    xfcc = field(c, "forward_client_cert_details") or "SANITIZE"
    if xfcc in _FORWARDING_XFCC and not behind_trusted_proxy:
        where = f"{at}.forward_client_cert_details"
        yield finding("xfcc_not_sanitised", where, f"{who}forward_client_cert_details is {xfcc}")


def _check_filters(
    hcm: Hcm, body_rules: bool, policy_body_rules: Sequence[BodyRule] = ()
) -> Iterator[Finding]:
    at = f"{hcm.path}.http_filters"
    filters = [
        (i, flt, *typed(flt)) for i, flt in enumerate(maps(field(hcm.config, "http_filters")))
    ]
    ext_authz = [(i, flt, body) for i, flt, t, body in filters if t == EXT_AUTHZ_TYPE]
    routers = [i for i, flt, t, _ in filters if t == ROUTER_TYPE or flt.get("name") == _ROUTER_NAME]
    if not ext_authz:
        yield finding("ext_authz_missing", at, f"{hcm.who}no ext_authz filter")
        return
    for i, flt, body in ext_authz:
        if routers and i > routers[0]:
            yield finding(
                "ext_authz_after_router",
                f"{at}[{i}]",
                f"{hcm.who}ext_authz is http_filters[{i}], after the router",
            )
        yield from _check_ext_authz(f"{at}[{i}]", hcm.who, flt, body, body_rules)
        yield from _check_routes(hcm, str(flt.get("name", "")))
        if policy_body_rules:
            yield from check_body_routes(hcm, str(flt.get("name", "")), body, policy_body_rules)


def _check_ext_authz(
    at: str, who: str, flt: Mapping[str, Any], c: Mapping[str, Any], body_rules: bool
) -> Iterator[Finding]:
    deny_flag = field(c, "deny_at_disable")
    denies = isinstance(deny_flag, Mapping) and field(deny_flag, "default_value") is True
    partly = _fraction(field(c, "filter_enabled")) < 1 or bool(field(c, "filter_enabled_metadata"))
    if flt.get("disabled") is True or (partly and not denies):
        yield finding("ext_authz_disabled", at, f"{who}the ext_authz filter is not always on")
    at = f"{at}.typed_config"
    grpc = field(c, "grpc_service")
    if not isinstance(grpc, Mapping):
        yield finding("ext_authz_not_grpc", f"{at}.grpc_service", f"{who}no grpc_service")
    elif (timeout := field(grpc, "timeout")) is None or _seconds(timeout) == 0:
        where = f"{at}.grpc_service.timeout"
        yield finding("grpc_timeout", where, f"{who}grpc_service.timeout is {timeout or 'unset'}")
    if field(c, "failure_mode_allow") is True:
        where = f"{at}.failure_mode_allow"
        yield finding("failure_mode_allow", where, f"{who}failure_mode_allow is true")
    if field(c, "include_peer_certificate") is not True:
        where = f"{at}.include_peer_certificate"
        yield finding(
            "include_peer_certificate", where, f"{who}include_peer_certificate is not true"
        )
    version = field(c, "transport_api_version")
    if version != "V3":
        where = f"{at}.transport_api_version"
        yield finding(
            "transport_api_version", where, f"{who}transport_api_version is {version or 'unset'}"
        )
    raw = field(c, "status_on_error")
    status = _status_code(raw)
    if status is None or status < 500:
        shown = json.dumps(raw) if raw else "unset (403)"
        where = f"{at}.status_on_error"
        yield finding("status_on_error", where, f"{who}status_on_error is {shown}")
    wrb = field(c, "with_request_body")
    if body_rules and (not isinstance(wrb, Mapping) or not field(wrb, "max_request_bytes")):
        where = f"{at}.with_request_body"
        yield finding(
            "body_limit", where, f"{who}the policy has body conditions but no body is sent"
        )
    elif body_rules and field(wrb, "allow_partial_message") is not False:
        where = f"{at}.with_request_body.allow_partial_message"
        yield finding("body_limit", where, f"{who}allow_partial_message is not false")


def _check_routes(hcm: Hcm, filter_name: str) -> Iterator[Finding]:
    """Per-route disables: fine where Envoy answers itself or on exact health paths."""
    rc = field(hcm.config, "route_config")
    if not isinstance(rc, Mapping) or not filter_name:
        return  # routes come over RDS: not in this file
    for v, vhost in enumerate(maps(field(rc, "virtual_hosts"))):
        vhost_off = _disables(vhost, filter_name)
        for r, route in enumerate(maps(vhost.get("routes"))):
            route_off = _disables(route, filter_name)
            if not (vhost_off if route_off is None else route_off):
                continue
            match = route.get("match")
            match = match if isinstance(match, Mapping) else {}
            if (
                "direct_response" in route
                or "redirect" in route
                or match.get("path") in HEALTH_PATHS
            ):
                continue
            where = f"{hcm.path}.route_config.virtual_hosts[{v}].routes[{r}]"
            label = route.get("name") or json.dumps(dict(match))
            yield finding("ext_authz_disabled_on_route", where, f"{hcm.who}route {label}")


def _disables(scope: Mapping[str, Any], filter_name: str) -> bool | None:
    """True/False when `scope` (a route or virtual host) turns ext_authz off/on; None if silent."""
    per_filter = field(scope, "typed_per_filter_config")
    cfg = per_filter.get(filter_name) if isinstance(per_filter, Mapping) else None
    if not isinstance(cfg, Mapping):
        return None
    type_name = str(cfg.get("@type", "")).rsplit("/", 1)[-1]
    if type_name == "envoy.config.route.v3.FilterConfig":
        inner = cfg.get("config")
        if cfg.get("disabled") is True:
            return True
        return _disables({"typed_per_filter_config": {filter_name: inner}}, filter_name) or False
    if type_name == EXT_AUTHZ_PER_ROUTE_TYPE:
        return cfg.get("disabled") is True
    return None


def _fraction(value: Any) -> float:
    """The share of requests a RuntimeFractionalPercent enables (1.0 when unset)."""
    if not isinstance(value, Mapping):
        return 1.0
    default = field(value, "default_value")
    if not isinstance(default, Mapping):
        return 1.0
    per = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
    denominator = per.get(str(default.get("denominator", "HUNDRED")), 100)
    return float(default.get("numerator", 0)) / denominator


def _seconds(value: Any) -> float | None:
    """A Duration as seconds: `0.5s` or {seconds, nanos}; None when unparseable (a template)."""
    if isinstance(value, Mapping):
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    m = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(value).strip())
    return float(m.group(1)) if m else None


def _status_code(value: Any) -> int | None:
    code = field(value, "code") if isinstance(value, Mapping) else None
    if isinstance(code, int):
        return code
    if isinstance(code, str):
        return int(code) if code.isdigit() else _STATUS_NAMES.get(code, 0)
    return None


def lint_envoy_file(
    path: str | Path, *, body_rules: bool = False, behind_trusted_proxy: bool = False
) -> list[Finding]:
    """Findings for one file; raises ConfigError when it cannot be read or parsed."""
    return lint_envoy_config(
        load_envoy_file(path), body_rules=body_rules, behind_trusted_proxy=behind_trusted_proxy
    )


def run_lint_envoy(
    path: str,
    out: TextIO | None = None,
    *,
    body_rules: bool = False,
    behind_trusted_proxy: bool = False,
    policy: str | None = None,
) -> int:
    """Print every finding with why and how to fix; 0 clean, 1 findings, 2 unreadable.

    With `policy`, also check that every route its body-reading rules reach sends the body.
    """
    out = out or sys.stdout  # resolved per call, so a redirected stdout is honoured
    try:
        config = load_envoy_file(path)
        rules = load_body_rules(policy) if policy is not None else []
    except ConfigError as exc:
        print(f"error: {exc}", file=out)
        return 2
    except PolicyError as exc:
        print(f"error: policy {policy!r} rejected ({len(exc.issues)} error(s)):", file=out)
        for issue in exc.issues:
            print(f"  {issue}", file=out)
        return 2
    findings = lint_envoy_config(
        config,
        body_rules=body_rules,
        behind_trusted_proxy=behind_trusted_proxy,
        policy_body_rules=rules,
    )
    if not findings:
        n = len(http_connection_managers(config))
        checked = f"{n} HTTP connection manager{'s' * (n != 1)} checked"
        if policy is not None:
            checked += f"; {len(rules)} rule(s) of {policy} read the body, every route sends it"
        print(f"{path}: ok ({checked})", file=out)
        return 0
    errors = sum(f.severity == "error" for f in findings)
    print(f"{path}: {len(findings)} finding(s), {errors} error(s)", file=out)
    for f in findings:
        print(f"\n{f.severity} [{f.code}] at {f.path_in_config}", file=out)
        print(f"  {f.message}", file=out)
        print(f"  fix: {f.fix}", file=out)
    return 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `lint-envoy`, shared by `main` and the project CLI."""
    parser.add_argument("file", help="Envoy bootstrap or LDS file, YAML or JSON")
    parser.add_argument(
        "--body-rules",
        action="store_true",
        help="the policy has body conditions: require a whole-body limit",
    )
    parser.add_argument(
        "--behind-trusted-proxy",
        action="store_true",
        help="this Envoy sits behind a proxy that sets XFCC: allow forwarding it",
    )
    parser.add_argument(
        "--policy",
        metavar="POLICY",
        help="policy file or directory: check that every route its body-reading rules "
        "(when.body, when.expr on request.body, mcp_tools, approval) reach sends the body "
        "(implies --body-rules)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="authz-server lint-envoy", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_lint_envoy(
        args.file,
        body_rules=args.body_rules,
        behind_trusted_proxy=args.behind_trusted_proxy,
        policy=args.policy,
    )


if __name__ == "__main__":
    sys.exit(main())
