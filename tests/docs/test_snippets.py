"""Every policy the documentation shows loads with the real loader, every policy test file
it shows passes, and the walkthrough's files are the repository's example files.

A YAML block is a policy when it has `version: 1`; a rule (`- id: …`) or a `when:` mapping
is loaded inside a minimal policy; a block with `cases:` is a policy test file, run with
`authz-server test` beside the files its page saves. A block whose first line says it is
rejected, or fails, must fail.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from authz_server.core.errors import PolicyError
from authz_server.policy.load import load_policy_text
from tests.docs.pages import DOCS, Block, all_blocks, blocks, named_files
from tests.docs.workdir import FIRST_POLICY, environment, prepare

_WRAPPER = """\
version: 1
identity:
  trust_domains: [example.org]
admin:
  principals: ["spiffe://example.org/humans/*"]
rules:
"""
_SNIPPET_RULE = """\
- id: snippet
  principals: ["spiffe://example.org/ci/*"]
  effect: allow
"""


def _kind(block: Block) -> str | None:
    if block.lang != "yaml":
        return None
    text = block.text
    if re.search(r"^version:\s*1\s*$", text, re.MULTILINE):
        return "policy"
    if re.search(r"^cases:", text, re.MULTILINE):
        return "tests"
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#")).lstrip()
    if body.startswith("- id:"):
        return "rule"
    if body.startswith("when:"):
        return "when"
    return None


def _policy_text(block: Block, kind: str) -> str:
    if kind == "policy":
        return block.text
    rule = block.text if kind == "rule" else _SNIPPET_RULE + textwrap.indent(block.text, "  ")
    return _WRAPPER + textwrap.indent(rule, "  ")


POLICIES = [(b, k) for b in all_blocks() if (k := _kind(b)) in ("policy", "rule", "when")]
TEST_FILES = [b for b in all_blocks() if _kind(b) == "tests"]


def test_the_docs_show_policies_fragments_and_test_files() -> None:
    kinds = {kind for _, kind in POLICIES}
    assert kinds == {"policy", "rule", "when"}, kinds
    assert len(POLICIES) >= 15 and len(TEST_FILES) >= 3


@pytest.mark.parametrize(("block", "kind"), POLICIES, ids=[b.where for b, _ in POLICIES])
def test_policy_snippet_loads(block: Block, kind: str) -> None:
    text = _policy_text(block, kind)
    if block.expected_to_fail:
        with pytest.raises(PolicyError):
            load_policy_text(text, block.where)
        return
    try:
        load_policy_text(text, block.where)
    except PolicyError as error:
        pytest.fail(f"{block.where} ({kind}) does not load:\n" + "\n".join(map(str, error.issues)))


@pytest.mark.parametrize("block", TEST_FILES, ids=[b.where for b in TEST_FILES])
def test_policy_test_file_snippet_runs(block: Block, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = environment(prepare(block.page, workdir))
    name = block.file_name or f"snippet_{block.line}_test.yaml"
    (workdir / name).write_text(block.text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "authz_server", "test", name],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    expected = 1 if block.expected_to_fail else 0
    assert result.returncode == expected, f"{block.where}\n{result.stdout}{result.stderr}"
    assert re.search(r"^\d+ passed, \d+ failed$", result.stdout, re.MULTILINE), result.stdout


def test_the_walkthrough_files_are_the_example_files() -> None:
    """getting-started.md shows docs/examples/first-policy/ exactly, file for file."""
    shown = named_files("getting-started.md")
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in FIRST_POLICY.iterdir()}
    assert shown == on_disk


def test_yaml_fragments_are_recognised() -> None:
    """The kinds drive which snippets are loaded: spot-check them on known pages."""
    kinds = {b.line: _kind(b) for b in blocks("policy/conditions.md")}
    assert "when" in kinds.values() and "rule" in kinds.values()
    assert _kind(Block("x.md", 1, "yaml", "static_resources: {}\n", None)) is None
    assert (DOCS / "policy" / "conditions.md").is_file()
