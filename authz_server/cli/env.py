"""`AUTHZ_*` environment variables as flag defaults, checked the way the flags are.

Every `--flag` of every command reads `AUTHZ_FLAG` (`--trust-bundle` → `AUTHZ_TRUST_BUNDLE`)
as its default, so a flag on the command line still wins and a required flag is satisfied
by its variable. Repeatable flags take a comma-separated list, switches 1/true/yes/on or
0/false/no/off. A value goes through its flag's own converter and choices; one they refuse
is a usage error naming the variable (`authz-server serve: error: AUTHZ_WORKERS='two':
expected an integer`, exit 2), reported only when the command that reads it runs and its
command line does not give the flag.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authz_server.core.errors import AuthzError
from authz_server.runtime.settings import env_name

__all__ = ["BadEnvironment", "apply_environment", "environment_error"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_EXPECTED: dict[object, str] = {int: "expected an integer", float: "expected a number"}


@dataclass(frozen=True)
class BadEnvironment:
    """A variable its flag refuses: the flag's default until `environment_error` reports it."""

    prog: str
    variable: str
    value: str
    problem: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r}: {self.problem}"


class _EnvironmentList(list[Any]):
    """A repeatable flag's default from the environment: the first value given on the
    command line replaces it instead of appending to it (argparse copies the default
    before appending)."""

    def __copy__(self) -> list[str]:
        return []


class _Refused(ValueError):
    """A value the flag's converter or choices refuse; the message says what was expected."""


def apply_environment(parser: argparse.ArgumentParser) -> None:
    """Give every `--flag` of `parser` its `AUTHZ_FLAG` environment value as default."""
    for action in parser._actions:  # argparse has no public iterator over its actions
        flags = [o for o in action.option_strings if o.startswith("--")]
        if not flags or isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        variable = env_name(max(flags, key=len))
        value = os.environ.get(variable)
        if value is None:
            continue
        try:
            action.default = _convert(action, value)
        except _Refused as refused:
            action.default = BadEnvironment(parser.prog, variable, value, str(refused))
        action.required = False


def environment_error(args: argparse.Namespace) -> str | None:
    """The usage error for a bad variable the parsed command would use, or None."""
    for value in vars(args).values():
        if isinstance(value, BadEnvironment):
            return f"{value.prog}: error: {value}"
    return None


def _convert(action: argparse.Action, text: str) -> object:
    if isinstance(action, argparse._StoreConstAction) and isinstance(action.const, bool):
        word = text.strip().lower()
        if word in _TRUE | _FALSE:
            return action.const if word in _TRUE else not action.const
        raise _Refused("expected 1, true, yes or on (or 0, false, no, off)")
    if isinstance(action, argparse._AppendAction):
        items = (item.strip() for item in text.split(","))
        return _EnvironmentList(_convert_one(action, item) for item in items if item)
    return _convert_one(action, text)


def _convert_one(action: argparse.Action, text: str) -> object:
    converter: Callable[[str], object] | None = action.type if callable(action.type) else None
    try:
        value = converter(text) if converter is not None else text
    except (argparse.ArgumentTypeError, AuthzError) as error:
        raise _Refused(str(error)) from None
    except (TypeError, ValueError):
        name = getattr(converter, "__name__", "")
        raise _Refused(_EXPECTED.get(converter) or f"invalid {name} value") from None
    if action.choices is not None and value not in action.choices:
        raise _Refused(f"expected one of: {', '.join(map(str, action.choices))}")
    return value
