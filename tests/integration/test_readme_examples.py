"""Every `authz-server` example in README.md's fenced code blocks runs as printed.

An example is a line of a fenced block that starts with `authz-server` (or `$ authz-server`)
plus its `\\`-continued lines. The examples of one block run in order, verbatim through
bash, in one directory: the repository root as a directory of links to the checkout's
entries, so that files an example writes (`--out certs`) stay out of the working tree and
the next example of the walkthrough finds them. `authz-server` is this interpreter's
`python -m authz_server`, first on PATH; TMPDIR points into the test's own directory. What
the README says an example does is asserted, read from a `# → ...` comment at the end of
its last line or on the line after:

    # → exit 0                                          exit status only
    # → exit 3: deny, outside_schedule (rule R)         check: status, decision, reason, rule
    # → exit 0: `ok: 14 rules`                          the output contains each `…` text

With no comment, the example must exit 0. Lines shown right below a `$ authz-server`
command are its output: each must appear in what it prints. Blocks fenced as ```text are
synopses with placeholders, not examples. Commands that need a running server are listed
in EXCLUDED with the reason and skipped. The README shows a walkthrough, not every
command: tests/docs/test_commands.py runs the documentation's examples of the others.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

#: Commands whose README examples are not run here, and why.
EXCLUDED = {
    "serve": "runs a server until it is stopped (tests/integration/test_cli.py starts one)",
    "demo": "starts Envoy and a server and runs until Ctrl-C (tests/e2e cover the tour)",
    "approvals": "needs a running server's admin API and admin credentials",
    "revoke": "needs a running server's admin API and admin credentials",
    "unrevoke": "needs a running server's admin API and admin credentials",
}

_FENCE = re.compile(r"^```(\S*)\s*$")
_COMMAND = re.compile(r"^(\$ )?authz-server(\s|$)")
_OUTCOME = re.compile(r"\s*# → (?P<text>.*)$")
_EXIT = re.compile(r"exit (?P<code>\d+)(?:: (?P<detail>.+))?$")
_DECISION = re.compile(
    r"(?P<decision>allow|deny), (?P<reason>[a-z_]+)(?: \(rule (?P<rule>[a-z0-9][a-z0-9._-]*)\))?$"
)
_QUOTED = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Example:
    line: int
    command: str
    outcome: str | None
    output: tuple[str, ...]
    #: The line of the opening fence of the block it is in: examples of one block share
    #: a directory and run in order.
    block: int = 0

    @property
    def subcommand(self) -> str:
        words = shlex.split(self.command, comments=True)
        return words[1] if len(words) > 1 else ""

    @property
    def name(self) -> str:
        return f"line{self.line}-{self.subcommand}"


def readme_examples(text: str) -> list[Example]:
    lines = text.splitlines()
    examples: list[Example] = []
    fence: str | None = None
    fence_line = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if (match := _FENCE.match(line)) is not None:
            fence = None if fence is not None else match.group(1)
            fence_line = i + 1
            i += 1
            continue
        if fence is None or fence == "text" or not _COMMAND.match(line):
            i += 1
            continue
        start, prompt = i, line.startswith("$ ")
        parts = [line.removeprefix("$ ")]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        i += 1
        outcome = None
        if (found := _OUTCOME.search(parts[-1])) is not None:
            outcome = found.group("text")
            parts[-1] = parts[-1][: found.start()]
        elif i < len(lines) and (found := _OUTCOME.match(lines[i])) is not None:
            outcome = found.group("text")
            i += 1
        output: list[str] = []
        while prompt and i < len(lines) and not lines[i].startswith(("$ ", "```", "#")):
            output.append(lines[i].strip())
            i += 1
        command = "\n".join(parts)
        examples.append(
            Example(start + 1, command, outcome, tuple(o for o in output if o), fence_line)
        )
    return examples


EXAMPLES = readme_examples(README.read_text(encoding="utf-8"))
RUNNABLE = [e for e in EXAMPLES if e.subcommand not in EXCLUDED]
#: Runnable examples by block, in README order.
BLOCKS: dict[int, list[Example]] = {}
for _example in RUNNABLE:
    BLOCKS.setdefault(_example.block, []).append(_example)


def _checkout(tmp_path: Path) -> Path:
    """The repository root as seen by an example: a directory of links to its entries, so
    that paths resolve as in the checkout while files an example writes (`--out
    envoy.yaml`, `--out certs`) land in the test's directory, not in the working tree.
    Only the repository's own entries are linked: a `certs/` or `envoy.yaml` someone made
    by following the README in the checkout is neither read nor overwritten."""
    root = tmp_path / "checkout"
    root.mkdir()
    tracked = _tracked_entries()
    for entry in ROOT.iterdir():
        if not entry.name.startswith(".") and entry.name in tracked:
            (root / entry.name).symlink_to(entry)
    return root


def _tracked_entries() -> set[str]:
    """The top-level names git tracks (every name, outside a git checkout)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        return {entry.name for entry in ROOT.iterdir()}
    return {name.split("/", 1)[0] for name in listed.stdout.decode().split("\0") if name}


