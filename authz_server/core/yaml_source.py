"""YAML with line numbers, and typed field access that reports instead of raising.

PyYAML's `safe_load` loses line numbers, silently keeps the last of two duplicate keys
and expands aliases (billion laughs). Policy files go through `compose` instead: the
node tree becomes `Scalar` / `Seq` / `Map` values that remember their line, duplicate
keys and aliases are issues, and no input (binary garbage, deep nesting, odd tags)
raises anything but an issue.

Two readers, one result. The reference reader composes PyYAML's node tree in Python and
converts it, reporting every issue. It is slow and large for big policies (10,000 rules:
5 s and ~130 MB at its peak), so a document is first read by `_FastReader`, straight
from libyaml's parse events into values without a node tree (0.4 s, ~30 MB). The fast
reader handles only documents without any issue, explicit tags, anchors or aliases; on
anything else (a syntax error, a duplicate key, a `!!tag`, deep nesting) it gives up
and the reference reader reads the document again, so issues and their messages come
from one place. Both resolve tags with the same PyYAML resolver and construct scalars
with the same constructors; tests hold them to the same values and lines. libyaml is a
little more lenient than PyYAML's scanner (`[a?b]`, `|#`): such a document loads.

`Fields` is the schema layer's toolkit: each accessor checks one value's type and
records a `PolicyIssue` (file, line, rule id, field) when it is wrong, so that a loader
can report every problem of every file at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    Event,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from authz_server.core.errors import PolicyIssue, quote

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
    value = _read_fast(text)
    if value is _UNUSUAL:
        value = _read_reference(text, issue)
    elif value is None:
        issue(1, _EMPTY)
    return value, issues


_EMPTY = "file is empty (expected a mapping starting with 'version: 1')"


def _read_reference(text: str, issue: Callable[[int | None, str], None]) -> Value | None:
    """The document through PyYAML's Python composer: slow, and reports every issue."""
    loader: _NoAliasLoader | None = None
    try:
        loader = _NoAliasLoader(text)  # the reader already rejects unprintable characters
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(p for p in (e.context, e.problem) if p)
        issue(mark.line + 1 if mark else None, f"YAML syntax error: {problem}")
        return None
    except yaml.reader.ReaderError as e:
        reason = str(e).splitlines()[0]  # "unacceptable character #x0007: ..."
        issue(text.count("\n", 0, e.position) + 1, f"YAML syntax error: {reason}")
        return None
    except (yaml.YAMLError, RecursionError) as e:
        issue(None, f"YAML syntax error: {type(e).__name__}")
        return None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        issue(1, _EMPTY)
        return None
    return _convert(node, issue, 0)


class _Unusual(Exception):
    """The fast reader met something only the reference reader handles."""


#: `_read_fast`'s answer when the reference reader must read the document.
_UNUSUAL = Broken(0)
_STR_TAGS = (_TAG + "str", _TAG + "timestamp")
_CSafeLoader: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)
#: Tabs (libyaml accepts some that PyYAML refuses), a byte order mark inside the text,
#: and the Unicode line breaks.
_ODD_CHARACTERS = re.compile("[\t\ufeff\x85\u2028\u2029]")


def _read_fast(text: str) -> Value | None:
    """The document's value (None when empty) through libyaml, or `_UNUSUAL`."""
    if _CSafeLoader is None or _ODD_CHARACTERS.search(text):
        return _UNUSUAL  # no libyaml, or characters the two readers treat differently
    loader = _CSafeLoader(text)
    try:
        return _FastReader(loader).document()
    except Exception:  # any surprise, a syntax error included: the reference reader's job
        return _UNUSUAL
    finally:
        loader.dispose()


class _FastReader:
    """Values from parse events, for documents without issues; raises on anything else."""

    def __init__(self, loader: yaml.CSafeLoader) -> None:
        self._loader = loader
        self._constructor = SafeConstructor()

    def document(self) -> Value | None:
        loader = self._loader
        loader.get_event()  # StreamStartEvent
        if loader.check_event(StreamEndEvent):
            return None
        loader.get_event()  # DocumentStartEvent
        value = self._value(loader.get_event(), 0)
        loader.get_event()  # DocumentEndEvent
        if not loader.check_event(StreamEndEvent):
            raise _Unusual("more than one document")
        return value

    def _value(self, event: Event | None, depth: int) -> Value:
        if depth > MAX_DEPTH or not isinstance(event, NodeEvent) or event.anchor is not None:
            raise _Unusual("deep, an alias or an anchor")
        line = _line(event)
        loader = self._loader
        if isinstance(event, ScalarEvent):
            return Scalar(line, self._scalar(event))
        if event.tag is not None:  # type: ignore[attr-defined]  # collection starts have one
            raise _Unusual("explicit tag")
        if isinstance(event, SequenceStartEvent):
            items: list[Value] = []
            while not loader.check_event(SequenceEndEvent):
                items.append(self._value(loader.get_event(), depth + 1))
            loader.get_event()
            return Seq(line, tuple(items))
        if isinstance(event, MappingStartEvent):
            entries: dict[str, Value] = {}
            key_lines: dict[str, int] = {}
            while not loader.check_event(MappingEndEvent):
                key_event = loader.get_event()
                if not isinstance(key_event, ScalarEvent) or key_event.anchor is not None:
                    raise _Unusual("key")
                key = self._scalar(key_event)
                if not isinstance(key, str) or key in key_lines:
                    raise _Unusual("key")
                key_lines[key] = _line(key_event)
                entries[key] = self._value(loader.get_event(), depth + 1)
            loader.get_event()
            return Map(line, entries, key_lines)
        raise _Unusual(type(event).__name__)

    def _scalar(self, event: ScalarEvent) -> str | int | float | bool | None:
        if event.tag is not None or not (event.value or event.style):
            # An explicit tag; or an empty plain scalar, which the readers place differently.
            raise _Unusual("explicit tag or empty value")
        tag = self._loader.resolve(ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        if tag in _STR_TAGS:
            return event.value
        if tag not in _PLAIN_TAGS:
            raise _Unusual("tag")
        node = ScalarNode(tag, event.value, None, None, event.style)
        value = self._constructor.yaml_constructors[tag](self._constructor, node)
        if value is not None and not isinstance(value, str | int | float | bool):
            raise _Unusual("value")
        return value


def _line(event: Event) -> int:
    if event.start_mark is None:
        raise _Unusual("no mark")
    return event.start_mark.line + 1


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
