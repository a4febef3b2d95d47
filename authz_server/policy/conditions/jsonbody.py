"""The request body as one strict JSON document, or the reason it cannot be judged
(docs/concepts/response-contract.md#body-integrity).

A body condition must judge the document the backend parses, not a different one. So
anything two JSON parsers could read differently is refused, and the body is then
"unavailable" (`body_unavailable`, fail closed):

- no body, or a partial one (`x-envoy-auth-partial-body` anything but `false`);
- a `content-type` other than `application/json` (parameters allowed, a charset only
  if it is UTF-8; `application/json-seq`, `text/plain` and repeated headers refused);
- bytes that are not UTF-8 (no BOM, no UTF-16 auto-detection), escapes that decode
  to lone surrogates, `NaN`/`Infinity` literals, trailing data;
- a duplicate key in any object at any depth (first-wins and last-wins parsers
  would disagree), also when the duplicate is spelled with escapes (`"\\u0061"`) or
  differs only in case (`amount` / `Amount`: case-insensitive deserialisers such as
  Go's `encoding/json` read them as one field).

Numbers keep their exact value: integers are `int`, everything else `Decimal`, so that
`1000.0000000000000001` is greater than 1000 (a float would round it down) and `1e400`
is a number rather than infinity. Comparisons with the policy's bounds are exact.
Integers longer than Python's digit limit (4300) are refused as unreadable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["BodyDocument", "JsonValue", "loads_strict", "read_json_body"]

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"

JsonValue = Any  # None | bool | int | Decimal | str | list[JsonValue] | dict[str, JsonValue]

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Unreadable(ValueError):
    """The body is not one unambiguous JSON document."""


@dataclass(frozen=True, slots=True)
class BodyDocument:
    """A parsed body, or `problem` saying why there is none."""

    value: JsonValue = None
    problem: str | None = None

    @property
    def available(self) -> bool:
        return self.problem is None


def read_json_body(headers: Mapping[str, str], body: bytes | None) -> BodyDocument:
    """Parse `body` strictly; never raises."""
    partial = headers.get(PARTIAL_BODY_HEADER)
    if partial is not None and partial.strip().lower() != "false":
        return BodyDocument(problem="body is partial (larger than Envoy's max_request_bytes)")
    if not body:
        return BodyDocument(problem="no body (is with_request_body set for this route?)")
    problem = content_type_problem(headers.get("content-type"))
    if problem is not None:
        return BodyDocument(problem=problem)
    try:
        return BodyDocument(loads_strict(body))
    except _Unreadable as error:
        return BodyDocument(problem=str(error))


def content_type_problem(value: str | None) -> str | None:
    """Why `value` is not `application/json` (with an optional UTF-8 charset), or None."""
    if value is None:
        return "no content-type (expected application/json)"
    media_type, _, parameters = value.partition(";")
    if media_type.strip().lower() != "application/json":
        return f"content-type {media_type.strip()[:60]!r} is not application/json"
    for parameter in parameters.split(";"):
        name, _, arg = parameter.partition("=")
        if name.strip().lower() == "charset" and arg.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return f"charset {arg.strip()[:20]!r} is not UTF-8"
    return None


def loads_strict(data: bytes) -> JsonValue:
    """One JSON document from UTF-8 bytes, refusing anything parsers could read differently."""
    try:
        text = data.decode("utf-8")  # strict: no BOM skipping, no UTF-16/32 guessing
    except UnicodeDecodeError as error:
        raise _Unreadable(f"body is not valid UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_float=_decimal,
            parse_int=_int,
            parse_constant=_constant,
        )
        if _SURROGATE_ESCAPE.search(text) is not None:
            _check_strings(value)
    except _Unreadable:
        raise
    except RecursionError:
        raise _Unreadable("body is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError
        raise _Unreadable(f"body is not valid JSON: {str(error)[:80]}") from None
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Unreadable(f"body has a duplicate key {key[:40]!r}")
            seen.add(key)
    if len({key.casefold() for key in result}) != len(result):
        # Case-insensitive deserialisers (Go's encoding/json, ASP.NET Core, a Jackson
        # option) read `amount` and `Amount` as one field, and take the last.
        folded: dict[str, str] = {}
        for key in result:
            other = folded.setdefault(key.casefold(), key)
            if other != key:
                raise _Unreadable(
                    f"body has keys that differ only in case: {other[:40]!r}, {key[:40]!r}"
                )
    return result


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover — the JSON scanner only passes numbers
        raise _Unreadable(f"invalid number {text[:40]!r}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits(): quadratic to convert
        raise _Unreadable(f"body has an integer of {len(text)} digits") from None


def _constant(text: str) -> Any:
    raise _Unreadable(f"{text} is not JSON")


def _check_strings(value: JsonValue) -> None:
    """Refuse strings holding lone surrogates (escaped `\\ud800`): not encodable as UTF-8."""
    if isinstance(value, str):
        _encodable(value)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _encodable(key)
            _check_strings(item)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Unreadable("body has a string with a lone surrogate escape") from None
