"""`--help` of every command: each option explained with its default, required ones marked,
the AUTHZ_* naming rule shown; unknown flags answered with the subcommand's own usage; no
citation of documents that are not in the repository."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz_server.cli.main import build_parser, main
from authz_server.cli.parser import shows_default, walk_parsers
from authz_server.tools import lint_envoy

ROOT = Path(__file__).resolve().parents[2]
#: Citations of documents that are not in the repository (spelled apart, so that this
#: file does not cite them either).
FORBIDDEN = ("SPEC" + " §", "PERF" + "-NOTES")


@pytest.fixture(autouse=True)
def no_authz_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults as documented, not as this machine's AUTHZ_* variables would set them."""
    for name in list(os.environ):
        if name.startswith("AUTHZ_"):
            monkeypatch.delenv(name)


def _parsers() -> Iterator[argparse.ArgumentParser]:
    yield from walk_parsers(build_parser())


def _prog(parser: argparse.ArgumentParser) -> str:
    return parser.prog.removeprefix("authz-server").strip() or "(top level)"


def _documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if not isinstance(
            action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction
        )
    ]


PROGS = [_prog(p) for p in _parsers()]


def _parser(prog: str) -> argparse.ArgumentParser:
    [parser] = [p for p in _parsers() if _prog(p) == prog]
    return parser


@pytest.mark.parametrize("prog", PROGS)
def test_every_option_is_explained_with_its_default(prog: str) -> None:
    """Each option and argument has help; a required option says so, and an option with a
    default shows it (switches are off unless given, repeatable flags empty)."""
    parser = _parser(prog)
    formatter = parser._get_formatter()
    problems: list[str] = []
    for action in _documented(parser):
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help == argparse.SUPPRESS:
            problems.append(f"{name}: no help text")
            continue
        text = formatter._expand_help(action)
        if action.required and action.option_strings and "(required)" not in text:
            problems.append(f"{name}: required, but its help does not say so: {text!r}")
        if action.default == "" and "(default: empty)" not in text:
            problems.append(f"{name}: default '' not shown: {text!r}")
        elif shows_default(action) and f"(default: {action.default})" not in text:
            problems.append(f"{name}: default {action.default!r} not shown: {text!r}")
    assert not problems
    parser.format_help()  # renders without error


def test_the_listen_default_is_documented_as_plaintext_on_every_interface() -> None:
    """`serve --help` tells where the Check port listens and that it is plaintext."""
    text = " ".join(_parser("serve").format_help().split())
    assert (
        "plaintext unless --tls-cert/--tls-key or --tls-workload-api (default: 0.0.0.0:9191)"
        in text
    )
    assert "--policy POLICY policy file or directory (reloaded when it changes) (required)" in text


@pytest.mark.parametrize("prog", PROGS)
def test_every_command_with_flags_names_its_environment_variables(prog: str) -> None:
    """The help of a command with flags shows the AUTHZ_* naming rule on one of its flags."""
    parser = _parser(prog)
    flags = [o for a in _documented(parser) for o in a.option_strings if o.startswith("--")]
    text = " ".join(parser.format_help().split())
    if not flags:
        assert "AUTHZ_* environment variable" not in text
        return
    assert "Every flag can also be set with an AUTHZ_* environment variable" in text
    assert "in upper case with '-' as '_'" in text
    example = text.split("'-' as '_' (", 1)[1].split(")", 1)[0]
    flag, variable = example.split(" → ")
    assert flag in flags
    assert variable == "AUTHZ_" + flag[2:].upper().replace("-", "_")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(
            ["check", "--policy", "p", "--method", "GET", "--path", "/", "--bogus"], id="check"
        ),
        pytest.param(["validate", "policy.yaml", "--bogus"], id="validate"),
        pytest.param(["serve", "--policy", "p", "--bogus", "1"], id="serve"),
        pytest.param(["test", "tests", "--bogus"], id="test"),
        pytest.param(["lint-envoy", "envoy.yaml", "--bogus"], id="lint-envoy"),
        pytest.param(["audit", "verify", "audit.jsonl", "--bogus"], id="audit-verify"),
        pytest.param(["replay", "--policy", "p", "a.jsonl", "--bogus"], id="replay"),
        pytest.param(["approvals", "list", "--bogus"], id="approvals-list"),
        pytest.param(
            ["revoke", "spiffe://td/x", "--ttl", "1h", "--reason", "r", "--bogus"], id="revoke"
        ),
    ],
)
def test_an_unknown_flag_prints_the_subcommand_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The usage shown is the one of the command the flag was given to, exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    command = " ".join(a for a in argv[:2] if a in {"audit", "verify", "approvals", "list"})
    command = command or argv[0]
    assert err.startswith(f"usage: authz-server {command} ["), err
    assert f"authz-server {command}: error: unrecognized arguments: --bogus" in err


def _help_texts() -> Iterator[tuple[str, str]]:
    for parser in _parsers():
        yield parser.prog, parser.format_help()
    yield "python -m authz_server.tools.lint_envoy", _standalone_help(lint_envoy.main)


def _standalone_help(entry: object) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        entry(["--help"])  # type: ignore[operator]
    return out.getvalue()


def test_no_user_facing_text_cites_documents_not_in_the_repository() -> None:
    """README.md and every --help text state facts instead of citing absent documents."""
    found = [
        f"{where}: {marker}"
        for where, text in [("README.md", (ROOT / "README.md").read_text()), *_help_texts()]
        for marker in FORBIDDEN
        if marker in text
    ]
    assert not found
