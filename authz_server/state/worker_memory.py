"""The memory store of `--workers N`: private approvals and rates, revocations shared.

With a policy that has no approvals or rate limits, the only state a decision reads is
the revocation list, so N worker processes need no Redis: each keeps a `MemoryStore`,
and revocations live in one small JSON file (`RevocationFile`) in a private directory
the supervisor creates. A revocation made through any worker's admin API (the admin
port is shared like the Check port) is written there at once; every worker polls the
file's identity (inode, size, mtime: one `stat`) every `POLL_S` seconds and re-reads it
when it changed, so all workers enforce it within `POLL_S` plus one read.

Why a polled file: it needs no extra process or socket, a worker restarted by the
supervisor reads the current list at start, writes are atomic (a temporary file renamed
over the old one, under an `flock` so that concurrent writers on two workers never lose
each other's changes), and a reader never sees half a file.

Fail closed: when the file cannot be read or parsed, `revoked()` and `ping()` raise
`StoreUnavailable` (every Check with an identity is denied `internal_error`, `/readyz`
fails) until a read succeeds again; the last good list is never trusted past that.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from authz_server.core.clock import Clock
from authz_server.core.errors import StoreUnavailable
from authz_server.identity.spiffe_id import SpiffeId
from authz_server.state.memory import MemoryStore
from authz_server.state.revocations import RevocationSet, check_revocation
from authz_server.state.store import Revocation, to_us

__all__ = ["POLL_S", "RevocationFile", "WorkerMemoryStore"]

log = logging.getLogger(__name__)

#: How often each worker looks for a change (one `stat`).
POLL_S = 0.1
_FORMAT = 1
_T = TypeVar("_T")
_Identity = tuple[int, int, int, int]


class RevocationFile:
    """A JSON list of revocations that several processes read and change safely."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @classmethod
    def create(cls, path: str | Path) -> RevocationFile:
        """Write an empty list (the supervisor, before any worker starts)."""
        file = cls(path)
        file._write([])
        return file

    def identity(self) -> _Identity | None:
        """What changes whenever the file is replaced; None when it is missing."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)

    def read(self) -> list[Revocation]:
        """Every stored revocation (expired ones included); `StoreUnavailable` on failure."""
        try:
            data: Any = json.loads(self.path.read_bytes())
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise ValueError("not a revocation file of this version")
            revocations = [Revocation(**item) for item in data["revocations"]]
            RevocationSet(revocations)  # every pattern compiles, or the file is corrupt
            return revocations
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise StoreUnavailable(f"revocation file {self.path}: {error}") from None

    def update(self, change: Callable[[list[Revocation]], tuple[list[Revocation], _T]]) -> _T:
        """Read, `change`, write back, all under an exclusive lock; returns change's result."""
        with self._locked():
            revocations, result = change(self.read())
            self._write(revocations)
            return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StoreUnavailable(f"revocation lock {self._lock_path}: {error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, revocations: list[Revocation]) -> None:
        document = {
            "format": _FORMAT,
            "revocations": [
                {
                    "pattern": r.pattern,
                    "reason": r.reason,
                    "by": r.by,
                    "created_us": r.created_us,
                    "expires_us": r.expires_us,
                }
                for r in revocations
            ],
        }
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".revocations-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out)
            os.replace(tmp, self.path)
        except OSError as error:
            raise StoreUnavailable(f"revocation file {self.path}: {error}") from None


class WorkerMemoryStore(MemoryStore):
    """`MemoryStore` whose revocations are shared with sibling workers through a file."""

    def __init__(self, path: str | Path, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.file = RevocationFile(path)
        self._seen: _Identity | None = None
        self._problem: str | None = None
        self._poller: asyncio.Task[None] | None = None
        self.refresh()

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def ping(self) -> None:
        if self._problem is not None:
            raise StoreUnavailable(self._problem)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            self.refresh()

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read; never raises."""
        identity = self.file.identity()
        if identity is not None and identity == self._seen and self._problem is None:
            return
        try:
            if identity is None:
                raise StoreUnavailable(f"revocation file {self.file.path} is missing")
            self._install(self.file.read())
        except StoreUnavailable as error:
            if self._problem != str(error):
                log.error("revocations unknown, denying identified callers: %s", error)
            self._problem, self._seen = str(error), None
            return
        if self._problem is not None:
            log.info("revocation file readable again")
        self._problem, self._seen = None, identity

    def _install(self, revocations: list[Revocation]) -> None:
        compiled = RevocationSet(revocations)  # `read` checked that it compiles
        with self._lock:
            self._revocations = compiled

    # revocations -------------------------------------------------------------------------

    async def revoke(self, pattern: str, ttl_s: float, reason: str, by: str) -> Revocation:
        check_revocation(pattern, ttl_s, reason, by)

        def change(current: list[Revocation]) -> tuple[list[Revocation], Revocation]:
            now = self._now()
            revocation = Revocation(pattern, reason, by, now, now + to_us(ttl_s))
            kept = [r for r in current if r.expires_us > now and r.pattern != pattern]
            return [*kept, revocation], revocation

        return await self._change(change)

    async def unrevoke(self, pattern: str) -> bool:
        def change(current: list[Revocation]) -> tuple[list[Revocation], bool]:
            now = self._now()
            live = [r for r in current if r.expires_us > now]
            kept = [r for r in live if r.pattern != pattern]
            return kept, len(kept) != len(live)

        return await self._change(change)

    async def _change(
        self, change: Callable[[list[Revocation]], tuple[list[Revocation], _T]]
    ) -> _T:
        result = await asyncio.to_thread(self.file.update, change)
        self.refresh()  # this worker enforces its own change at once
        return result

    async def list_revocations(self) -> list[Revocation]:
        self.refresh()  # what the file says now, not up to one poll ago
        await self.ping()
        return await super().list_revocations()

    async def revoked(self, spiffe_id: SpiffeId) -> Revocation | None:
        if self._problem is not None:
            raise StoreUnavailable(self._problem)
        return self._revocations.match(spiffe_id, self._now())
