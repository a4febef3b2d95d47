"""Shared decision state (docs/operations/store.md#store): `open_store("memory" |
"redis://HOST:PORT/DB")`."""

from __future__ import annotations

from urllib.parse import urlsplit

from authz_server.core.clock import Clock
from authz_server.core.errors import ConfigError, quote
from authz_server.state.store import Store

__all__ = ["Store", "check_store_url", "open_store", "redacted_url"]


def redacted_url(url: str) -> str:
    """`url` with any password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def open_store(
    url: str, *, clock: Clock | None = None, revocations_file: str | None = None
) -> Store:
    """The store named by `--store`: `memory`, or `redis://HOST:PORT/DB` (`rediss://` for TLS).

    `revocations_file` (memory only) is set in the workers of `--workers N`: revocations
    are then shared with the other workers through that file (`worker_memory`).
    Raises `ConfigError` for anything else. Connecting is lazy: call `ping()` to check.
    """
    check_store_url(url)
    if url == "memory":
        if revocations_file is not None:
            from authz_server.state.worker_memory import WorkerMemoryStore

            return WorkerMemoryStore(revocations_file, clock)
        from authz_server.state.memory import MemoryStore

        return MemoryStore(clock)
    from authz_server.state.redis import RedisStore

    return RedisStore(url, clock=clock)


def check_store_url(url: str) -> None:
    """`ConfigError` unless `url` is `memory` or a usable `redis://HOST:PORT/DB`."""
    if url == "memory":
        return
    shown = quote(redacted_url(url))
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"--store {shown}: expected 'memory' or redis://HOST:PORT/DB")
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        raise ConfigError(f"--store {shown}: the port is not a number") from None
    if not parts.hostname:
        raise ConfigError(f"--store {shown}: a host is required")
    db = parts.path.lstrip("/")
    if parts.path not in ("", "/") and not db.isdigit():
        raise ConfigError(
            f"--store {shown}: the database must be a number, e.g. redis://host:6379/0"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"--store {shown}: query and fragment are not supported")