def _program(tmp_path: Path) -> Path:
    """A bin directory whose `authz-server` is this interpreter's `python -m authz_server`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "authz-server"
    program.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m authz_server "$@"\n')
    program.chmod(0o755)
    return bin_dir


def _run(example: Example, checkout: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    tmp = checkout.parent
    return subprocess.run(
        ["bash", "-c", example.command],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp), "HOME": str(tmp)},
        check=False,
    )


def _name(examples: list[Example]) -> str:
    return f"line{examples[0].line}-" + "-".join(dict.fromkeys(e.subcommand for e in examples))


@pytest.mark.parametrize("examples", [pytest.param(b, id=_name(b)) for b in BLOCKS.values()])
def test_readme_examples_do_what_the_readme_says(examples: list[Example], tmp_path: Path) -> None:
    checkout, bin_dir = _checkout(tmp_path), _program(tmp_path)
    for example in examples:
        _check(example, _run(example, checkout, bin_dir))


def _check(example: Example, result: subprocess.CompletedProcess[str]) -> None:
    shown = result.stdout + result.stderr
    assert "Traceback" not in shown, shown
    code, detail = 0, None
    if example.outcome is not None:
        parsed = _EXIT.match(example.outcome)
        assert parsed, f"README line {example.line}: unreadable outcome {example.outcome!r}"
        code, detail = int(parsed.group("code")), parsed.group("detail")
    assert result.returncode == code, f"README line {example.line}:\n{shown}"
    if detail is not None and example.subcommand == "check":
        expected = _DECISION.match(detail)
        assert expected, f"README line {example.line}: unreadable decision {detail!r}"
        decision = json.loads(result.stdout)
        assert decision["decision"] == expected.group("decision"), shown
        assert decision["reason"] == expected.group("reason"), shown
        if expected.group("rule") is not None:
            assert decision["rule"] == expected.group("rule"), shown
    elif detail is not None:
        fragments = _QUOTED.findall(detail)
        assert fragments, f"README line {example.line}: quote the expected output in `…`"
        for fragment in fragments:
            assert fragment in shown, f"README line {example.line}: {fragment!r} not in\n{shown}"
    for line in example.output:
        assert line in shown, f"README line {example.line}: {line!r} not printed:\n{shown}"


def test_the_walkthrough_runs_from_policy_to_envoy() -> None:
    """The mechanism is not vacuous: the README's walkthrough commands are all run here."""
    shown = {e.subcommand for e in RUNNABLE}
    assert {"validate", "check", "test", "dev-certs", "render-envoy", "lint-envoy"} <= shown
    assert set(EXCLUDED) <= _commands(), "EXCLUDED names a command that is gone"


def _commands() -> set[str]:
    from authz_server.cli.main import build_parser

    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(commands.choices)


def test_readme_parser_reads_commands_outcomes_and_output() -> None:
    """The extraction rules on a small sample: continuations, both comment places, output."""
    sample = """\
```sh
authz-server check --policy p \\
  --method GET --path /x
# → exit 3: deny, no_matching_rule
authz-server test t   # → exit 0: `0 failed`
```
```
$ authz-server validate bad.yaml   # → exit 1
policy rejected (1 error(s)):
  bad.yaml:3: oops
```
```text
authz-server serve --policy PATH [--listen ADDR]
```
"""
    assert readme_examples(sample) == [
        Example(2, "authz-server check --policy p \\\n  --method GET --path /x",
                "exit 3: deny, no_matching_rule", (), block=1),
        Example(5, "authz-server test t", "exit 0: `0 failed`", (), block=1),
        Example(8, "authz-server validate bad.yaml", "exit 1",
                ("policy rejected (1 error(s)):", "bad.yaml:3: oops"), block=7),
    ]  # fmt: skip
