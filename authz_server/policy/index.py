"""The compiled route index: which rules can match a (method, host, path).

Lookup cost depends on the request and on the rules that can match it, never on the
number of rules that cannot (docs/concepts/request-phases.md#match):

1. host buckets: an exact-host dict, a `*.suffix` dict probed with each proper label
   suffix of the request host (so a wildcard never matches its apex), and one bucket for
   rules without `hosts`;
2. in each bucket, a trie of path templates over segments: a dict of literal children
   (keyed by `paths.segment_key`), one child shared by `*` and `{name}`, and terminals
   for templates ending at a node (`exact`) or with `**` (`rest`);
3. at each terminal, a dict method → entries plus the entries without `methods`.

A rule without `paths` is indexed as `/**`. Results are sorted by (rule id, template),
so evaluation never depends on file or rule order.

Traffic repeats its routes (a gRPC method, an MCP endpoint, `POST /v2/charges`), so
lookups are kept: up to `MEMO_SIZE` of them, each at most `MEMO_KEY_MAX` characters of
method, host and path (so long hosts cannot fill memory), and all are forgotten at once
when it is full (one atomic `clear`, safe from any thread). The index is read-only once
built, so a kept result is exactly what a new search would return; a new policy brings a
new index and an empty memo. A path that never repeats (an id in it, or an attacker
varying it) costs a search, as without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from authz_server.core.paths import PathTemplate, compile_path_template, segments_and_keys
from authz_server.policy.model import RouteMatch, Rule
from authz_server.policy.patterns import HostPattern, compile_host_pattern, compile_method

__all__ = ["MEMO_KEY_MAX", "MEMO_SIZE", "CompiledRouteIndex", "Lookup", "Route"]

#: Lookups kept per index, and the longest method + host + path kept (longer ones are
#: searched each time).
MEMO_SIZE = 4096
MEMO_KEY_MAX = 512

_ANY_PATH = compile_path_template("/**")
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Route:
    """A rule with its route fields compiled; empty tuples mean "any"."""

    rule: Rule
    hosts: tuple[HostPattern, ...] = ()
    methods: tuple[str, ...] = ()
    paths: tuple[PathTemplate, ...] = ()

    @classmethod
    def of(cls, rule: Rule) -> Route:
        """Compile `rule`'s hosts, methods and paths (ValueError when one is invalid)."""
        return cls(
            rule,
            tuple(compile_host_pattern(h) for h in rule.hosts),
            tuple(compile_method(m) for m in rule.methods),
            tuple(compile_path_template(p) for p in rule.paths),
        )


@dataclass(frozen=True, slots=True)
class _Entry:
    rule: Rule
    template: PathTemplate
    #: (rule id, template): one match per key, and the order of the results.
    key: tuple[str, str]
    #: The match itself when the template captures nothing (the common case): one
    #: immutable value shared by every lookup instead of one allocated per lookup.
    fixed: RouteMatch | None

    @classmethod
    def of(cls, rule: Rule, template: PathTemplate) -> _Entry:
        fixed = None if template.captures else RouteMatch(rule, _NO_PARAMS)
        return cls(rule, template, (rule.id, template.text), fixed)


@dataclass(slots=True, eq=False)
class _Methods:
    by_method: dict[str, list[_Entry]] = field(default_factory=dict)
    any_method: list[_Entry] = field(default_factory=list)

    def add(self, methods: tuple[str, ...], entry: _Entry) -> None:
        if not methods:
            self.any_method.append(entry)
        for method in methods:
            self.by_method.setdefault(method, []).append(entry)


@dataclass(slots=True, eq=False)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    wildcard: _Node | None = None
    exact: _Methods | None = None
    rest: _Methods | None = None

    def insert(self, template: PathTemplate, methods: tuple[str, ...], entry: _Entry) -> None:
        node = self
        for part in template.parts:
            if part is None:
                if node.wildcard is None:
                    node.wildcard = _Node()
                node = node.wildcard
            else:
                node = node.literals.setdefault(part, _Node())
        if template.rest:
            if node.rest is None:
                node.rest = _Methods()
            node.rest.add(methods, entry)
        else:
            if node.exact is None:
                node.exact = _Methods()
            node.exact.add(methods, entry)


@dataclass(frozen=True, slots=True)
class Lookup:
    """One lookup's result and the work it took (tests assert on the counters)."""

    matches: list[RouteMatch]
    #: Host buckets whose trie was walked.
    buckets: int
    #: Trie nodes visited over all walked buckets.
    nodes: int


