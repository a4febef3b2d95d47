"""Action fingerprints: which differences make another action, which do not."""

from __future__ import annotations

import pytest

from authz_server.state.fingerprint import action_fingerprint, body_digest, canonical_query

BASE = ("spiffe://example.org/agents/a/b", "POST", "pay.internal", "/v1/transfers", "", b"{}")


def _fp(**changes: object) -> str:
    names = ("principal", "method", "host", "path", "query", "body")
    values = dict(zip(names, BASE, strict=True))
    values.update(changes)
    return action_fingerprint(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"principal": "spiffe://example.org/agents/a/c"}, id="principal"),
        pytest.param({"method": "PUT"}, id="method"),
        pytest.param({"host": "pay2.internal"}, id="host"),
        pytest.param({"path": "/v1/transfers/1"}, id="path"),
        pytest.param({"query": "a=1"}, id="query"),
        pytest.param({"body": b'{"amount": 1}'}, id="body"),
        pytest.param({"body": None}, id="missing-body-is-not-empty-body"),
        pytest.param({"body": b""}, id="empty-body-is-not-json-body"),
        pytest.param({"path": "/v1/transfers", "host": "pay.internal/"}, id="field-boundary"),
    ],
)
def test_any_difference_is_another_action(changes: dict[str, object]) -> None:
    """Changing any one field changes the fingerprint."""
    assert _fp(**changes) != _fp()


def test_field_boundaries_cannot_be_shifted() -> None:
    """Moving bytes from one field to the next never collides (length prefixes)."""
    assert action_fingerprint("ab", "c", "", "", "", None) != action_fingerprint(
        "a", "bc", "", "", "", None
    )


def test_parameter_order_is_not_a_new_action() -> None:
    """Reordering differently named query parameters keeps the fingerprint."""
    assert _fp(query="b=2&a=1") == _fp(query="a=1&b=2")


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        pytest.param("", "", id="empty"),
        pytest.param("b=2&a=1", "a=1&b=2", id="sorted-by-name"),
        pytest.param("a=2&b=1&a=1", "a=2&a=1&b=1", id="repeated-names-keep-order"),
        pytest.param("x=%41&a", "a&x=%41", id="bytes-kept-undecoded"),
        pytest.param("b=1&&a=1", "&a=1&b=1", id="empty-parameter-kept"),
    ],
)
def test_canonical_query(query: str, canonical: str) -> None:
    """Parameters are stably sorted by name and never decoded or dropped."""
    assert canonical_query(query) == canonical


def test_repeated_parameter_order_matters() -> None:
    """`a=1&a=2` and `a=2&a=1` are different actions (backends differ on which value wins)."""
    assert _fp(query="a=1&a=2") != _fp(query="a=2&a=1")


def test_fingerprint_is_stable_hex() -> None:
    """The approval id is 64 lower-case hex characters and deterministic."""
    fingerprint = _fp()
    assert fingerprint == _fp()
    assert len(fingerprint) == 64 and set(fingerprint) <= set("0123456789abcdef")


def test_body_digest_matches_audit_format() -> None:
    """Body digests use the audit log's `sha256:<hex>` form; no body has no digest."""
    assert body_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert body_digest(None) is None
