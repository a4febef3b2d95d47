"""`lint-envoy --policy`: does every route whose rules read the body get it from Envoy?

A rule that reads the body (`when.body`, `when.expr` on `request.body`, `mcp_tools`, or an
`approval`, which covers the body) can only be judged when Envoy sends the body with the
Check, and Envoy decides that per route: the ext_authz filter's `with_request_body`,
switched off by a route's `check_settings.disable_request_body_buffering`. On a route
without it every such request is denied `body_unavailable` (fail closed, never a bypass),
which is easy to miss until production traffic hits it.

For each such rule this walks the inline route table as Envoy would: for sample paths of
each of the rule's path templates (and the prefixes of the routes themselves, so a narrower
route inside a template is found too) it takes the virtual host the rule's hosts select
and the first route that matches, and reports each route that would not send the body.
Routes with matchers it cannot evaluate offline (headers, query, regex it cannot compile)
are treated as possibly matching: checked, and the walk goes on to the next route.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from authz_server.core.paths import canonical_path_problem, compile_path_template
from authz_server.policy.load import load_policy
from authz_server.policy.model import Policy, Rule
from authz_server.tools.lint_envoy_walk import (
    EXT_AUTHZ_PER_ROUTE_TYPE,
    Finding,
    Hcm,
    field,
    finding,
    maps,
)

__all__ = ["BodyRule", "body_reads", "body_rules", "check_body_routes", "load_body_rules"]

_FILTER_CONFIG_TYPE = "envoy.config.route.v3.FilterConfig"
_PATH_MATCHERS = ("path", "prefix", "path_separated_prefix", "safe_regex")
# Matchers besides the path that Envoy also requires; not evaluated offline.
_CONDITIONAL = (
    "headers",
    "query_parameters",
    "runtime_fraction",
    "grpc",
    "tls_context",
    "dynamic_metadata",
    "filter_state",
    "cel_matcher",
)
# Methods that carry no body in practice: an approval on a rule limited to them reads none.
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


@dataclass(frozen=True, slots=True)
class BodyRule:
    """A rule that needs the body, and which of its parts read it."""

    rule: Rule
    reads: tuple[str, ...]


def body_reads(rule: Rule) -> tuple[str, ...]:
    """The parts of `rule` that read the request body (empty: it needs no body)."""
    reads: list[str] = []
    for condition in rule.when.stateless:
        if condition.kind == "body":
            reads.append("when.body")
        elif condition.kind == "expr" and getattr(condition, "needs_body", False):
            reads.append("when.expr on request.body")
    if rule.mcp_tools is not None:
        reads.append("mcp_tools")
    approval = any(c.kind == "approval" for c in rule.when.stateful)
    if approval and (not rule.methods or set(rule.methods) - _BODYLESS):
        reads.append("when.approval, which covers the body")
    return tuple(reads)


def body_rules(policy: Policy) -> list[BodyRule]:
    """The policy's rules that read the body, in policy order."""
    found = [BodyRule(rule, body_reads(rule)) for rule in policy.rules]
    return [b for b in found if b.reads]


def load_body_rules(path: str | Path) -> list[BodyRule]:
    """The body-reading rules of the policy file or directory at `path`; PolicyError."""
    return body_rules(load_policy(path))


class _Match(Enum):
    NO = "no"
    YES = "yes"
    MAYBE = "maybe"  # a matcher this linter cannot evaluate: the request may or may not match


def check_body_routes(
    hcm: Hcm, filter_name: str, ext_authz: Mapping[str, Any], rules: Sequence[BodyRule]
) -> Iterator[Finding]:
    """One finding per (route, rule) where a request of a body rule gets no body."""
    rc = field(hcm.config, "route_config")
    if not isinstance(rc, Mapping) or not rules:
        return  # routes over RDS: not in this file
    wrb = field(ext_authz, "with_request_body")
    filter_sends = isinstance(wrb, Mapping) and bool(field(wrb, "max_request_bytes"))
    vhosts = maps(field(rc, "virtual_hosts"))
    reported: set[tuple[int, int, str]] = set()
    for body_rule in rules:
        rule = body_rule.rule
        for v in _virtual_hosts_for(rule.hosts, vhosts):
            vhost = vhosts[v]
            routes = maps(vhost.get("routes"))
            inherited = _per_route(vhost, filter_name) or _per_route(rc, filter_name)
            for path in _sample_paths(rule.paths, routes):
                for r, route in _routes_taken(routes, path):
                    if (v, r, rule.id) in reported:
                        continue
                    config = _per_route(route, filter_name) or inherited
                    if _gets_body(route, config, filter_sends):
                        continue
                    reported.add((v, r, rule.id))
                    where = f"{hcm.path}.route_config.virtual_hosts[{v}].routes[{r}]"
                    methods = "|".join(rule.methods) or "any method"
                    found = (
                        f"{hcm.who}route {_label(route)} does not send the body, but rule "
                        f"{rule.id!r} ({rule.location}) reads it ({', '.join(body_rule.reads)})"
                        f" for {methods} {path}"
                    )
                    yield finding("body_not_sent_on_route", where, found)


def _label(route: Mapping[str, Any]) -> str:
    match = route.get("match")
    shown = ", ".join(f"{k}: {v}" for k, v in match.items()) if isinstance(match, Mapping) else ""
    name = route.get("name")
    return f"{name!r} ({shown})" if name else f"({shown})"


