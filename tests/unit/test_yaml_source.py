"""The two YAML readers: the fast one agrees with the reference one, or hands over to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.core import yaml_source
from authz_server.core.errors import PolicyIssue
from authz_server.core.yaml_source import Value, parse_document
from bench.policies import generate_rules, policy_yaml

ROOT = Path(__file__).resolve().parents[3]


def _reference(text: str) -> tuple[Value | None, list[str]]:
    issues: list[str] = []
    value = yaml_source._read_reference(text, lambda line, message: issues.append(message))
    return value, issues


def _same(text: str) -> None:
    fast = yaml_source._read_fast(text)
    assert fast is not yaml_source._UNUSUAL, "the fast reader gave up on a clean document"
    assert (fast, []) == _reference(text)


PLAIN_DOCUMENTS = [
    pytest.param("version: 1\n", id="one-key"),
    pytest.param("a: 1\nb: -2\nc: 0x1f\nd: 1_000\ne: 0o17\n", id="ints"),
    pytest.param("a: 1.5\nb: -.5e3\nc: 1e10\n", id="floats"),
    pytest.param("a: true\nb: False\nc: yes\nd: off\ne: ~\nf: null\n", id="bools-and-nulls"),
    pytest.param("d: 2024-01-01\nt: 2024-01-01T10:00:00Z\n", id="timestamps-stay-text"),
    pytest.param(
        "a: 'single ''quoted'''\nb: \"double \\\"q\\\" \\t \\u00fc \\x41 \\n\"\nc: plain text\n",
        id="quoting-and-escapes",
    ),
    pytest.param("a: |\n  line one\n  line two\nb: >-\n  folded\n  text\n\n  para\n", id="blocks"),
    pytest.param("a: [1, 'two', {three: 3}, [4]]\nb: {x: [], y: {}}\n", id="flow"),
    pytest.param("- a\n- - nested\n  - list\n- k: v\n  k2: v2\n", id="block-sequences"),
    pytest.param("---\na: 1\n...\n", id="explicit-document-markers"),
    pytest.param("# comment\na: 1 # trailing\n\n\nb:   2\n", id="comments-and-blank-lines"),
    pytest.param("? complex\n: value\n'quoted key': 1\n2024-01-01: date-key\n", id="keys"),
    pytest.param("ünïcødé: 'ü€😀'\n", id="unicode"),
    pytest.param("a: 'multi\n  line\n\n  flow'\n", id="multiline-quoted"),
    pytest.param("just a string\n", id="scalar-document"),
    pytest.param("[" * 33 + "]" * 33 + "\n", id="nesting-at-the-limit"),
    pytest.param(policy_yaml(generate_rules(40, conditions=True)), id="bench-policy"),
    *(
        pytest.param(path.read_text(encoding="utf-8"), id=path.name)
        for path in sorted((ROOT / "examples").glob("*/*.yaml"))
    ),
]


@pytest.mark.parametrize("text", PLAIN_DOCUMENTS)
def test_fast_reader_gives_the_reference_values_and_lines(text: str) -> None:
    """On clean documents the fast reader returns exactly what the reference reader does."""
    _same(text)


UNUSUAL_DOCUMENTS = [
    pytest.param("a: &x 1\nb: *x\n", id="alias"),
    pytest.param("a: &x 1\n", id="anchor"),
    pytest.param("a: 1\na: 2\n", id="duplicate-key"),
    pytest.param("1: a\n", id="int-key"),
    pytest.param("[a]: b\n", id="collection-key"),
    pytest.param("a: !!str 1\nb: !!int '7'\nc: !!float 1\nd: !!bool 'true'\n", id="explicit-tags"),
    pytest.param("a: ! x\nb: !\n", id="non-specific-tag"),
    pytest.param("a: !custom x\n", id="custom-tag"),
    pytest.param("a: !!python/object:os.system x\n", id="python-tag"),
    pytest.param("a: !!set {x}\n", id="set-tag"),
    pytest.param("a: !!int abc\n", id="bad-explicit-int"),
    pytest.param("<<: {a: 1}\n", id="merge-key"),
    pytest.param("[" * 34 + "]" * 34 + "\n", id="too-deep"),
    pytest.param("a: [\n", id="syntax-error"),
    pytest.param("a: 1\n---\nb: 2\n", id="two-documents"),
    pytest.param("a: \x07\n", id="control-character"),
    pytest.param("a: 1\u2028b: 2\n", id="unicode-line-break"),
    pytest.param("a: \ufeff\n", id="inner-byte-order-mark"),
    pytest.param("a: 1\t\n", id="tab"),
    pytest.param("a:\n", id="empty-value"),
    pytest.param("? a", id="empty-value-of-complex-key"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("text", UNUSUAL_DOCUMENTS)
def test_anything_unusual_goes_to_the_reference_reader(text: str) -> None:
    """Issues, aliases and anchors are the reference reader's: same values, same messages."""
    fast = yaml_source._read_fast(text)
    if text:
        assert fast is yaml_source._UNUSUAL
    value, issues = parse_document(text.encode(), "f.yaml")
    reference, messages = _reference(text)
    assert value == reference
    assert [i.message for i in issues] == messages
    assert all(isinstance(i, PolicyIssue) for i in issues)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
_keys = st.text(min_size=1, max_size=12)
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(_documents, st.sampled_from([None, True, False]), st.sampled_from(["'", '"', None]))
def test_fast_reader_agrees_on_generated_documents(
    document: Any, flow: bool | None, style: str | None
) -> None:
    """Whatever PyYAML writes, in any style, both readers read the same values and lines."""
    text = yaml.safe_dump(
        document, default_flow_style=flow, default_style=style, allow_unicode=True
    )
    fast = yaml_source._read_fast(text)
    reference, issues = _reference(text)
    if fast is yaml_source._UNUSUAL:
        return  # explicit tags (`!!int '1'` in quoted styles), tabs: the reference reader's
    assert not issues
    assert fast == reference
