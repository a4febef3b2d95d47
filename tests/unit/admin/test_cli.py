"""Admin command parsing: durations and addresses, before anything connects."""

from __future__ import annotations

import pytest

from authz_server.admin.address import is_loopback, listen_host
from authz_server.admin.cli import parse_duration
from authz_server.core.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("90s", 90, id="seconds"),
        pytest.param("15m", 900, id="minutes"),
        pytest.param("1h30m", 5400, id="combined"),
        pytest.param("7d", 604800, id="days"),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    """Durations are integers with s/m/h/d units, possibly combined."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "1.5h", "15 m", "-5m", "0s", "m", "15M", "1h 30m"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything else is a ConfigError quoting the input."""
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("listen", "host", "loopback"),
    [
        pytest.param("127.0.0.1:9192", "127.0.0.1", True, id="v4-loopback"),
        pytest.param("[::1]:9192", "::1", True, id="v6-loopback"),
        pytest.param("0.0.0.0:9192", "0.0.0.0", False, id="any"),
        pytest.param("localhost:9192", "localhost", False, id="name-is-not-literal"),
        pytest.param("10.1.2.3:9192", "10.1.2.3", False, id="private"),
    ],
)
def test_listen_host(listen: str, host: str, loopback: bool) -> None:
    """Only literal loopback addresses count as loopback."""
    assert listen_host(listen) == host
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("listen", ["9192", "host:", ":9192", "host:port"])
def test_listen_host_rejects(listen: str) -> None:
    """An address without host or numeric port is a ConfigError."""
    with pytest.raises(ConfigError, match="HOST:PORT"):
        listen_host(listen)