def _per_route(scope: Mapping[str, Any], filter_name: str) -> Mapping[str, Any] | None:
    """The ext_authz per-route config of a route, virtual host or route table; None if silent.

    A FilterConfig wrapper is unwrapped; its own `disabled: true` becomes `disabled`.
    """
    per_filter = field(scope, "typed_per_filter_config")
    config = per_filter.get(filter_name) if isinstance(per_filter, Mapping) else None
    if not isinstance(config, Mapping):
        return None
    type_name = str(config.get("@type", "")).rsplit("/", 1)[-1]
    if type_name == _FILTER_CONFIG_TYPE:
        if config.get("disabled") is True:
            return {"disabled": True}
        inner = config.get("config")
        return inner if isinstance(inner, Mapping) else None
    return config if type_name == EXT_AUTHZ_PER_ROUTE_TYPE else None


def _gets_body(
    route: Mapping[str, Any], config: Mapping[str, Any] | None, filter_sends: bool
) -> bool:
    """True unless this route forwards to ext_authz without the body.

    A route Envoy answers itself, or one with ext_authz off entirely (reported by the
    route check when it forwards), is not a body problem.
    """
    if "direct_response" in route or "redirect" in route:
        return True
    if config is None:
        return filter_sends
    if config.get("disabled") is True:
        return True
    settings = field(config, "check_settings")
    if not isinstance(settings, Mapping):
        return filter_sends
    if field(settings, "disable_request_body_buffering") is True:
        return False
    per_route = field(settings, "with_request_body")
    return filter_sends or (isinstance(per_route, Mapping) and bool(per_route))


def _sample_paths(templates: Sequence[str], routes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Canonical paths each template matches: one per wildcard shape, and every route
    literal (prefix, path) continued so that it falls inside the template."""
    literals = [_literal(route) for route in routes]
    out: list[str] = []
    for text in templates or ("/**",):
        template = compile_path_template(text)
        base = "/" + "/".join(p if p is not None else "x" for p in template.parts)
        candidates = [base, base.rstrip("/") + "/x", base + "/"]
        for literal in literals:
            if literal:
                candidates += [literal, literal + "x", literal.rstrip("/") + "/x"]
        for path in candidates:
            if (
                path not in out
                and canonical_path_problem(path) is None
                and template.match(path) is not None
            ):
                out.append(path)
    return out


def _literal(route: Mapping[str, Any]) -> str | None:
    match = route.get("match")
    if not isinstance(match, Mapping):
        return None
    for key in ("path", "prefix", "path_separated_prefix"):
        value = field(match, key)
        if isinstance(value, str) and value.startswith("/"):
            return value
    return None


def _routes_taken(
    routes: Sequence[Mapping[str, Any]], path: str
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """The routes a request for `path` may take, in order: the first certain match ends it."""
    for r, route in enumerate(routes):
        result = _matches(route.get("match"), path)
        if result is _Match.NO:
            continue
        yield r, route
        if result is _Match.YES:
            return


def _matches(match: Any, path: str) -> _Match:
    if not isinstance(match, Mapping):
        return _Match.MAYBE
    if field(match, "connect_matcher") is not None:
        return _Match.NO  # CONNECT requests only
    fold = field(match, "case_sensitive") is False
    subject = path.lower() if fold else path
    result = _path_matches(match, subject, fold)
    if result is _Match.YES and any(field(match, key) is not None for key in _CONDITIONAL):
        return _Match.MAYBE
    return result


def _path_matches(match: Mapping[str, Any], path: str, fold: bool) -> _Match:
    for key in _PATH_MATCHERS:
        value = field(match, key)
        if value is None:
            continue
        if key == "safe_regex":
            regex = field(value, "regex") if isinstance(value, Mapping) else None
            try:
                hit = re.fullmatch(str(regex), path) is not None
            except re.error:
                return _Match.MAYBE
            return _Match.YES if hit else _Match.NO
        literal = str(value).lower() if fold else str(value)
        if key == "path":
            hit = path == literal
        elif key == "prefix":
            hit = path.startswith(literal)
        else:
            hit = path == literal or path.startswith(literal + "/")
        return _Match.YES if hit else _Match.NO
    return _Match.MAYBE  # path_match_policy (URI templates) and the like


def _virtual_hosts_for(hosts: Sequence[str], vhosts: Sequence[Mapping[str, Any]]) -> list[int]:
    """The virtual hosts that may serve a rule's requests: all of them without `hosts`,
    else the one Envoy selects for each host (exact, longest suffix, longest prefix, `*`)."""
    if not hosts:
        return list(range(len(vhosts)))
    chosen: list[int] = []
    for pattern in hosts:
        sample = pattern.lower().replace("*", "x", 1)
        v = _select_vhost(sample, vhosts)
        if v is not None and v not in chosen:
            chosen.append(v)
    return chosen


def _select_vhost(host: str, vhosts: Sequence[Mapping[str, Any]]) -> int | None:
    best: tuple[int, int, int] | None = None  # (kind rank, length, index): higher wins
    for v, vhost in enumerate(vhosts):
        for domain in vhost.get("domains") or ():
            domain = str(domain).lower()
            if domain == host:
                rank = (3, len(domain))
            elif domain == "*":
                rank = (0, 0)
            elif (
                domain.startswith("*") and host.endswith(domain[1:]) and len(host) > len(domain) - 1
            ):
                rank = (2, len(domain))
            elif (
                domain.endswith("*")
                and host.startswith(domain[:-1])
                and len(host) > len(domain) - 1
            ):
                rank = (1, len(domain))
            else:
                continue
            if best is None or rank > best[:2]:
                best = (*rank, v)
    return None if best is None else best[2]
