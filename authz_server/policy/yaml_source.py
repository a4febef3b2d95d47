"""YAML with line numbers, and typed field access that reports instead of raising.

PyYAML's `safe_load` loses line numbers, silently keeps the last of two duplicate keys
and expands aliases (billion laughs). Policy files go through `compose` instead: the
node tree becomes `Scalar` / `Seq` / `Map` values that remember their line, duplicate
keys and aliases are issues, and no input (binary garbage, deep nesting, odd tags)
raises anything but an issue.

`Fields` is the schema layer's toolkit: each accessor checks one value's type and
records a `PolicyIssue` (file, line, rule id, field) when it is wrong, so that a loader
can report every problem of every file at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from authz_server.errors import PolicyIssue, quote

__all__ = ["Broken", "Fields", "Map", "Scalar", "Seq", "Value", "parse_document"]

#: Deeper nesting than any policy needs; bounds recursion on hostile input.
MAX_DEPTH = 32

_T = TypeVar("_T")
_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_TAG + t for t in ("null", "bool", "int", "float")}


@dataclass(frozen=True, slots=True)
class Scalar:
    line: int
    value: str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Seq:
    line: int
    items: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Map:
    line: int
    #: key → value, in file order; each value knows its own line.
    entries: dict[str, Value]
    #: key → line of the key itself.
    key_lines: dict[str, int]


@dataclass(frozen=True, slots=True)
class Broken:
    """A value already reported as an issue; accessors skip it without a second issue."""

    line: int


Value = Scalar | Seq | Map | Broken


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases: no billion laughs, no `<<: *merge` surprises."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # stubs lack it
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in policy files", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_document(data: bytes, file: str) -> tuple[Value | None, list[PolicyIssue]]:
    """One YAML document as located values (None for an empty or broken file), and issues."""
    issues: list[PolicyIssue] = []

    def issue(line: int | None, message: str) -> None:
        issues.append(PolicyIssue(file, line, None, None, message))

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        issue(line, f"not valid UTF-8 (byte {e.start})")
        return None, issues
    loader: _NoAliasLoader | None = None
    try:
        loader = _NoAliasLoader(text)  # the reader already rejects unprintable characters
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(p for p in (e.context, e.problem) if p)
        issue(mark.line + 1 if mark else None, f"YAML syntax error: {problem}")
        return None, issues
    except yaml.reader.ReaderError as e:
        reason = str(e).splitlines()[0]  # "unacceptable character #x0007: ..."
        issue(text.count("\n", 0, e.position) + 1, f"YAML syntax error: {reason}")
        return None, issues
    except (yaml.YAMLError, RecursionError) as e:
        issue(None, f"YAML syntax error: {type(e).__name__}")
        return None, issues
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        issue(1, "file is empty (expected a mapping starting with 'version: 1')")
        return None, issues
    return _convert(node, issue, 0), issues


def _convert(node: Node, issue: Callable[[int | None, str], None], depth: int) -> Value:
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        issue(line, f"nested deeper than {MAX_DEPTH} levels")
        return Broken(line)
    if isinstance(node, ScalarNode):
        return _scalar(node, issue)
    if isinstance(node, SequenceNode) and node.tag == _TAG + "seq":
        return Seq(line, tuple(_convert(item, issue, depth + 1) for item in node.value))
    if isinstance(node, MappingNode) and node.tag == _TAG + "map":
        entries: dict[str, Value] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = _scalar(key_node, issue) if isinstance(key_node, ScalarNode) else None
            if isinstance(key, Broken):
                continue
            if key is None or not isinstance(key.value, str):
                shown = key_node.value if isinstance(key_node, ScalarNode) else "<collection>"
                issue(key_line, f"mapping key {quote(str(shown))} is not a string")
                continue
            if key.value in key_lines:
                issue(
                    key_line,
                    f"duplicate key {quote(key.value)} (first at line {key_lines[key.value]})",
                )
                continue
            key_lines[key.value] = key_line
            entries[key.value] = _convert(value_node, issue, depth + 1)
        return Map(line, entries, key_lines)
    issue(line, f"unsupported YAML tag {quote(str(node.tag))}")
    return Broken(line)


def _scalar(node: ScalarNode, issue: Callable[[int | None, str], None]) -> Scalar | Broken:
    line = node.start_mark.line + 1
    # Timestamps stay text: `description: 2024-01-01` is a string to this schema.
    if node.tag in (_TAG + "str", _TAG + "timestamp"):
        return Scalar(line, str(node.value))
    if node.tag in _PLAIN_TAGS:
        try:
            value = SafeConstructor().construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            issue(line, f"invalid {node.tag.removeprefix(_TAG)} {quote(str(node.value))}")
            return Broken(line)
        assert value is None or isinstance(value, str | int | float | bool)  # narrows for mypy
        return Scalar(line, value)
    issue(line, f"unsupported YAML tag {quote(str(node.tag))}")
    return Broken(line)


_KIND = {Scalar: "a scalar", Seq: "a list", Map: "a mapping", Broken: "an invalid value"}


def _describe(value: Value) -> str:
    if isinstance(value, Scalar):
        v = value.value
        return "null" if v is None else f"{type(v).__name__} {quote(str(v), 40)}"
    return _KIND[type(value)]


@dataclass
class Fields:
    """Typed access to located values; wrong types become issues, never exceptions."""

    file: str
    issues: list[PolicyIssue] = field(default_factory=list)
    #: The rule being checked, attached to every issue while set.
    rule_id: str | None = None

    def issue(self, line: int | None, path: str | None, message: str) -> None:
        self.issues.append(PolicyIssue(self.file, line, self.rule_id, path, message))

    def wrong_type(self, value: Value, path: str | None, expected: str) -> None:
        """Report `value` as not `expected`, unless it was already reported as broken."""
        if not isinstance(value, Broken):
            self.issue(value.line, path, f"expected {expected}, got {_describe(value)}")

    def mapping(
        self,
        value: Value,
        path: str | None,
        known: frozenset[str],
        unsupported: frozenset[str] = frozenset(),
    ) -> Map | None:
        """`value` as a mapping whose keys are all `known`; each other key is an issue."""
        if not isinstance(value, Map):
            self.wrong_type(value, path, "a mapping")
            return None
        for key, line in value.key_lines.items():
            where = f"{path}.{key}" if path else key
            if key in unsupported:
                self.issue(
                    line,
                    where,
                    f"{quote(key)} is not supported by this version "
                    "(ignoring it would loosen the policy)",
                )
            elif key not in known:
                expected = ", ".join(sorted(known))
                self.issue(line, where, f"unknown key {quote(key)} (expected one of: {expected})")
        return value

    def string(self, value: Value, path: str) -> str | None:
        if isinstance(value, Scalar) and isinstance(value.value, str):
            return value.value
        self.wrong_type(value, path, "a string")
        return None

    def boolean(self, value: Value, path: str) -> bool | None:
        if isinstance(value, Scalar) and isinstance(value.value, bool):
            return value.value
        self.wrong_type(value, path, "true or false")
        return None

    def choice(self, value: Value, path: str, choices: tuple[str, ...]) -> str | None:
        """A string that must be one of `choices`."""
        text = self.string(value, path)
        if text is None:
            return None
        if text not in choices:
            wanted = " or ".join(repr(c) for c in choices)
            self.issue(value.line, path, f"expected {wanted}, got {quote(text)}")
            return None
        return text

    def compiled_list(
        self,
        value: Value,
        path: str,
        compile_one: Callable[[str], _T],
        *,
        empty: str | None = "must not be empty (omit the field to match any)",
    ) -> list[tuple[Scalar, _T]] | None:
        """A list of strings, each compiled; a bad item is an issue, not fatal.

        An empty list is the issue `empty` unless that is None: in a rule, `hosts: []`
        would match nothing, which nobody means; omitting the field matches any.
        """
        if not isinstance(value, Seq):
            self.wrong_type(value, path, "a list")
            return None
        if not value.items and empty is not None:
            self.issue(value.line, path, empty)
            return None
        out: list[tuple[Scalar, _T]] = []
        for i, item in enumerate(value.items):
            text = self.string(item, f"{path}[{i}]")
            if text is None:
                continue
            assert isinstance(item, Scalar)  # string() checked it
            try:
                out.append((item, compile_one(text)))
            except ValueError as e:
                self.issue(item.line, f"{path}[{i}]", str(e))
        return out
