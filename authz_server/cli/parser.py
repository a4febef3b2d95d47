"""The argparse pieces every `authz-server` command shares: help layout and usage errors.

- `--help` shows each option's default and marks required options, so nobody has to read
  the source to learn that `serve --listen` is plaintext on `0.0.0.0:9191`;
- an unknown flag is reported with the usage of the (sub)command it was given to, not the
  top-level one (argparse hands unknown arguments up to the top-level parser otherwise);
- every command's help ends with how its flags map to `AUTHZ_*` environment variables.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

from authz_server.runtime.settings import env_name

__all__ = ["CommandParser", "HelpFormatter", "environment_epilog", "walk_parsers"]


class HelpFormatter(argparse.HelpFormatter):
    """Shows `(required)` or `(default: X)` after each option's help, and keeps the
    paragraphs and indented example lines of descriptions and epilogs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings:
            return text
        if action.required:
            return f"{text} (required)"
        if action.default == "" and action.nargs != 0:
            return f"{text} (default: empty)"
        if shows_default(action):
            return f"{text} (default: %(default)s)"
        return text

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Never break a flag such as --tls-cert at its hyphen.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        for paragraph in text.split("\n"):
            if not paragraph.strip() or paragraph.startswith(" "):
                lines.append(indent + paragraph)  # blank lines and examples stay as written
            else:
                lines.extend(
                    textwrap.wrap(paragraph, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n".join(lines)


def shows_default(action: argparse.Action) -> bool:
    """Whether `--help` shows the action's default value: not for switches (off unless
    given), empty repeatable flags, or options without one (an empty string is shown as
    `empty`)."""
    default = action.default
    if default is None or default is argparse.SUPPRESS or action.nargs == 0:
        return False
    return not (isinstance(default, list | str) and not default)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser with `HelpFormatter` whose subcommands report their own usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A subcommand gets every argument after its name, so anything left over is an
        # error of this subcommand, reported with its usage (`parse_args` would report it
        # with the top-level usage). No caller relies on leftovers.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def walk_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every subcommand parser below it, depth first."""
    yield parser
    for action in parser._actions:  # argparse has no public iterator over its actions
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from walk_parsers(sub)


def environment_epilog(parser: argparse.ArgumentParser) -> str | None:
    """How this command's flags map to environment variables, with one of its own flags
    as the example; None for a command without flags."""
    flags = [
        max(action.option_strings, key=len)
        for action in parser._actions
        if any(o.startswith("--") for o in action.option_strings)
        and not isinstance(action, argparse._HelpAction | argparse._VersionAction)
    ]
    if not flags:
        return None
    example = max(flags, key=lambda f: ("-" in f[2:], len(f)))
    return (
        "Every flag can also be set with an AUTHZ_* environment variable: AUTHZ_ and the "
        f"flag's name in upper case with '-' as '_' ({example} → {env_name(example)}). "
        "A flag given on the command line wins; repeatable flags take a comma-separated "
        "list, switches 1, true, yes or on."
    )
