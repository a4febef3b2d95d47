"""The policy's `identity` section, compiled to an `IdentityConfig`.

    identity:
      trust_domains: [example.org, partner.org]     # required
      sources: [xfcc, peer]                         # tried in this order; default [peer]
      require_certificate: true
      deny: ["spiffe://example.org/compromised/*"]
      xfcc: {trusted_proxies: ["spiffe://example.org/gateway/*"]}

`sources` names sources of `registry.py`; each source's own section (`identity.<name>`)
is parsed by the source. A listed source whose section is missing is an error at the list
item; a section whose source is not listed is an error too, since a setting that does
nothing would mislead whoever reads the policy. Like the rest of the loader, every
problem is recorded in `fields` with its file and line, and all of them are reported.
"""

from __future__ import annotations

from types import MappingProxyType

from authz_server.core.errors import quote
from authz_server.core.yaml_source import Fields, Map, Value
from authz_server.identity.model import IdentityConfig
from authz_server.identity.patterns import PrincipalMatcher, compile_principals
from authz_server.identity.registry import SOURCES
from authz_server.identity.spiffe_id import SCHEME, spiffe_id_problem

__all__ = ["compile_identity"]

_KEYS = frozenset({"trust_domains", "sources", "require_certificate", "deny"}) | frozenset(
    name for name, kind in SOURCES.items() if kind.section is not None
)


def compile_identity(
    fields: Fields, value: Value
) -> tuple[IdentityConfig | None, frozenset[str] | None]:
    """(the section, None when invalid; its trust domains, None when they are invalid).

    The trust domains alone are enough to check the rules' principal patterns, so one
    mistake in `identity.sources` does not hide a foreign trust domain in a rule.
    """
    node = fields.mapping(value, "identity", _KEYS)
    if node is None:
        return None, None
    before = len(fields.issues)
    entries = node.entries
    trust_domains: frozenset[str] | None = None
    if "trust_domains" not in entries:
        fields.issue(node.line, "identity.trust_domains", "required")
    else:
        listed = fields.compiled_list(
            entries["trust_domains"],
            "identity.trust_domains",
            _trust_domain,
            empty="at least one trust domain is required",
        )
        if len(fields.issues) == before:
            trust_domains = frozenset(td for _, td in listed or ())
    sources = _sources(fields, node)
    settings = _settings(fields, node, sources, trust_domains)
    require = False
    if "require_certificate" in entries:
        path = "identity.require_certificate"
        require = fields.boolean(entries["require_certificate"], path) is True
    deny: tuple[PrincipalMatcher, ...] = ()
    if "deny" in entries:
        deny = compile_principals(
            fields, entries["deny"], "identity.deny", trust_domains, may_be_empty=True
        )
    if trust_domains is None or sources is None or len(fields.issues) != before:
        return None, trust_domains
    config = IdentityConfig(trust_domains, sources, require, deny, MappingProxyType(settings))
    return config, trust_domains


def _trust_domain(text: str) -> str:
    problem = "contains '/'" if "/" in text else spiffe_id_problem(SCHEME + text)
    if problem is not None:
        raise ValueError(f"invalid trust domain {quote(text)}: {problem}")
    return text


def _source(text: str) -> str:
    if text not in SOURCES:
        known = ", ".join(SOURCES)
        raise ValueError(f"unknown source {quote(text)} (expected one of: {known})")
    return text


def _sources(fields: Fields, node: Map) -> tuple[str, ...] | None:
    """The listed sources in order (default `peer`); None when the list has problems.

    A listed source whose section is missing is reported at the list item.
    """
    entries = node.entries
    if "sources" not in entries:
        return ("peer",)
    before = len(fields.issues)
    listed = fields.compiled_list(
        entries["sources"], "identity.sources", _source, empty="at least one source is required"
    )
    seen: set[str] = set()
    for index, (item, name) in enumerate(listed or ()):
        path = f"identity.sources[{index}]"
        if name in seen:
            fields.issue(item.line, path, f"source {quote(name)} is listed twice")
            continue
        seen.add(name)
        section = SOURCES[name].section
        if section is not None and name not in entries:
            fields.issue(
                item.line, path, f"source {quote(name)} needs identity.{name}.{section.requires}"
            )
    if listed is None or len(fields.issues) != before:
        return None
    return tuple(name for _, name in listed)


def _settings(
    fields: Fields,
    node: Map,
    sources: tuple[str, ...] | None,
    trust_domains: frozenset[str] | None,
) -> dict[str, object]:
    """Each source section present, parsed by its source.

    `sources` is None when the list itself was invalid: the sections are still checked,
    but not against it.
    """
    settings: dict[str, object] = {}
    for name, kind in SOURCES.items():
        if kind.section is None or name not in node.entries:
            continue
        path = f"identity.{name}"
        if sources is not None and name not in sources:
            fields.issue(
                node.key_lines[name],
                path,
                f"set, but {quote(name)} is not in identity.sources (it would do nothing)",
            )
        parsed = kind.section.parse(fields, node.entries[name], path, trust_domains)
        if parsed is not None:
            settings[name] = parsed
    return settings
