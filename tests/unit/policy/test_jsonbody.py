"""Body integrity (docs/concepts/response-contract.md#body-integrity): the server judges exactly the
document the backend parses, or none."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.policy.conditions.jsonbody import content_type_problem, read_json_body

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        pytest.param(JSON, None, "no body (is with_request_body set for this route?)", id="absent"),
        pytest.param(JSON, b"", "no body (is with_request_body set for this route?)", id="empty"),
        pytest.param({**JSON, "x-envoy-auth-partial-body": "true"}, b"{}", "body is partial (larger than Envoy's max_request_bytes)", id="partial"),
        pytest.param({**JSON, "x-envoy-auth-partial-body": "false,true"}, b"{}", "body is partial (larger than Envoy's max_request_bytes)", id="partial-repeated-header"),
        pytest.param({}, b"{}", "no content-type (expected application/json)", id="no-content-type"),
        pytest.param({"content-type": "text/plain"}, b"{}", "content-type 'text/plain' is not application/json", id="text-plain"),
        pytest.param({"content-type": "application/json-seq"}, b"{}", "content-type 'application/json-seq' is not application/json", id="json-seq"),
        pytest.param({"content-type": "application/json,text/plain"}, b"{}", "content-type 'application/json,text/plain' is not application/json", id="repeated-content-type"),
        pytest.param({"content-type": "application/json; charset=utf-16"}, b"{}", "charset 'utf-16' is not UTF-8", id="utf16-charset"),
        pytest.param(JSON, b'{"a": "\xff"}', "body is not valid UTF-8 (byte 7)", id="invalid-utf8"),
        pytest.param(JSON, b"\xef\xbb\xbf{}", "body is not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)", id="bom"),
        pytest.param(JSON, '{"a": 1}'.encode("utf-16"), "body is not valid UTF-8 (byte 0)", id="utf16-bytes"),
        pytest.param(JSON, b'{"a": 1, "a": 2}', "body has a duplicate key 'a'", id="duplicate-top"),
        pytest.param(JSON, b'{"x": [{"b": {"c": 1, "c": 1}}]}', "body has a duplicate key 'c'", id="duplicate-deep"),
        pytest.param(JSON, b'{"name": "a", "n\\u0061me": "b"}', "body has a duplicate key 'name'", id="duplicate-escaped"),
        pytest.param(JSON, b'{"amount": 5, "Amount": 100000}', "body has keys that differ only in case: 'amount', 'Amount'", id="case-variant"),
        pytest.param(JSON, b'{"x": {"K": 1, "\\u212a": 2}}', "body has keys that differ only in case: 'K', '\u212a'", id="kelvin-sign"),
        pytest.param(JSON, b'{"a": NaN}', "NaN is not JSON", id="nan"),
        pytest.param(JSON, b'{"a": -Infinity}', "-Infinity is not JSON", id="minus-infinity"),
        pytest.param(JSON, b'{"a": "\\ud800"}', "body has a string with a lone surrogate escape", id="lone-surrogate"),
        pytest.param(JSON, b'{"\\udc00": 1}', "body has a string with a lone surrogate escape", id="lone-surrogate-key"),
        pytest.param(JSON, b'{"a": 1} {"a": 2}', "body is not valid JSON: Extra data: line 1 column 10 (char 9)", id="two-documents"),
        pytest.param(JSON, b"{'a': 1}", "body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", id="single-quotes"),
        pytest.param(JSON, b"[" * 100_000 + b"]" * 100_000, "body is nested too deeply", id="deep-nesting"),
        pytest.param(JSON, b'{"a": ' + b"9" * 5000 + b"}", "body has an integer of 5000 digits", id="huge-integer"),
    ],
)  # fmt: skip
def test_unavailable(headers: dict[str, str], body: bytes | None, problem: str) -> None:
    """Each way a body can be read differently by another parser makes it unavailable."""
    document = read_json_body(headers, body)
    assert not document.available
    assert document.problem == problem


@pytest.mark.parametrize(
    ("headers", "body", "value"),
    [
        pytest.param(JSON, b'{"a": {"b": [1, "x", null, true]}}', {"a": {"b": [1, "x", None, True]}}, id="nested"),
        pytest.param({"content-type": "Application/JSON; charset=UTF-8"}, b"[]", [], id="charset-utf8"),
        pytest.param({**JSON, "x-envoy-auth-partial-body": "false"}, b'"s"', "s", id="not-partial"),
        pytest.param(JSON, b'{"e": "\\ud83d\\ude00"}', {"e": "\U0001f600"}, id="surrogate-pair"),
        pytest.param(JSON, b' {"a": 1}\n', {"a": 1}, id="whitespace"),
    ],
)  # fmt: skip
def test_available(headers: dict[str, str], body: bytes, value: object) -> None:
    """Plain, unambiguous JSON parses to the expected value."""
    document = read_json_body(headers, body)
    assert document.problem is None
    assert document.value == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param(b"1e3", Decimal(1000), id="exponent"),
        pytest.param(b"1000.0000000000000001", Decimal("1000.0000000000000001"), id="beyond-float"),
        pytest.param(b"1e400", Decimal("1e400"), id="beyond-float-range"),
        pytest.param(
            b"123456789012345678901234567890", 123456789012345678901234567890, id="big-int"
        ),
        pytest.param(b"-0", 0, id="minus-zero"),
    ],
)
def test_numbers_are_exact(text: bytes, value: object) -> None:
    """Numbers keep the exact value written: no rounding to a float, no infinity."""
    parsed = read_json_body(JSON, text).value
    assert parsed == value
    assert type(parsed) is type(value)


def test_exact_numbers_stay_above_a_bound() -> None:
    """1000.0000000000000001 is more than 1000 (a float parser would say equal)."""
    assert read_json_body(JSON, b"1000.0000000000000001").value > 1000


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("application/json", None, id="plain"),
        pytest.param("application/json;charset=utf8", None, id="utf8-alias"),
        pytest.param('application/json; charset="UTF-8"', None, id="quoted"),
        pytest.param("application/json; boundary=x", None, id="other-parameter"),
        pytest.param("application/problem+json", "content-type 'application/problem+json' is not application/json", id="suffix"),
    ],
)  # fmt: skip
def test_content_types(value: str, problem: str | None) -> None:
    """Only application/json, with parameters, and a charset only when it is UTF-8."""
    assert content_type_problem(value) == problem


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """Any body is either a document or unavailable: never an exception."""
    read_json_body(JSON, data)
