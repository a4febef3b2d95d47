"""Policy files → a compiled, immutable `Policy` (docs/policy/reference.md), or one `PolicyError`
with all issues.

`--policy` is one file or a directory of `*.yaml` / `*.yml` files (see `files.py`).
Reading files (and ConfigMap volumes) is `files.py`; YAML with line numbers is
`core/yaml_source.py`; this module is the schema.

Merge rules: every file carries `version: 1`; `rules` of all files are concatenated
(ids unique across files); `identity` (required), `admin`, `defaults` and `authzen` may
each appear in at most one file. Nothing is ever silently ignored: unknown keys, duplicate keys and
features this version does not implement are errors, because a condition that is
ignored fails open. `when` and
`mcp_tools` are compiled here, once (`conditions/`): regexes, CEL programs, zones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from authz_server.core.errors import PolicyError, PolicyIssue, quote
from authz_server.core.paths import compile_path_template
from authz_server.core.yaml_source import (
    Broken,
    Fields,
    Map,
    Scalar,
    Seq,
    Value,
    parse_document,
)
from authz_server.identity.model import IdentityConfig
from authz_server.identity.patterns import PrincipalMatcher, compile_principals
from authz_server.identity.section import compile_identity
from authz_server.policy.approvals_notify import ApprovalsSettings, compile_approvals
from authz_server.policy.authzen_section import compile_authzen
from authz_server.policy.conditions.mcp import McpTools, compile_mcp_tools
from authz_server.policy.conditions.when import EMPTY_WHEN, When, compile_when
from authz_server.policy.files import SourceFile, policy_version, read_sources
from authz_server.policy.index import CompiledRouteIndex, Route
from authz_server.policy.model import (
    AuthzenConfig,
    Effect,
    Mode,
    Policy,
    Rule,
)
from authz_server.policy.patterns import compile_host_pattern, compile_method

__all__ = ["load_policy", "load_policy_text"]

_T = TypeVar("_T")
_EFFECTS = ("allow", "deny")
_MODES = ("enforce", "dry_run")
_RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")

_TOP = frozenset({"version", "identity", "admin", "defaults", "rules", "authzen"})
_ADMIN = frozenset({"principals", "approvals"})
_DEFAULTS = frozenset({"decision", "mode", "non_http"})
_RULE = frozenset(
    {
        "id",
        "description",
        "hosts",
        "methods",
        "paths",
        "principals",
        "not_principals",
        "unauthenticated",
        "effect",
        "mode",
        "when",
        "mcp_tools",
    }
)


def load_policy(path: str | Path) -> Policy:
    """Load a policy file or directory; raise `PolicyError` listing every problem."""
    sources, issues = read_sources(Path(path))
    return _build(sources, issues, str(path))


def load_policy_text(text: str, name: str = "<string>") -> Policy:
    """Load a policy from text (tests, `authz-server check -`); raise `PolicyError`."""
    return _build([SourceFile(name, text.encode("utf-8", "surrogatepass"))], [], name)


@dataclass
class _Section:
    """A top-level section that at most one file may define."""

    value: Value | None = None
    fields: Fields | None = None
    location: str = ""


def _build(sources: list[SourceFile], issues: list[PolicyIssue], where: str) -> Policy:
    docs: list[tuple[Fields, Map]] = []
    for source in sources:
        tree, parse_issues = parse_document(source.data, source.name)
        issues.extend(parse_issues)
        fields = Fields(source.name, issues)
        if tree is not None and (top := fields.mapping(tree, None, _TOP)) is not None:
            _check_version(fields, top)
            docs.append((fields, top))

    sections = {name: _Section() for name in ("identity", "admin", "defaults", "authzen")}
    for fields, top in docs:
        for name, section in sections.items():
            if name not in top.entries:
                continue
            if section.value is not None:
                fields.issue(top.key_lines[name], name, f"already defined at {section.location}")
                continue
            section.value, section.fields = top.entries[name], fields
            section.location = f"{fields.file}:{top.key_lines[name]}"

    # A file that did not parse may hold `identity`: then its absence is no news.
    identity, trust_domains = _identity(
        sections["identity"], issues, where, len(docs) == len(sources) > 0
    )
    admin, approvals = _admin(sections["admin"], trust_domains)
    authzen = _authzen(sections["authzen"], trust_domains)
    default_effect, default_mode, allow_non_http = _defaults(sections["defaults"])

    routes: list[Route] = []
    first_seen: dict[str, str] = {}
    for fields, top in docs:
        rules = top.entries.get("rules")
        if rules is None:
            continue
        if not isinstance(rules, Seq):
            fields.wrong_type(rules, "rules", "a list of rules")
            continue
        for i, item in enumerate(rules.items):
            route = _rule(fields, item, i, trust_domains, first_seen)
            if route is not None:
                routes.append(route)

    if issues or identity is None:
        issues.sort(key=lambda issue: (issue.file, issue.line or 0))
        raise PolicyError(issues)
    routes.sort(key=lambda r: r.rule.id)  # rule order never matters, file order neither
    return Policy(
        identity=identity,
        rules=tuple(r.rule for r in routes),
        index=CompiledRouteIndex(routes),
        default_effect=default_effect,
        default_mode=default_mode,
        allow_non_http=allow_non_http,
        admin_principals=admin,
        approvals=approvals,
        authzen=authzen,
        version=policy_version(sources),
        files=tuple(s.name for s in sources),
    )


def _check_version(fields: Fields, top: Map) -> None:
    value = top.entries.get("version")
    if value is None:
        fields.issue(top.line, "version", "missing 'version' (expected 1)")
        return
    if isinstance(value, Broken):
        return
    if not (isinstance(value, Scalar) and type(value.value) is int and value.value == 1):
        shown = value.value if isinstance(value, Scalar) else "a collection"
        fields.issue(value.line, "version", f"unsupported version {quote(str(shown))} (expected 1)")


def _identity(
    section: _Section, issues: list[PolicyIssue], where: str, all_parsed: bool
) -> tuple[IdentityConfig | None, frozenset[str] | None]:
    """`identity` (None when missing or invalid) and its trust domains (None when invalid);
    the section is `identity/section.py`'s."""
    fields, value = section.fields, section.value
    if fields is None or value is None:
        if all_parsed:
            message = "no file defines 'identity' (identity.trust_domains is required)"
            issues.append(PolicyIssue(where, None, None, "identity", message))
        return None, None
    return compile_identity(fields, value)


