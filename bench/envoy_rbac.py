"""The generated policy as Envoy RBAC policies: the "equivalent check" of
docs/performance.md#method.

One RBAC policy per rule, deny rules in a DENY filter and allow rules in an ALLOW filter
after it, which is the rule of docs/policy/reference.md#evaluation, "deny wins, else allow, else
deny" for Envoy:

- principals → `authenticated.principal_name`: exact, or an RE2 regex where `*` and
  `{name}` are one segment and a trailing `/**` any rest; no principals → any peer
  (the front listener requires a verified client certificate, so any peer is verified);
- hosts → `:authority` regexes (port allowed, as authz-server ignores it), `*.suffix`
  one or more labels before the suffix;
- methods → `:method` exact; paths → `url_path` regexes with docs/policy/reference.md#rule-fields
template rules
  (`/a/**` matches `/a`, `/a/`, `/a/b/c`);
- `when.headers` `present`/`equals` → header matchers.

Not expressible, so the RBAC side checks less than authz-server does: a capture shared
by path and principal (`{tenant}`) is two independent wildcards, and `when.expr` (CEL
text; RBAC wants a parsed AST) is dropped. Envoy also checks the certificate chain only
at the handshake, with no per-request leaf checks of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bench.policies import RuleSpec

__all__ = ["path_regex", "principal_matcher", "rbac_policies"]

_SEGMENT = "[^/]+"


def _is_wild(part: str) -> bool:
    return part == "*" or (part.startswith("{") and part.endswith("}"))


def path_regex(template: str) -> str:
    """An RE2 full-match regex for a docs/policy/reference.md#rule-fields path template."""
    parts = template.split("/")[1:]
    rest = parts[-1:] == ["**"]
    if rest:
        parts = parts[:-1]
    body = "".join("/" + (_SEGMENT if _is_wild(p) else re.escape(p)) for p in parts)
    if rest:
        return f"{body}(/.*)?" if body else "/.*"
    return body or "/"


def principal_matcher(pattern: str) -> dict[str, Any]:
    """An RBAC `principal_name` StringMatcher for a SPIFFE ID pattern."""
    scheme, _, rest = pattern.partition("://")
    domain, _, path = rest.partition("/")
    parts = path.split("/") if path else []
    if not any(_is_wild(p) or p == "**" for p in parts):
        return {"exact": pattern}
    tail = parts[-1:] == ["**"]
    if tail:
        parts = parts[:-1]
    regex = re.escape(f"{scheme}://{domain}")
    regex += "".join("/" + (_SEGMENT if _is_wild(p) else re.escape(p)) for p in parts)
    if tail:
        regex += "(/.+)?"
    return {"safe_regex": {"regex": regex}}


def _host_regex(host: str) -> str:
    if host.startswith("*."):
        return r"([^.:]+\.)+" + re.escape(host[2:]) + "(:[0-9]+)?"
    return re.escape(host) + "(:[0-9]+)?"


def _header(name: str, matcher: dict[str, Any]) -> dict[str, Any]:
    return {"header": {"name": name, **matcher}}


def _any_of(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return rules[0] if len(rules) == 1 else {"or_rules": {"rules": rules}}


def _permission(rule: RuleSpec) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if rule.hosts:
        parts.append(
            _any_of(
                [
                    _header(
                        ":authority", {"string_match": {"safe_regex": {"regex": _host_regex(h)}}}
                    )
                    for h in rule.hosts
                ]
            )
        )
    if rule.methods:
        parts.append(
            _any_of([_header(":method", {"string_match": {"exact": m}}) for m in rule.methods])
        )
    if rule.paths:
        parts.append(
            _any_of(
                [
                    {"url_path": {"path": {"safe_regex": {"regex": path_regex(p)}}}}
                    for p in rule.paths
                ]
            )
        )
    for name, condition in dict(rule.when.get("headers", {})).items():
        if "equals" in condition:
            parts.append(_header(name, {"string_match": {"exact": str(condition["equals"])}}))
        elif condition.get("present"):
            parts.append(_header(name, {"present_match": True}))
    if not parts:
        return {"any": True}
    return parts[0] if len(parts) == 1 else {"and_rules": {"rules": parts}}


def _policy(rule: RuleSpec) -> dict[str, Any]:
    principals: list[dict[str, Any]]
    if rule.principals is None:
        principals = [{"any": True}]
    else:
        principals = [
            {"authenticated": {"principal_name": principal_matcher(p)}} for p in rule.principals
        ]
    return {"permissions": [_permission(rule)], "principals": principals}


def rbac_policies(rules: Iterable[RuleSpec]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(deny policies, allow policies), keyed by rule id."""
    deny: dict[str, Any] = {}
    allow: dict[str, Any] = {}
    for rule in rules:
        (deny if rule.effect == "deny" else allow)[rule.id] = _policy(rule)
    return deny, allow
