"""One JSON line per decision (docs/operations/audit.md#records), hash-chained so that tampering
shows.

The chain
    Every record carries `prev` (the previous record's hash) and `hash` (sha256 over its
    canonical JSON without `hash`: sorted keys, compact, ASCII); a chain begins at `prev`
    = GENESIS. The line written is that canonical text with `hash` appended last, so one
    encoding serves the hash and the file. Besides decision records the log holds
    *chain markers* (`"type": "chain"`), chained like the rest:

    restart  the server opened a file that already holds records; a torn last line (the
             writer was killed mid-write) is terminated and its length kept in `torn_tail`
    rotate   the file was renamed, deleted, replaced or truncated (logrotate) and a new one
             begun, or the server started on an empty file beside a rotated one: `prev` is
             the old file's last hash, so `authz-server audit verify OLD NEW` checks across
    gap      fail-closed denies that were counted, not kept (below): `dropped` says how many

    `authz_server.audit.verify` finds the first removed, reordered, inserted, duplicated or
    edited record. The hash is not keyed: whoever can rewrite the whole tail of a file can
    re-hash it; only a head published elsewhere (`audit verify --anchor HASH`) exposes that.

Durability
    Each record is handed to the kernel (one write(2) on an O_APPEND descriptor, about a
    microsecond) before the Check answers, so while the sink works a crashed or SIGKILLed
    server never loses the record of a decision a client saw. Records are not fsynced:
    power loss can lose what the page cache held. No bodies and no `authorization` values
    are ever written.

When the sink fails (disk full, file unwritable, a directory in its place)
    Records are kept in memory, in order, and retried every `flush_interval`; the failure
    is logged once, the recovery once. Decisions go on while fewer than `max_pending`
    records wait and the sink has failed for less than `max_wait` seconds; beyond either
    bound `healthy` is False: the Check service denies every request with
    `internal_error` and readiness reports it, so no decision is made that cannot be
    recorded, and a crash can lose at most what the bounds allow. The records of those
    denies are kept up to twice `max_pending`; beyond that they are counted and a `gap`
    marker takes their place. Allowed decisions are never dropped. Records still waiting
    at shutdown are logged as lost, with their count.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authz_server.audit.files import Tail, last_hash, previous_file, read_tail
from authz_server.audit.format import (
    GENESIS,
    MARKER,
    audit_record,
    canonical_bytes,
    canonical_json,
    chain_hash,
    format_time,
)

__all__ = [  # the record format (`audit_format`) too, for existing imports
    "GENESIS",
    "MARKER",
    "AuditLog",
    "AuditStats",
    "MemoryAudit",
    "NullAudit",
    "audit_record",
    "canonical_json",
    "chain_hash",
    "format_time",
    "last_hash",
]

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(slots=True)
class AuditStats:
    #: Decision records accepted (written or waiting to be).
    records: int = 0
    write_errors: int = 0
    #: Fail-closed denies counted in a `gap` marker instead of kept (sink down too long).
    dropped: int = 0
    #: New files begun after rotation, deletion or truncation.
    reopened: int = 0


@dataclass(slots=True)
class _Line:
    record: dict[str, Any]
    data: bytes


class AuditLog:
    """Appends chained records to a file, or to standard output for `-`."""

    def __init__(
        self,
        target: str,
        flush_interval: float = 0.1,
        *,
        max_pending: int = 1000,
        max_wait: float = 5.0,
    ) -> None:
        self.target = target
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.max_wait = max_wait
        self.stats = AuditStats()
        self._lock = threading.Lock()
        self._pending: deque[_Line] = deque()
        self._partial = 0  # bytes of _pending[0] already in the current file
        self._dropped = 0  # denies dropped since the last gap marker
        self._failing: str | None = None
        self._failing_since = 0.0  # time.monotonic() of the first failure of this episode
        self._fd: int | None = None
        self._file_id: tuple[int, int] | None = None
        self._size = 0  # the file's size after our last write: shrinking means truncation
        self._written = GENESIS  # hash of the last record fully written
        self._head = GENESIS  # hash of the last record accepted
        with self._lock:
            if target == "-":
                self._fd = 1
            else:
                self._open_locked(first=True)
            self._write_locked()

    @property
    def healthy(self) -> bool:
        """False while records wait too many or too long for a failing sink: decide nothing."""
        if not self._pending:
            return True
        if len(self._pending) >= self.max_pending:
            return False
        return self._failing is None or time.monotonic() - self._failing_since < self.max_wait

    def problem(self) -> str | None:
        """For readiness (`/readyz`): why decisions cannot be recorded now, or None."""
        if self.healthy:
            return None
        why = self._failing or "failing"
        return f"audit log {self.target}: {why}; {len(self._pending)} records waiting"

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def head(self) -> str:
        """The hash of the last record accepted: publish it to anchor the chain."""
        return self._head

    def record(self, record: dict[str, Any]) -> None:
        """Chain and write one decision record; keep it for retry if the sink fails."""
        with self._lock:
            fd = self._fd
            if fd is not None and not self._pending and not self._dropped and not self._failing:
                # The common case, a working sink with nothing waiting: write just this line.
                self._write_one_locked(fd, record, self._chain_locked(record))
                self.stats.records += 1
                return
            if len(self._pending) >= 2 * self.max_pending and record.get("status") != 200:
                # Only fail-closed denies get here (healthy is False); allows are always kept.
                self._dropped += 1
                self.stats.dropped += 1
                return
            self._append_gap_locked()
            self._append_locked(record)
            self.stats.records += 1
            if self._failing is None:
                self._write_locked()

    def flush(self) -> None:
        """Retry waiting records and follow a rotated file; the server calls this periodically."""
        with self._lock:
            if self.target != "-":
                self._follow_rotation_locked()
            self._write_locked()
            if self._dropped and self._failing is None:
                self._append_gap_locked()
                self._write_locked()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._pending:
                log.error(
                    "audit log %s: %d record(s) could not be written and are lost (%s)",
                    self.target,
                    len(self._pending),
                    self._failing,
                )
            else:
                log.info("audit log %s closed; chain head %s", self.target, self._head)
            if self._fd is not None and self._fd != 1:
                os.close(self._fd)
            self._fd = None

    # --- chain --------------------------------------------------------------------------

    def _chain_locked(self, record: dict[str, Any]) -> bytes:
        """Link `record` to the head, make it the head; return its line.

        The line is the canonical JSON the hash is taken over with the hash appended
        last: one encoding serves both (so the keys are in sorted order).
        """
        record.pop("hash", None)
        record["prev"] = self._head
        canonical = canonical_bytes(record)
        record["hash"] = self._head = hashlib.sha256(canonical).hexdigest()
        return b'%s,"hash":"%s"}\n' % (canonical[:-1], self._head.encode("ascii"))

    def _append_locked(self, record: dict[str, Any]) -> None:
        self._pending.append(_Line(record, self._chain_locked(record)))

    def _append_gap_locked(self) -> None:
        if self._dropped:
            gap = {"type": MARKER, "event": "gap", "time": _now(), "dropped": self._dropped}
            self._dropped = 0
            self._append_locked(gap)

    def _begin_locked(self, event: str, prev: str, torn: int = 0, **fields: object) -> None:
        """Start the file with a marker linked to `prev`; re-chain the records still waiting.

        Waiting records were never written anywhere whole, so nobody has seen their hashes.
        """
        marker: dict[str, Any] = {"type": MARKER, "event": event, "time": _now(), **fields}
        if torn:
            marker["torn_tail"] = torn
        waiting = [line.record for line in self._pending]
        self._pending.clear()
        self._partial = 0
        self._head = prev
        for record in [marker, *waiting]:
            self._append_locked(record)
        if torn:  # terminate the torn line so the marker starts a line of its own
            self._pending[0].data = b"\n" + self._pending[0].data

    # --- the file -----------------------------------------------------------------------

    def _open_locked(self, *, first: bool) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.target, flags, 0o640)
        except OSError as error:
            self._fail_locked(f"cannot open: {error.strerror or error}")
            return
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        self._fd, self._file_id = fd, (info.st_dev, info.st_ino)
        self._size = info.st_size if regular else 0
        tail = read_tail(self.target) if regular and info.st_size else Tail(None, 0)
        if not first:
            # A line begun in the old file and abandoned there is rewritten whole here.
            abandoned = {"previous_torn": self._partial} if self._partial else {}
            self.stats.reopened += 1
            self._begin_locked("rotate", self._written, tail.torn, **abandoned)
        elif tail.last_hash is not None or tail.torn:
            self._written = tail.last_hash or GENESIS
            self._begin_locked("restart", self._written, tail.torn)
        elif regular and (previous := previous_file(self.target)) is not None:
            name, self._written = previous
            self._begin_locked("rotate", self._written, previous_file=name)

    def _follow_rotation_locked(self) -> None:
        try:
            info: os.stat_result | None = os.stat(self.target)
        except OSError:
            info = None
        current = (info.st_dev, info.st_ino) if info else None
        if self._fd is not None and current == self._file_id:
            if info and stat.S_ISREG(info.st_mode) and info.st_size < self._size:
                # Truncated in place (logrotate copytruncate): start over in the same file.
                self._size = info.st_size
                self.stats.reopened += 1
                self._begin_locked("rotate", self._written)
            return
        if self._fd is not None:
            # Renamed or replaced: records already begun belong in the old file, unless it
            # was deleted (nobody could read them there).
            if os.fstat(self._fd).st_nlink > 0 and self._failing is None:
                self._write_locked()
            os.close(self._fd)
            self._fd = self._file_id = None
        self._open_locked(first=False)

    def _write_locked(self) -> None:
        if not self._pending or self._fd is None:
            return
        data = memoryview(b"".join(line.data for line in self._pending))[self._partial :]
        while data:
            try:
                n = os.write(self._fd, data)
            except OSError as error:
                self._fail_locked(f"write failed: {error.strerror or error}")
                return
            data = data[n:]
            self._size += n
            self._partial += n
            while self._pending and self._partial >= len(self._pending[0].data):
                self._partial -= len(self._pending[0].data)
                self._written = self._pending.popleft().record["hash"]
        if self._failing is not None:
            log.warning("audit log %s is writable again; waiting records written", self.target)
            self._failing = None

    def _write_one_locked(self, fd: int, record: dict[str, Any], line: bytes) -> None:
        """`_append_locked` + `_write_locked` for one line when nothing waits, cheaper."""
        try:
            n = os.write(fd, line)
        except OSError as error:
            self._pending.append(_Line(record, line))
            self._fail_locked(f"write failed: {error.strerror or error}")
            return
        self._size += n
        if n == len(line):
            self._written = self._head
            return
        self._pending.append(_Line(record, line))  # a short write: finish it the long way
        self._partial = n
        self._write_locked()

    def _fail_locked(self, why: str) -> None:
        self.stats.write_errors += 1
        if self._failing is None:
            self._failing_since = time.monotonic()
            log.error(
                "audit log %s: %s; %d record(s) kept in memory and retried; "
                "Checks fail closed once %d wait or after %gs",
                self.target,
                why,
                len(self._pending),
                self.max_pending,
                self.max_wait,
            )
        self._failing = why


class NullAudit(AuditLog):
    """No audit sink configured: records are counted, not written."""

    def __init__(self) -> None:
        self.target = ""
        self.flush_interval = 0.0
        self.max_pending = 1
        self.max_wait = 0.0
        self.stats = AuditStats()
        self._lock = threading.Lock()
        self._pending = deque()
        self._failing = None
        self._head = GENESIS

    def record(self, record: dict[str, Any]) -> None:
        self.stats.records += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryAudit(NullAudit):
    """Keeps chained records in a list: the test double for code that audits."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []

    def record(self, record: dict[str, Any]) -> None:
        with self._lock:
            record["prev"] = self._head
            record["hash"] = self._head = chain_hash(record)
            self.records.append(record)
            self.stats.records += 1
