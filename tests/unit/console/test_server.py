"""Starting the console listener: every unusable setup is one ConfigError naming the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz_server.core.errors import ConfigError
from authz_server.state.memory import MemoryStore
from tests.unit.console.support import Console, Pki, start_test_console


@pytest.mark.parametrize(
    ("listen", "files", "message"),
    [
        pytest.param("127.0.0.1", "both", "--console-listen '127.0.0.1' must be HOST:PORT", id="no-port"),
        pytest.param("127.0.0.1:99999", "both", "the port must be at most 65535", id="port-too-large"),
        pytest.param("127.0.0.1:0", "cert-only", "--console-tls-cert and --console-tls-key go together", id="cert-without-key"),
        pytest.param("127.0.0.1:0", "none", "the console needs --console-tls-cert and --console-tls-key", id="no-certificate"),
        pytest.param("127.0.0.1:0", "missing", "--console-tls-cert", id="unreadable-certificate"),
        pytest.param("127.0.0.1:0", "wrong-key", "--console-tls-key", id="key-of-another-certificate"),
        pytest.param("192.0.2.1:0", "both", "--console-listen 192.0.2.1:0: cannot listen", id="address-not-here"),
    ],
)  # fmt: skip
async def test_unusable_setups(
    pki: Pki, tmp_path: Path, listen: str, files: str, message: str
) -> None:
    cert, key = pki.files["server"]
    other_key = pki.client("spiffe://example.org/other")[1]
    chosen = {
        "both": (cert, key),
        "cert-only": (cert, None),
        "none": (None, None),
        "missing": (str(tmp_path / "absent.pem"), key),
        "wrong-key": (cert, other_key),
    }[files]
    with pytest.raises(ConfigError) as info:
        await start_test_console(pki, MemoryStore(), listen=listen, tls=chosen)
    assert message in str(info.value)


async def test_port_in_use(console: Console, pki: Pki) -> None:
    """A second console on a taken port says so instead of failing later."""
    with pytest.raises(ConfigError, match="cannot listen"):
        await start_test_console(pki, listen=f"127.0.0.1:{console.server.port}")
