"""The body preview: allow-list only, secrets never, 1 KiB at most, exact numbers."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from authz_server.policy.conditions.jsonbody import read_json_body
from authz_server.policy.conditions.preview import (
    MAX_PREVIEW_BYTES,
    REDACTED,
    body_preview,
    secret_key_problem,
)

JSON = {"content-type": "application/json"}


def preview(body: bytes, *paths: str) -> tuple[dict[str, object], bool]:
    shown = body_preview(read_json_body(JSON, body), [tuple(p.split(".")) for p in paths])
    return dict(shown.fields), shown.truncated


CASES = [
    pytest.param(b'{"amount": 250, "memo": "rent", "destination": {"country": "DE", "iban": "DE89"}}',
                 ["amount", "destination.country"],
                 {"amount": 250, "destination.country": "DE"}, id="allow-list-only"),
    pytest.param(b'{"amount": 1}', ["amount", "missing", "amount.deeper"], {"amount": 1}, id="absent-paths-omitted"),
    pytest.param(b'{"destination": {"country": "DE", "authorization": "Bearer x", "api_key": "k", "Session-Id": "s"}}',
                 ["destination"], {"destination": {"country": "DE"}}, id="secret-keys-removed-inside-objects"),
    pytest.param(b'{"items": [{"sku": "a", "password": "p"}, {"sku": "b", "token": "t"}]}',
                 ["items"], {"items": [{"sku": "a"}, {"sku": "b"}]}, id="secret-keys-removed-inside-lists"),
    pytest.param(b'{"memo": "Bearer abc.def"}', ["memo"], {"memo": REDACTED}, id="bearer-value"),
    pytest.param(b'{"memo": "basic dXNlcjpwYXNz"}', ["memo"], {"memo": REDACTED}, id="basic-value"),
    pytest.param(b'{"memo": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig"}', ["memo"], {"memo": REDACTED}, id="jwt-value"),
    pytest.param(b'{"memo": "-----BEGIN PRIVATE KEY-----\\nMII"}', ["memo"], {"memo": REDACTED}, id="pem-value"),
    pytest.param(b'{"authorization": "x"}', ["authorization"], {}, id="secret-path-never-shown"),
    pytest.param(b'{"amount": 1000.0000000000000001}', ["amount"], {"amount": "1000.0000000000000001"}, id="exact-decimal-as-text"),
    pytest.param(b'{"amount": 12.5}', ["amount"], {"amount": 12.5}, id="float-exact"),
    pytest.param(b'{"amount": 1e400}', ["amount"], {"amount": "1E+400"}, id="huge-number-as-text"),
    pytest.param(b'{"ok": true, "none": null}', ["ok", "none"], {"ok": True, "none": None}, id="literals"),
    pytest.param(b'{"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}', ["a"], {"a": {"b": {"c": {"d": {"e": "[nested]"}}}}}, id="depth-capped"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "paths", "expected"), CASES)
def test_preview_fields(body: bytes, paths: list[str], expected: dict[str, object]) -> None:
    fields, _ = preview(body, *paths)
    assert fields == expected


def test_secrets_never_appear_anywhere() -> None:
    """Whatever is listed, no secret value reaches the serialized preview."""
    body = json.dumps(
        {
            "amount": 5,
            "authorization": "Bearer SECRET-1",
            "order": {"token": "SECRET-2", "note": "Bearer SECRET-3", "x-api-key": "SECRET-4"},
            "list": [{"client_secret": "SECRET-5"}, "eyJhbGciOiJIUzI1NiJ9.SECRET-6.x"],
        }
    ).encode()
    fields, _ = preview(body, "amount", "order", "list")
    text = json.dumps(fields)
    assert "SECRET" not in text
    assert fields["amount"] == 5


def test_cap_is_respected_and_flagged() -> None:
    """Big fields are left out so the compact JSON stays within 1 KiB; truncated is set."""
    doc: dict[str, object] = {f"f{i}": "x" * 150 for i in range(20)}
    doc["small"] = 1
    fields, truncated = preview(json.dumps(doc).encode(), *doc)
    assert truncated is True
    serialized = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(serialized) <= MAX_PREVIEW_BYTES
    assert fields["small"] == 1  # a later small field still fits


@pytest.mark.parametrize(
    ("last", "fits"), [(188, True), (189, False)], ids=["1024-bytes", "1025-bytes"]
)
def test_the_cap_boundary(last: int, fits: bool) -> None:
    # Five one-letter fields: 2 + 5 * 6 + 4 bytes of JSON around 200 * 4 + `last` characters.
    doc = {"a": "x" * 200, "b": "x" * 200, "c": "x" * 200, "d": "x" * 200, "e": "x" * last}
    fields, truncated = preview(json.dumps(doc).encode(), *doc)
    assert ("e" in fields) is fits and truncated is not fits
    if fits:
        size = len(json.dumps(fields, separators=(",", ":")).encode())
        assert size == MAX_PREVIEW_BYTES


def test_long_strings_are_clipped_and_flagged() -> None:
    fields, truncated = preview(json.dumps({"memo": "m" * 500}).encode(), "memo")
    memo = fields["memo"]
    assert isinstance(memo, str) and len(memo) == 201 and memo.endswith("…")
    assert truncated is True


def test_multibyte_text_counts_in_bytes() -> None:
    doc = {f"k{i}": "é" * 199 for i in range(4)}
    fields, truncated = preview(json.dumps(doc).encode(), *doc)
    size = len(json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode())
    assert size <= MAX_PREVIEW_BYTES and truncated is True and len(fields) == 2


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(JSON, b"not json", id="not-json"),
        pytest.param({"content-type": "text/plain"}, b'{"amount": 1}', id="not-json-content-type"),
        pytest.param(JSON, b'{"amount": 1, "amount": 2}', id="duplicate-keys"),
        pytest.param(JSON, b"", id="empty"),
        pytest.param(JSON, b"[1, 2]", id="array-body"),
    ],
)
def test_unreadable_bodies_give_an_empty_preview(headers: dict[str, str], body: bytes) -> None:
    shown = body_preview(read_json_body(headers, body), [("amount",)])
    assert dict(shown.fields) == {} and shown.truncated is False


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("Authorization", True), ("password", True), ("db_passwd", True), ("client-secret", True),
        ("accessToken", True), ("X-API-Key", True), ("privateKey", True), ("set-cookie", True),
        ("credentials", True), ("session_id", True), ("auth", True), ("pin", True),
        ("amount", False), ("destination", False), ("country", False), ("author", False),
        ("description", False),
    ],
)  # fmt: skip
def test_secret_key_names(key: str, secret: bool) -> None:
    assert (secret_key_problem(key) is not None) is secret


def test_decimal_values_are_exact() -> None:
    fields, _ = preview(b'{"a": 0.1, "b": 100}', "a", "b")
    assert fields == {"a": 0.1, "b": 100}
    assert Decimal(str(fields["a"])) == Decimal("0.1")