def _admin(
    section: _Section, trust_domains: frozenset[str] | None
) -> tuple[tuple[PrincipalMatcher, ...], ApprovalsSettings]:
    """(`admin.principals`, `admin.approvals` (`approvals_notify.py`))."""
    fields, value = section.fields, section.value
    principals: tuple[PrincipalMatcher, ...] = ()
    approvals = ApprovalsSettings()
    if fields is None or value is None:
        return principals, approvals
    node = fields.mapping(value, "admin", _ADMIN)
    if node is None:
        return principals, approvals
    if "principals" in node.entries:
        principals = compile_principals(
            fields, node.entries["principals"], "admin.principals", trust_domains, may_be_empty=True
        )
    if "approvals" in node.entries:
        approvals = compile_approvals(fields, node.entries["approvals"]) or approvals
    return principals, approvals


def _authzen(section: _Section, trust_domains: frozenset[str] | None) -> AuthzenConfig:
    fields, value = section.fields, section.value
    if fields is None or value is None:
        return AuthzenConfig()
    return compile_authzen(
        fields,
        value,
        lambda v, path: compile_principals(fields, v, path, trust_domains, may_be_empty=True),
    )


def _defaults(section: _Section) -> tuple[Effect, Mode, bool]:
    """(default effect, default mode, allow non-HTTP): deny, enforce, deny unless set."""
    effect, mode, non_http = Effect.DENY, Mode.ENFORCE, "deny"
    fields, value = section.fields, section.value
    if fields is None or value is None:
        return effect, mode, False
    node = fields.mapping(value, "defaults", _DEFAULTS)
    entries = node.entries if node else {}
    if "decision" in entries:
        effect = Effect(fields.choice(entries["decision"], "defaults.decision", _EFFECTS) or "deny")
    if "mode" in entries:
        mode = Mode(fields.choice(entries["mode"], "defaults.mode", _MODES) or "enforce")
    if "non_http" in entries:
        non_http = fields.choice(entries["non_http"], "defaults.non_http", _EFFECTS) or "deny"
    return effect, mode, non_http == "allow"


