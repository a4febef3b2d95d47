"""One JSON line per decision (SPEC §9), hash-chained so that edits can be detected.

Each record carries `prev` (the previous record's hash) and `hash` (sha256 over the
record's canonical JSON without `hash`). No bodies and no `authorization` values are
ever written: the record holds a digest of the body only.

Writes go to a buffered file object, off the request path's critical section, and are
flushed by the server every `flush_interval` and on shutdown. A failed write is logged
and counted, and the record is kept in the buffer to retry: decisions are never dropped
silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from authz_server.decision import Decision
from authz_server.request import RequestView

log = logging.getLogger(__name__)

GENESIS = "0" * 64


def body_digest(body: bytes | None) -> str | None:
    return None if body is None else "sha256:" + hashlib.sha256(body).hexdigest()


def audit_record(
    decision: Decision,
    view: RequestView | None,
    *,
    policy_version: str,
    latency_us: int,
) -> dict[str, Any]:
    """The fields of SPEC §9 for one decision; never the body or credentials."""
    return {
        "time": datetime.fromtimestamp(decision.at, UTC).isoformat(timespec="microseconds"),
        "decision_id": decision.decision_id,
        "request_id": view.request_id if view else "",
        "principal": decision.principal,
        "identity_source": decision.identity_source,
        "method": view.method if view else None,
        "host": view.host if view else None,
        "path": view.path if view else None,
        "rule": decision.rule,
        "decision": decision.verdict,
        "reason": decision.reason.value,
        "status": decision.http_status if not decision.enforced_allow else 200,
        "dry_run": decision.dry_run,
        "policy_version": policy_version,
        "latency_us": latency_us,
        "body_digest": body_digest(view.body) if view else None,
        "approval_id": decision.approval_id,
    }


def chain_hash(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def last_hash(path: str) -> str:
    """The hash of the last record in an existing audit file, so a restart continues the chain."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return GENESIS
    for line in reversed(lines):
        try:
            value = json.loads(line).get("hash")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return value
    return GENESIS


@dataclass(slots=True)
class AuditStats:
    records: int = 0
    write_errors: int = 0


class AuditLog:
    """Appends chained records to a file (`-` for stdout)."""

    def __init__(self, target: str, flush_interval: float = 0.1) -> None:
        self.target = target
        self.flush_interval = flush_interval
        self.stats = AuditStats()
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._stream: IO[str]
        if target == "-":
            self._stream = sys.stdout
            self._prev = GENESIS
        else:
            self._prev = last_hash(target)
            self._stream = open(target, "a", encoding="utf-8")  # noqa: SIM115 - held open
        self._last_flush = time.monotonic()

    def record(self, record: dict[str, Any]) -> None:
        with self._lock:
            record["prev"] = self._prev
            record["hash"] = self._prev = chain_hash(record)
            self._pending.append(json.dumps(record, separators=(",", ":")) + "\n")
            self.stats.records += 1
            if time.monotonic() - self._last_flush >= self.flush_interval:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        try:
            self._stream.write("".join(self._pending))
            self._stream.flush()
        except OSError:
            self.stats.write_errors += 1
            log.exception(
                "audit log write to %s failed; %d records kept", self.target, len(self._pending)
            )
            return
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._stream is not sys.stdout:
            self._stream.close()


class NullAudit(AuditLog):
    """No audit sink configured: records are counted, not written."""

    def __init__(self) -> None:
        self.target = ""
        self.flush_interval = 0.0
        self.stats = AuditStats()
        self._lock = threading.Lock()
        self._pending = []
        self._prev = GENESIS

    def record(self, record: dict[str, Any]) -> None:
        self.stats.records += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
