"""`identity.sources` and the settings of the sources that need some
(docs/concepts/identity.md#sources).

    identity:
      sources: [xfcc, peer]              # tried in this order; default [peer]
      xfcc: {trusted_proxies: ["spiffe://example.org/gateway/*"]}
      jwt_svid: {audiences: [orders]}

`identity.xfcc` is required when `xfcc` is listed, `identity.jwt_svid` when `jwt_svid`
is; either one without its source is an error too, since a setting that does nothing
would mislead whoever reads the policy. Part of `load.py`'s schema, kept apart so that
each file stays readable.
"""

from __future__ import annotations

from collections.abc import Callable

from authz_server.core.errors import quote
from authz_server.core.yaml_source import Fields, Map, Seq, Value
from authz_server.identity.patterns import PrincipalMatcher

__all__ = ["SOURCES", "compile_source_settings", "compile_sources"]

SOURCES = ("peer", "xfcc", "jwt_svid")
#: The key under `identity` holding each source's settings, and what it must contain.
_SETTINGS = {"xfcc": "trusted_proxies", "jwt_svid": "audiences"}
_MAX_AUDIENCE_CHARS = 512

Principals = Callable[[Value, str], tuple[PrincipalMatcher, ...]]


def _source(text: str) -> str:
    if text not in SOURCES:
        raise ValueError(f"unknown source {quote(text)} (expected one of: {', '.join(SOURCES)})")
    return text


def compile_sources(fields: Fields, node: Map) -> tuple[str, ...] | None:
    """The listed sources in order (default `peer`); None when the list has problems.

    A listed source whose settings are missing is reported at the list item.
    """
    entries = node.entries
    if "sources" not in entries:
        return ("peer",)
    before = len(fields.issues)
    listed = fields.compiled_list(
        entries["sources"], "identity.sources", _source, empty="at least one source is required"
    )
    seen: set[str] = set()
    for index, (item, source) in enumerate(listed or ()):
        path = f"identity.sources[{index}]"
        if source in seen:
            fields.issue(item.line, path, f"source {quote(source)} is listed twice")
            continue
        seen.add(source)
        setting = _SETTINGS.get(source)
        if setting is not None and source not in entries:
            fields.issue(
                item.line,
                path,
                f"source {quote(source)} needs identity.{source}.{setting}",
            )
    if listed is None or len(fields.issues) != before:
        return None
    return tuple(source for _, source in listed)


def compile_source_settings(
    fields: Fields, node: Map, sources: tuple[str, ...] | None, principals: Principals
) -> tuple[tuple[PrincipalMatcher, ...], frozenset[str]]:
    """(`identity.xfcc.trusted_proxies`, `identity.jwt_svid.audiences`), empty when unset.

    `sources` is None when the list itself was invalid: the settings are still checked,
    but not against it. `principals` compiles a list of SPIFFE ID patterns whose trust
    domains must be trusted (load.py's `_principals`).
    """
    entries = node.entries
    proxies: tuple[PrincipalMatcher, ...] = ()
    audiences: frozenset[str] = frozenset()
    for source, setting in _SETTINGS.items():
        if source not in entries:
            continue
        path = f"identity.{source}"
        if sources is not None and source not in sources:
            fields.issue(
                node.key_lines[source],
                path,
                f"set, but {quote(source)} is not in identity.sources (it would do nothing)",
            )
        section = fields.mapping(entries[source], path, frozenset({setting}))
        if section is None:
            continue
        if setting not in section.entries:
            fields.issue(section.line, f"{path}.{setting}", "required")
            continue
        value = section.entries[setting]
        if source == "xfcc":
            if isinstance(value, Seq) and not value.items:
                fields.issue(value.line, f"{path}.{setting}", "at least one proxy is required")
            else:
                proxies = principals(value, f"{path}.{setting}")
        else:
            audiences = _audiences(fields, value, f"{path}.{setting}")
    return proxies, audiences


def _audience(text: str) -> str:
    if not text or text != text.strip() or len(text) > _MAX_AUDIENCE_CHARS:
        raise ValueError(
            f"audience {quote(text)}: expected a non-empty string without surrounding "
            f"whitespace, at most {_MAX_AUDIENCE_CHARS} characters"
        )
    return text


def _audiences(fields: Fields, value: Value, path: str) -> frozenset[str]:
    listed = fields.compiled_list(value, path, _audience, empty="at least one audience is required")
    return frozenset(audience for _, audience in listed or ())
