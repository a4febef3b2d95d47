"""Signatures: the notifier's `sign`, checked by the package's `verify` and by the documented
receiver snippet (executed from docs/policy/notifications.md), which must agree on every case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from authz_server.notify.signing import read_secret, sign, verify
from tests.unit.notify.receiver import SECRET, documented_receiver

NOW = 1_800_000_000
BODY = b'{"event_id":"abc:1:pending","type":"pending"}'


def _readme_verify(secret: bytes, headers: Any, body: bytes, now: float) -> bool:
    result = documented_receiver()["verify"](secret, headers, body, now)
    assert isinstance(result, bool)
    return result


def _package_verify(secret: bytes, headers: Any, body: bytes, now: float) -> bool:
    return verify(secret, headers, body, now)


VERIFIERS = [
    pytest.param(_package_verify, id="package"),
    pytest.param(_readme_verify, id="readme"),
]


def _signed(body: bytes = BODY, at: float = NOW, secret: bytes = SECRET) -> CIMultiDict[str]:
    return CIMultiDict(sign(secret, body, at))


# (headers, body, secret, receiver's now) → accepted?
CASES = [
    pytest.param(lambda: _signed(), BODY, SECRET, NOW, True, id="genuine"),
    pytest.param(lambda: _signed(), BODY, SECRET, NOW + 300, True, id="at-the-tolerance"),
    pytest.param(lambda: _signed(), BODY + b" ", SECRET, NOW, False, id="body-altered"),
    pytest.param(lambda: _signed(), BODY, b"another-secret-of-16+", NOW, False, id="wrong-secret"),
    pytest.param(lambda: _signed(), BODY, SECRET, NOW + 301, False, id="replayed-later"),
    pytest.param(lambda: _signed(), BODY, SECRET, NOW - 301, False, id="from-the-future"),
    pytest.param(lambda: CIMultiDict({**_signed(), "X-Authz-Timestamp": str(NOW + 1)}), BODY, SECRET, NOW, False, id="timestamp-moved"),
    pytest.param(lambda: CIMultiDict({"X-Authz-Timestamp": str(NOW)}), BODY, SECRET, NOW, False, id="no-signature"),
    pytest.param(lambda: CIMultiDict({"X-Authz-Signature": _signed()["X-Authz-Signature"]}), BODY, SECRET, NOW, False, id="no-timestamp"),
    pytest.param(lambda: CIMultiDict({**_signed(), "X-Authz-Timestamp": "-5"}), BODY, SECRET, NOW, False, id="negative-timestamp"),
    pytest.param(lambda: CIMultiDict({**_signed(), "X-Authz-Timestamp": "1" * 40}), BODY, SECRET, NOW, False, id="huge-timestamp"),
    pytest.param(lambda: CIMultiDict({**_signed(), "X-Authz-Signature": "v2=" + _signed()["X-Authz-Signature"][3:]}), BODY, SECRET, NOW, False, id="other-version"),
    pytest.param(lambda: CIMultiDict({**_signed(), "X-Authz-Signature": "v1=é"}), BODY, SECRET, NOW, False, id="non-ascii-signature"),
    pytest.param(lambda: CIMultiDict({k.lower(): v for k, v in _signed().items()}), BODY, SECRET, NOW, True, id="lower-case-header-names"),
]  # fmt: skip


@pytest.mark.parametrize("check", VERIFIERS)
@pytest.mark.parametrize(("headers", "body", "secret", "now", "accepted"), CASES)
def test_verification(
    check: Callable[[bytes, Any, bytes, float], bool],
    headers: Callable[[], CIMultiDict[str]],
    body: bytes,
    secret: bytes,
    now: float,
    accepted: bool,
) -> None:
    """Genuine, fresh deliveries verify; forgeries, alterations and stale replays do not."""
    assert check(secret, headers(), body, now) is accepted


def test_signature_construction() -> None:
    """v1 = hex HMAC-SHA256(secret, "<timestamp>." + body), as documented."""
    import hashlib
    import hmac

    headers = sign(SECRET, BODY, NOW + 0.9)
    assert headers["X-Authz-Timestamp"] == str(NOW)
    mac = hmac.new(SECRET, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers["X-Authz-Signature"] == f"v1={mac}"


def test_readme_accept_refuses_a_replay_within_the_tolerance() -> None:
    """The snippet's `accept` takes an event once; the same delivery again is refused."""
    snippet = documented_receiver()
    headers = _signed()
    assert snippet["accept"](SECRET, headers, BODY, NOW) is True
    assert snippet["accept"](SECRET, headers, BODY, NOW + 10) is False
    assert snippet["accept"](SECRET, _signed(at=NOW + 20), BODY, NOW + 20) is False
    assert snippet["accept"](SECRET, headers, BODY + b" ", NOW) is False


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(None, "No such file", id="missing"),
        pytest.param(b"short\n", "shorter than 16 bytes", id="too-short"),
        pytest.param(b"   \n", "shorter than 16 bytes", id="blank"),
    ],
)
def test_unusable_secrets(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=problem):
        read_secret(str(path))


def test_secret_whitespace_is_not_part_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"  " + SECRET + b"\r\n")
    assert read_secret(str(path)) == SECRET
