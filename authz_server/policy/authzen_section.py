"""The `authzen` section: which AuthZEN callers may ask about subjects other than themselves.

    authzen:
      trusted_peps: ["spiffe://example.org/gateways/*"]

The subject of an AuthZEN request is claimed by the caller. A caller matching
`trusted_peps` (a gateway enforcing decisions for many workloads) may vouch for any
subject; every other authenticated caller may ask only about itself (`subject_not_caller`,
see identity/vouched.py). Without the section nobody is trusted to vouch for others.
The patterns are principal patterns, their trust domains in `identity.trust_domains`.
Part of `load.py`'s schema, kept apart so that each file stays readable.
"""

from __future__ import annotations

from collections.abc import Callable

from authz_server.core.yaml_source import Fields, Value
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.policy.model import AuthzenConfig

__all__ = ["compile_authzen"]

_KEYS = frozenset({"trusted_peps"})

Principals = Callable[[Value, str], tuple[PrincipalMatcher, ...]]


def compile_authzen(fields: Fields, value: Value, principals: Principals) -> AuthzenConfig:
    """The section compiled; problems are recorded in `fields` (the default is returned)."""
    node = fields.mapping(value, "authzen", _KEYS)
    if node is None or "trusted_peps" not in node.entries:
        return AuthzenConfig()
    return AuthzenConfig(principals(node.entries["trusted_peps"], "authzen.trusted_peps"))
