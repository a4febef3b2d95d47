"""The compiled policy: what the loader produces and the evaluator reads.

Everything here is immutable and built once per load; the hot path only does lookups.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from authz_server.identity.model import IdentityConfig
from authz_server.identity.patterns import PrincipalMatcher
from authz_server.policy.approvals_notify import ApprovalsSettings
from authz_server.policy.conditions.mcp import McpTools
from authz_server.policy.conditions.when import EMPTY_WHEN, When


class Effect(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    DRY_RUN = "dry_run"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    effect: Effect
    #: None means "any verified identity".
    principals: tuple[PrincipalMatcher, ...] | None
    not_principals: tuple[PrincipalMatcher, ...] = ()
    unauthenticated: bool = False
    #: None means the policy's default mode applies.
    mode: Mode | None = None
    description: str = ""
    #: As written, for explain traces and error messages.
    hosts: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    #: "file:line" where the rule starts.
    location: str = ""
    #: Compiled `when` conditions (docs/policy/conditions.md); empty means none.
    when: When = EMPTY_WHEN
    #: Compiled `mcp_tools` (docs/policy/reference.md#rule-fields); None means the rule is not about
    #: MCP tool calls.
    mcp_tools: McpTools | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A rule whose host, method and path matched, with the path template's captures."""

    rule: Rule
    params: Mapping[str, str]


class RouteIndex(Protocol):
    """Finds the rules whose hosts, methods and paths match a request.

    Its cost depends on the request and the rules that can match it, never on the
    number of rules that cannot.
    """

    def candidates(self, method: str, host: str, path: str) -> Sequence[RouteMatch]:
        """Every (rule, path captures) pair matching method, host and path.

        `method` is upper-case, `host` lower-case without port, `path` canonical
        and without query. A rule with several matching path templates appears once
        per template.
        """


@dataclass(frozen=True, slots=True)
class AuthzenConfig:
    """The `authzen` section: who may ask the AuthZEN API about subjects other than itself."""

    #: Callers (PEPs, e.g. gateways) that may vouch for any subject; all others only for
    #: themselves (identity/vouched.py).
    trusted_peps: tuple[PrincipalMatcher, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    identity: IdentityConfig
    rules: tuple[Rule, ...]
    index: RouteIndex
    default_effect: Effect = Effect.DENY
    default_mode: Mode = Mode.ENFORCE
    #: Let CheckRequests without HTTP attributes through (Istio's TCP filter); default deny.
    allow_non_http: bool = False
    admin_principals: tuple[PrincipalMatcher, ...] = ()
    #: `admin.approvals`: notification endpoints and the approval console's URL.
    approvals: ApprovalsSettings = field(default_factory=ApprovalsSettings)
    authzen: AuthzenConfig = AuthzenConfig()
    #: sha256 over the source files' bytes, hex; identifies the policy in audit records.
    version: str = ""
    files: tuple[str, ...] = field(default_factory=tuple)
