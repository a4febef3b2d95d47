"""Reading existing audit files: where a chain left off, and the newest rotated sibling.

The writer (`audit.AuditLog`) continues a chain across restarts and rotations from what
these find; they only read, and a file they cannot read counts as having no records.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from authz_server.audit_format import GENESIS

#: How much of a file's end is read to find its last record (a record is < 100 KiB).
_TAIL_BYTES = 1 << 20
_COMPRESSED = (".gz", ".xz", ".bz2", ".zst")


@dataclass(frozen=True, slots=True)
class Tail:
    """The end of an audit file: its last record's hash and any torn (unterminated) line."""

    last_hash: str | None
    torn: int


def read_tail(path: str | Path) -> Tail:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            data = f.read()
    except OSError:
        return Tail(None, 0)
    end = data.rfind(b"\n") + 1
    torn = len(data) - end
    for line in reversed(data[:end].splitlines()):
        try:
            value = json.loads(line).get("hash")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return Tail(value, torn)
    return Tail(None, torn)


def last_hash(path: str) -> str:
    """The hash of the last record in an audit file (GENESIS when there is none)."""
    return read_tail(path).last_hash or GENESIS


def previous_file(target: str) -> tuple[str, str] | None:
    """The newest rotated sibling (`audit.jsonl.1`, `audit.jsonl-20261129`) and its head."""
    folder, base = os.path.split(os.path.abspath(target))
    try:
        entries = [
            e
            for e in os.scandir(folder)
            if e.name != base
            and e.name.startswith((base + ".", base + "-"))
            and not e.name.startswith(base + ".worker")  # another process's own chain
            and not e.name.endswith(_COMPRESSED)
            and e.is_file()
        ]
    except OSError:
        return None
    for entry in sorted(entries, key=lambda e: e.stat().st_mtime, reverse=True)[:1]:
        head = read_tail(entry.path).last_hash
        if head is not None:
            return entry.name, head
    return None
