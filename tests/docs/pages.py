"""The documentation's Markdown pages as data: fenced blocks, the files a page asks the
reader to save, and the commands its console and shell blocks show.

Conventions the pages follow, so that tests can run what they show:

- a fenced block right after a line ending in a file name and a colon (`` `policy.yaml`: ``)
  is that file's content; the page's commands run in a directory holding those files;
- a block whose first line is a comment saying the content "is rejected" or "fails" is an
  example of an error: it must fail;
- in ```console blocks, `$ ` starts a command (a trailing `\\` continues it on the next
  line) and the lines up to the next command are its expected output; in ```sh blocks
  every line is a command; a trailing `# exit N` gives the expected exit status (0
  otherwise).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_FILE_NAME = re.compile(r"`([\w./-]+\.(?:ya?ml|json))`:\s*$")
_EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")
_FAILING = re.compile(r"^#.*\b(rejected|fails)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str  # relative to docs/, e.g. "policy/reference.md"
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    file_name: str | None  # the file the page says this block is

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    @property
    def expected_to_fail(self) -> bool:
        first = self.text.lstrip().splitlines()[0] if self.text.strip() else ""
        return _FAILING.match(first) is not None


@dataclass(frozen=True)
class Command:
    """One command of a console or shell block, with what the page says it produces."""

    block: Block
    text: str  # continuation lines joined, the `# exit N` comment removed
    exit_code: int
    output: str | None  # None: the page shows no output

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def program(self) -> str:
        argv = self.argv
        return argv[0] if argv else ""

    @property
    def subcommand(self) -> str:
        """`audit verify`, `check`, …: the authz-server command, without options."""
        words = []
        for word in self.argv[1:]:
            if word.startswith("-"):
                break
            words.append(word)
        # Only `approvals` and `audit` have subcommands of their own.
        keep = 2 if words and words[0] in ("approvals", "audit") else 1
        return " ".join(words[:keep])


def markdown_pages() -> list[str]:
    """Every hand-written page, relative to docs/ (generated pages exist only in builds)."""
    return sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


def blocks(page: str) -> list[Block]:
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, lang = opening.group(1), opening.group(2)
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        found.append(
            Block(page, index + 1, lang, "\n".join(body) + "\n", _named_file(lines, index))
        )
        index = end + 1
    return found


def _named_file(lines: list[str], fence: int) -> str | None:
    before = fence - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    if before < 0:
        return None
    match = _FILE_NAME.search(lines[before])
    return match.group(1) if match else None


def all_blocks() -> Iterator[Block]:
    for page in markdown_pages():
        yield from blocks(page)


def named_files(page: str) -> dict[str, str]:
    """The files a page asks the reader to save: name → content."""
    files: dict[str, str] = {}
    for block in blocks(page):
        if block.file_name is not None:
            assert block.file_name not in files, f"{block.where}: {block.file_name} saved twice"
            files[block.file_name] = block.text
    return files


def commands(page: str) -> list[Command]:
    found: list[Command] = []
    for block in blocks(page):
        if block.lang == "console":
            found.extend(_console_commands(block))
        elif block.lang in ("sh", "shell", "bash"):
            found.extend(_shell_commands(block))
    return found


def _joined(lines: list[str], start: int) -> tuple[str, int]:
    """The command starting at `lines[start]` with its `\\` continuations, and the index
    after it."""
    parts = [lines[start]]
    index = start
    while parts[-1].rstrip().endswith("\\") and index + 1 < len(lines):
        parts[-1] = parts[-1].rstrip()[:-1]
        index += 1
        parts.append(lines[index].strip())
    return " ".join(part.strip() for part in parts), index + 1


def _command(block: Block, text: str, output: str | None) -> Command:
    match = _EXIT.search(text)
    exit_code = int(match.group(1)) if match else 0
    if match:
        text = text[: match.start()].rstrip()
    return Command(block, text, exit_code, output)


def _console_commands(block: Block) -> Iterator[Command]:
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith("$ "):
            index += 1
            continue
        text, index = _joined(lines, index)
        start = index
        while index < len(lines) and not lines[index].startswith("$ "):
            index += 1
        output = "\n".join(lines[start:index]).strip("\n")
        yield _command(block, text.removeprefix("$ ").strip(), output or None)


def _shell_commands(block: Block) -> Iterator[Command]:
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].strip() or lines[index].lstrip().startswith("#"):
            index += 1
            continue
        text, index = _joined(lines, index)
        yield _command(block, text.strip(), None)
