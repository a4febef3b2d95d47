"""`--store` values: memory, redis URLs, and clear errors for anything else."""

from __future__ import annotations

import pytest

from authz_server.core.errors import ConfigError
from authz_server.state import open_store, redacted_url
from authz_server.state.memory import MemoryStore
from authz_server.state.redis import RedisStore


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        pytest.param("memory", MemoryStore, id="memory"),
        pytest.param("redis://127.0.0.1:6379/0", RedisStore, id="redis"),
        pytest.param("redis://redis.internal:6379", RedisStore, id="redis-default-db"),
        pytest.param("rediss://:secret@redis.internal:6380/2", RedisStore, id="rediss-password"),
    ],
)
async def test_open_store(url: str, kind: type) -> None:
    """Each accepted URL opens the matching store, without connecting yet."""
    store = open_store(url)
    assert isinstance(store, kind)
    await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("", "expected 'memory'", id="empty"),
        pytest.param("Memory", "expected 'memory'", id="case"),
        pytest.param("http://127.0.0.1:6379/0", "expected 'memory'", id="scheme"),
        pytest.param("redis:///0", "a host is required", id="no-host"),
        pytest.param("redis://h:port/0", "port is not a number", id="bad-port"),
        pytest.param("redis://h:6379/zero", "database must be a number", id="bad-db"),
        pytest.param("redis://h:6379/0?timeout=1", "query", id="query"),
    ],
)
def test_open_store_rejects(url: str, message: str) -> None:
    """Anything but memory or a plain redis URL is a ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=message):
        open_store(url)


def test_password_never_in_errors() -> None:
    """A password in the URL is redacted in error messages."""
    with pytest.raises(ConfigError) as info:
        open_store("redis://user:hunter2@h:6379/zero")
    assert "hunter2" not in str(info.value)
    assert redacted_url("redis://user:hunter2@h:6379/0") == "redis://user:***@h:6379/0"
