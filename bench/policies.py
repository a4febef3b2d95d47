"""Generated policies of any size that every benchmark request mix agrees with.

Each policy holds the same few *core* rules, which the request mix of `workload.py`
hits (an exact-host allow, a capture-bound principal, a wildcard host, an enforced deny,
a path every identity may read), plus *filler* rules spread over many hosts, path
prefixes and principal patterns (exact, `*`, `/**`; a tenth of them deny rules). The
filler never matches a benchmark request but fills the same index structures the
requests walk (the `/api` and `/v1` trie nodes, the host-less bucket, the wildcard-host
dict), so a larger policy costs a lookup what it would cost in production.

`conditions=True` adds `when` clauses (header conditions on a core rule the mix hits
and on every fifth filler rule, a CEL `expr` on every 25th); use it only once the
loader accepts `when` (`when_supported()`).

The rules are also returned as plain `RuleSpec` values so that `envoy_rbac.py` can
render the equivalent Envoy RBAC policy from the same source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TRUST_DOMAIN", "RuleSpec", "generate_rules", "policy_yaml", "when_supported"]

TRUST_DOMAIN = "example.org"
_TD = f"spiffe://{TRUST_DOMAIN}"


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One policy rule as plain data (docs/policy/reference.md#rule-fields); empty tuples and None
    mean "any"."""

    id: str
    effect: str
    hosts: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    principals: tuple[str, ...] | None = None
    when: Mapping[str, Any] = field(default_factory=dict)


def _core(conditions: bool) -> list[RuleSpec]:
    task_header: Mapping[str, Any] = (
        {"headers": {"x-agent-task": {"present": True}}} if conditions else {}
    )
    return [
        RuleSpec(
            "orders-read",
            "allow",
            hosts=("orders.internal",),
            methods=("GET", "HEAD"),
            paths=("/v1/orders", "/v1/orders/{id}"),
            principals=(f"{_TD}/ns/shop/sa/*",),
        ),
        RuleSpec(
            "tenant-scope",
            "allow",
            paths=("/v1/tenants/{tenant}/**",),
            principals=(f"{_TD}/agents/{{tenant}}/*",),
            when=task_header,
        ),
        RuleSpec(
            "payments-charge",
            "allow",
            hosts=("*.payments.example",),
            methods=("POST",),
            paths=("/v2/charges",),
            principals=(f"{_TD}/ns/billing/sa/api",),
        ),
        RuleSpec(
            "no-admin-from-agents",
            "deny",
            paths=("/admin/**",),
            principals=(f"{_TD}/agents/**",),
        ),
        RuleSpec("public-read", "allow", methods=("GET",), paths=("/public/**",)),
    ]


_METHODS: tuple[tuple[str, ...], ...] = (("GET",), ("GET", "HEAD"), ("POST", "PUT"), ())


def _filler(i: int, conditions: bool) -> RuleSpec:
    """The i-th filler rule: deterministic, and never matching a benchmark request."""
    shape = i % 4
    hosts: tuple[str, ...]
    if shape == 0:
        hosts = ()
    elif shape in (1, 2):
        hosts = (f"svc{i % 97}.internal",)
    else:
        hosts = (f"*.zone{i % 13}.example",)
    paths = (
        (f"/api/r{i}/items", f"/api/r{i}/items/{{id}}")
        if i % 3 == 0
        else (f"/api/r{i}/**",)
        if i % 3 == 1
        else (f"/v1/r{i}/*/status",)
    )
    namespace = f"{_TD}/ns/ns{i % 50}"
    principals = (
        (f"{namespace}/sa/*",)
        if i % 3 == 0
        else (f"{namespace}/sa/app{i}",)
        if i % 3 == 1
        else (f"{namespace}/**",)
    )
    when: dict[str, Any] = {}
    if conditions and i % 5 == 0:
        when["headers"] = {"x-tenant": {"equals": f"t{i % 50}"}}
    if conditions and i % 25 == 0:
        when["expr"] = 'request.method != "DELETE"'
    return RuleSpec(
        f"r-{i:05d}",
        "deny" if i % 10 == 9 else "allow",
        hosts=hosts,
        methods=_METHODS[i % len(_METHODS)],
        paths=paths,
        principals=principals,
        when=when,
    )


def generate_rules(count: int, *, conditions: bool = False) -> list[RuleSpec]:
    """`count` rules: the core rules, then filler up to `count` (at least the core)."""
    core = _core(conditions)
    return core + [_filler(i, conditions) for i in range(max(0, count - len(core)))]


def _flow(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def policy_yaml(rules: list[RuleSpec]) -> str:
    """Policy v1 text (docs/policy/reference.md) for `rules`, requiring a verified peer
    certificate."""
    lines = [
        "version: 1",
        "identity:",
        f"  trust_domains: [{TRUST_DOMAIN}]",
        "  sources: [peer]",
        "  require_certificate: true",
        "defaults:",
        "  decision: deny",
        "  mode: enforce",
        "rules:",
    ]
    for rule in rules:
        lines.append(f"  - id: {rule.id}")
        for name in ("hosts", "methods", "paths"):
            values: tuple[str, ...] = getattr(rule, name)
            if values:
                lines.append(f"    {name}: {_flow(values)}")
        if rule.principals is not None:
            lines.append(f"    principals: {_flow(rule.principals)}")
        lines.append(f"    effect: {rule.effect}")
        if rule.when:
            # JSON is YAML: one flow mapping keeps the generator free of indentation rules.
            lines.append(f"    when: {json.dumps(rule.when)}")
    return "\n".join(lines) + "\n"


def write_policy(path: Path, count: int, *, conditions: bool = False) -> list[RuleSpec]:
    """Write a `count`-rule policy to `path` and return its rules."""
    rules = generate_rules(count, conditions=conditions)
    path.write_text(policy_yaml(rules), encoding="utf-8")
    return rules


def when_supported() -> bool:
    """True once the loader accepts `when` (another change adds conditions)."""
    from authz_server.core.errors import PolicyError
    from authz_server.policy.load import load_policy_text

    try:
        load_policy_text(policy_yaml(generate_rules(6, conditions=True)), "<bench probe>")
    except PolicyError:
        return False
    return True