def _rule(
    fields: Fields,
    value: Value,
    index: int,
    trust_domains: frozenset[str] | None,
    first_seen: dict[str, str],
) -> Route | None:
    """One rule compiled to a `Route`, or None after recording its issues."""
    if not isinstance(value, Map):
        fields.wrong_type(value, f"rules[{index}]", "a mapping (one rule)")
        return None
    entries = value.entries
    id_value = entries.get("id")
    rule_id = id_value.value if isinstance(id_value, Scalar) else None
    fields.rule_id = rule_id if isinstance(rule_id, str) else None
    try:
        return _rule_fields(fields, value, trust_domains, first_seen)
    finally:
        fields.rule_id = None


def _rule_fields(
    fields: Fields, node: Map, trust_domains: frozenset[str] | None, first_seen: dict[str, str]
) -> Route | None:
    before = len(fields.issues)
    fields.mapping(node, None, _RULE)
    entries = node.entries
    location = f"{fields.file}:{node.line}"
    rule_id = ""
    if "id" not in entries:
        fields.issue(node.line, "id", "missing rule 'id'")
    elif (text := fields.string(entries["id"], "id")) is not None:
        rule_id = text
        if _RULE_ID.fullmatch(text) is None:
            fields.issue(
                entries["id"].line,
                "id",
                f"invalid rule id {quote(text)} (expected [a-z0-9][a-z0-9._-]*)",
            )
        elif text in first_seen:
            fields.issue(
                entries["id"].line,
                "id",
                f"duplicate rule id {quote(text)} (first defined at {first_seen[text]})",
            )
        else:
            first_seen[text] = location
    effect = None
    if "effect" not in entries:
        fields.issue(node.line, "effect", "missing 'effect' (allow or deny)")
    else:
        effect = fields.choice(entries["effect"], "effect", _EFFECTS)
    mode = fields.choice(entries["mode"], "mode", _MODES) if "mode" in entries else None
    description = ""
    if "description" in entries:
        description = fields.string(entries["description"], "description") or ""
    unauthenticated = False
    if "unauthenticated" in entries:
        unauthenticated = fields.boolean(entries["unauthenticated"], "unauthenticated") is True

    def listed(key: str, compile_one: Callable[[str], _T]) -> list[tuple[Scalar, _T]]:
        if key not in entries:
            return []
        return fields.compiled_list(entries[key], key, compile_one) or []

    hosts = listed("hosts", compile_host_pattern)
    methods = listed("methods", compile_method)
    paths = listed("paths", compile_path_template)
    principals = None
    if "principals" in entries:
        principals = compile_principals(fields, entries["principals"], "principals", trust_domains)
    not_principals: tuple[PrincipalMatcher, ...] = ()
    if "not_principals" in entries:
        not_principals = compile_principals(
            fields, entries["not_principals"], "not_principals", trust_domains, may_be_empty=True
        )
    when: When | None = EMPTY_WHEN
    if "when" in entries:
        when = compile_when(
            fields,
            entries["when"],
            trust_domains=trust_domains,
            effect=effect,
            unauthenticated=unauthenticated,
        )
    mcp_tools: McpTools | None = None
    if "mcp_tools" in entries:
        mcp_tools = compile_mcp_tools(fields, entries["mcp_tools"], "mcp_tools")
    if len(fields.issues) != before or effect is None or when is None:
        return None
    rule = Rule(
        id=rule_id,
        effect=Effect(effect),
        principals=principals,
        not_principals=not_principals,
        unauthenticated=unauthenticated,
        mode=Mode(mode) if mode else None,
        description=description,
        hosts=tuple(str(item.value) for item, _ in hosts),
        methods=tuple(str(item.value) for item, _ in methods),
        paths=tuple(str(item.value) for item, _ in paths),
        location=location,
        when=when,
        mcp_tools=mcp_tools,
    )
    return Route(
        rule,
        tuple(h for _, h in hosts),
        tuple(m for _, m in methods),
        tuple(p for _, p in paths),
    )