class CompiledRouteIndex:
    """Implements `model.RouteIndex`; built once per policy load, then read-only."""

    __slots__ = ("_any_host", "_exact_hosts", "_memo", "_suffix_hosts", "size")

    def __init__(self, routes: Iterable[Route]) -> None:
        self._memo: dict[tuple[str, str, str], tuple[RouteMatch, ...]] = {}
        self._exact_hosts: dict[str, _Node] = {}
        self._suffix_hosts: dict[str, _Node] = {}
        self._any_host = _Node()
        #: Number of rules indexed.
        self.size = 0
        for route in routes:
            self.size += 1
            tries = [self._bucket(h) for h in route.hosts] or [self._any_host]
            for template in route.paths or (_ANY_PATH,):
                entry = _Entry.of(route.rule, template)
                for trie in {id(t): t for t in tries}.values():
                    trie.insert(template, route.methods, entry)

    @classmethod
    def from_rules(cls, rules: Iterable[Rule]) -> CompiledRouteIndex:
        """Index `rules`, compiling their route fields (ValueError when one is invalid)."""
        return cls(Route.of(rule) for rule in rules)

    def _bucket(self, host: HostPattern) -> _Node:
        buckets = self._suffix_hosts if host.wildcard else self._exact_hosts
        return buckets.setdefault(host.value, _Node())

    def candidates(self, method: str, host: str, path: str) -> Sequence[RouteMatch]:
        """Every (rule, path captures) pair matching method, host and path; see RouteIndex."""
        key = (method, host, path)
        if (kept := self._memo.get(key)) is not None:
            return kept
        found: dict[tuple[str, str], RouteMatch] = {}
        self._search(method, host, path, found)
        matches = (
            tuple(found.values()) if len(found) < 2 else tuple(found[k] for k in sorted(found))
        )
        if len(method) + len(host) + len(path) <= MEMO_KEY_MAX:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = matches
        return matches

    @property
    def memo_size(self) -> int:
        """Lookups kept (tests read it)."""
        return len(self._memo)

    def lookup(self, method: str, host: str, path: str) -> Lookup:
        """`candidates` with the work counters; `path` must be canonical, without query."""
        found: dict[tuple[str, str], RouteMatch] = {}
        buckets, nodes = self._search(method, host, path, found)
        return Lookup([found[k] for k in sorted(found)], buckets, nodes)

    def _search(
        self, method: str, host: str, path: str, found: dict[tuple[str, str], RouteMatch]
    ) -> tuple[int, int]:
        """Add every match to `found`; return (host buckets walked, trie nodes visited)."""
        if host.endswith("."):
            host = host[:-1]  # `orders.internal.` is `orders.internal`: never a way around a rule
        segments, keys = segments_and_keys(path)
        visited = _walk(self._any_host, method, segments, keys, found)
        buckets = 1
        if (node := self._exact_hosts.get(host)) is not None:
            visited += _walk(node, method, segments, keys, found)
            buckets += 1
        if self._suffix_hosts:
            dot = host.find(".")
            while dot != -1:
                if (node := self._suffix_hosts.get(host[dot + 1 :])) is not None:
                    visited += _walk(node, method, segments, keys, found)
                    buckets += 1
                dot = host.find(".", dot + 1)
        return buckets, visited


def _walk(
    root: _Node,
    method: str,
    segments: list[str],
    keys: list[str],
    found: dict[tuple[str, str], RouteMatch],
) -> int:
    """Collect the entries of one trie matching the request; return the nodes visited."""
    n = len(segments)
    visited = 0
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        visited += 1
        if node.rest is not None:
            _collect(node.rest, method, segments, found)
        if depth == n:
            if node.exact is not None:
                _collect(node.exact, method, segments, found)
            continue
        child = node.literals.get(keys[depth])
        if child is not None:
            stack.append((child, depth + 1))
        if node.wildcard is not None and segments[depth]:
            stack.append((node.wildcard, depth + 1))
    return visited


def _collect(
    methods: _Methods,
    method: str,
    segments: list[str],
    found: dict[tuple[str, str], RouteMatch],
) -> None:
    for entries in (methods.by_method.get(method), methods.any_method):
        for entry in entries or ():
            if entry.key not in found:
                found[entry.key] = entry.fixed or RouteMatch(
                    entry.rule, entry.template.params(segments)
                )
