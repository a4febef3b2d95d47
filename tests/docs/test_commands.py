"""Every `authz-server` command the documentation shows runs, from a directory holding the
files its page asks the reader to save, and produces what the page says: the exit status
(`# exit N`, else 0) and the output printed below it.

Expected output is compared line by line; a line `...` stands for any number of lines and
`...` inside a line for any text. Output shown as a JSON object must be a part of the
JSON printed: every key shown has the value shown. Commands that need a running server
are listed in `NEEDS_A_SERVER`, with the reason; other programs (curl, envoy, make,
docker) are not run, except the file edits in `FILE_TOOLS` that set up the next command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.docs.pages import Command, commands, markdown_pages
from tests.docs.workdir import environment, prepare

#: authz-server commands the docs show but these tests cannot run, and why.
NEEDS_A_SERVER: dict[str, str] = {
    "serve": "runs until stopped; the e2e tests run it behind real Envoy",
    "approvals list": "talks to a running server's admin API",
    "approvals approve": "talks to a running server's admin API",
    "approvals reject": "talks to a running server's admin API",
    "revoke": "talks to a running server's admin API",
    "unrevoke": "talks to a running server's admin API",
    "demo": "starts Envoy, a server and a backend; tests/e2e run its tour",
}
#: Programs besides authz-server that are run: they only prepare files for the next command.
FILE_TOOLS = frozenset({"sed"})


def _runnable(command: Command) -> bool:
    if command.program == "authz-server":
        return command.subcommand not in NEEDS_A_SERVER
    return command.program in FILE_TOOLS


PAGES = [page for page in markdown_pages() if any(map(_runnable, commands(page)))]


def test_the_walkthrough_and_the_references_have_commands_that_run() -> None:
    """The mechanism is not vacuous: the pages with the most examples are among those run."""
    assert {"getting-started.md", "policy/reference.md", "operations/audit.md"} <= set(PAGES)


def test_every_server_command_in_the_docs_is_listed_with_a_reason() -> None:
    shown = {
        c.subcommand
        for page in markdown_pages()
        for c in commands(page)
        if c.program == "authz-server"
    }
    unused = set(NEEDS_A_SERVER) - shown
    assert not unused, f"NEEDS_A_SERVER lists commands no page shows: {sorted(unused)}"


def test_every_command_has_an_example_that_runs() -> None:
    """Each command of `authz-server --help` is shown in the docs, and run by this test
    unless it needs a running server (NEEDS_A_SERVER, with the reason)."""
    from authz_server.cli.main import build_parser

    [choices] = [a.choices for a in build_parser()._actions if isinstance(a.choices, dict)]
    run = {
        c.subcommand.split()[0]
        for page in PAGES
        for c in commands(page)
        if c.program == "authz-server" and _runnable(c)
    }
    needs_a_server = {name.split()[0] for name in NEEDS_A_SERVER}
    assert set(choices) - needs_a_server <= run, sorted(set(choices) - needs_a_server - run)


def test_commands_that_are_not_run_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands shown but not run (they need a server) still name only flags and
    arguments the program accepts: the real parser reads each one."""
    from authz_server.cli.main import build_parser

    for name in [n for n in os.environ if n.startswith("AUTHZ_")]:
        monkeypatch.delenv(name)
    shown = [
        c
        for page in markdown_pages()
        for c in commands(page)
        if c.program == "authz-server" and not _runnable(c)
    ]
    assert {c.subcommand for c in shown} >= {"serve", "revoke", "approvals approve"}
    for command in shown:
        try:
            build_parser().parse_args(command.argv[1:])
        except SystemExit:
            pytest.fail(f"{command.block.where}: $ {command.text}\nthe parser refuses it")


@pytest.mark.parametrize("page", PAGES)
def test_page_commands_do_what_the_page_says(page: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = environment(prepare(page, workdir))
    for command in commands(page):
        if not _runnable(command):
            continue
        result = subprocess.run(
            ["bash", "-c", command.text],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )
        where = f"{command.block.where}: $ {command.text}"
        assert result.returncode == command.exit_code, (
            f"{where}\nexit {result.returncode}, the page says {command.exit_code}\n{result.stdout}"
        )
        if command.output is not None:
            problem = output_problem(command.output, result.stdout)
            assert problem is None, f"{where}\n{problem}\n--- printed:\n{result.stdout}"


def output_problem(expected: str, actual: str) -> str | None:
    """None when `actual` is what `expected` shows, else what differs."""
    if expected.lstrip().startswith("{"):
        return _json_problem(json.loads(expected), actual)
    if _lines_match(expected.splitlines(), actual.rstrip("\n").splitlines()):
        return None
    return "the output is not what the page shows"


def _json_problem(expected: dict[str, object], actual: str) -> str | None:
    try:
        printed = json.loads(actual)
    except json.JSONDecodeError as error:
        return f"the page shows JSON, but the output is not JSON: {error}"
    differ = {
        k: (v, printed.get(k, "<missing>"))
        for k, v in expected.items()
        if printed.get(k, "<missing>") != v
    }
    return None if not differ else f"shown → printed: {differ}"


def _lines_match(expected: list[str], actual: list[str]) -> bool:
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(_lines_match(rest, actual[skip:]) for skip in range(len(actual) + 1))
    if not actual:
        return False
    pattern = ".*".join(re.escape(part) for part in head.rstrip().split("..."))
    return re.fullmatch(pattern, actual[0].rstrip()) is not None and _lines_match(rest, actual[1:])


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        ("ok: 3 rules, version ...", "ok: 3 rules, version 3d1cc12cbf1a", True),
        ("ok: 3 rules, version ...", "ok: 4 rules, version 3d1cc12cbf1a", False),
        ("a\n...\nd", "a\nb\nc\nd", True),
        ("a\n...\nd", "a\nb\nc", False),
        ("a\n...", "a", True),
        ("a", "a\nb", False),
        ('{"decision": "deny", "status": 403}', '{"decision": "deny", "status": 403, "rule": null}', True),
        ('{"decision": "deny", "status": 403}', '{"decision": "allow", "status": 200}', False),
    ],
    ids=["inline-wildcard", "inline-mismatch", "line-wildcard", "line-wildcard-missing-end",
         "trailing-wildcard", "extra-line", "json-subset", "json-differs"],
)  # fmt: skip
def test_output_comparison(expected: str, actual: str, matches: bool) -> None:
    assert (output_problem(expected, actual) is None) is matches
