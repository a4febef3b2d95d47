"""CSRF tokens and the cross-site checks, on a pinned clock (no certificates involved)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from authz_server.console.csrf import TOKEN_LIFETIME_S, CsrfTokens, cross_site_problem
from authz_server.core.clock import FixedClock

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SECRET = b"s" * 32
FINGERPRINT = "ab" * 32
ORIGIN = "https://127.0.0.1:8443"


def _tokens(at: datetime = NOW, secret: bytes = SECRET) -> CsrfTokens:
    return CsrfTokens(secret, FixedClock(at))


def test_token_valid_for_its_certificate() -> None:
    """A token issued for a certificate passes for that certificate, within its lifetime."""
    token = _tokens().issue(FINGERPRINT)
    assert _tokens().problem(FINGERPRINT, token) is None
    later = NOW + timedelta(seconds=TOKEN_LIFETIME_S)
    assert _tokens(later).problem(FINGERPRINT, token) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param("empty", "carries no CSRF token", id="empty"),
        pytest.param("no-dot", "malformed", id="no-separator"),
        pytest.param("not-digits", "malformed", id="issued-not-a-number"),
        pytest.param("other-certificate", "not valid for this client certificate", id="other-certificate"),
        pytest.param("other-secret", "not valid for this client certificate", id="other-server-secret"),
        pytest.param("moved-issue-time", "not valid for this client certificate", id="issue-time-edited"),
        pytest.param("non-ascii", "not valid for this client certificate", id="non-ascii-mac"),
        pytest.param("expired", "has expired", id="expired"),
        pytest.param("future", "has expired", id="issued-in-the-future"),
    ],
)  # fmt: skip
def test_token_refused(change: str, message: str) -> None:
    """Every way a token can be wrong is refused, with a reason."""
    token = _tokens().issue(FINGERPRINT)
    issued, _, mac = token.partition(".")
    fingerprint, checker = FINGERPRINT, _tokens()
    if change == "empty":
        token = ""
    elif change == "no-dot":
        token = issued + mac
    elif change == "not-digits":
        token = f"x{issued}.{mac}"
    elif change == "other-certificate":
        fingerprint = "cd" * 32
    elif change == "other-secret":
        checker = _tokens(secret=b"t" * 32)
    elif change == "moved-issue-time":
        token = f"{int(issued) + 3600}.{mac}"
    elif change == "non-ascii":
        token = f"{issued}.{mac[:-1]}é"
    elif change == "expired":
        checker = _tokens(NOW + timedelta(seconds=TOKEN_LIFETIME_S + 1))
    else:
        checker = _tokens(NOW - timedelta(minutes=5))
    problem = checker.problem(fingerprint, token)
    assert problem is not None and message in problem


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        CsrfTokens(b"short")


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        pytest.param({}, False, id="no-browser-headers"),
        pytest.param({"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}, False, id="own-form"),
        pytest.param({"Origin": "https://evil.example"}, True, id="other-origin"),
        pytest.param({"Origin": "http://127.0.0.1:8443"}, True, id="other-scheme"),
        pytest.param({"Origin": "https://127.0.0.1:8444"}, True, id="other-port"),
        pytest.param({"Origin": "null"}, True, id="opaque-origin"),
        pytest.param({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, False, id="own-form-no-referrer"),
        pytest.param({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, True, id="sandboxed-frame"),
        pytest.param({"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}, True, id="origin-contradicts-site"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, True, id="cross-site"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, True, id="same-site"),
        pytest.param({"Sec-Fetch-Site": "none"}, True, id="typed-in"),
    ],
)  # fmt: skip
def test_cross_site_checks(headers: dict[str, str], refused: bool) -> None:
    """Only the console's own origin may post; clients that send neither header rely on the
    token alone."""
    assert (cross_site_problem(headers, ORIGIN) is not None) is refused
