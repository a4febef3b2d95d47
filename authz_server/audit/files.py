"""Reading existing audit files: where a chain left off, the newest rotated sibling, and
whether a file is an audit log at all.

The writer (`audit.AuditLog`) continues a chain across restarts and rotations from what
`read_tail` and `previous_file` find, and a file they cannot read counts as having no
records; `replay` refuses a file that `audit_log_problem` says is no audit log. All only read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from authz_server.audit.format import GENESIS

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


def audit_log_problem(path: str | Path) -> str | None:
    """Why `path` is not an audit log, or None when it is one.

    An audit log's first non-empty line is a chained record: a JSON object with string
    `prev` and `hash`. An empty file is an empty log. Later lines are not looked at: a
    torn or damaged line inside a log is the verifier's business, not a wrong file.
    """
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    return f"line {number} is not JSON"
                if not isinstance(record, dict):
                    return f"line {number} is JSON but not an object"
                if not isinstance(record.get("prev"), str) or not isinstance(
                    record.get("hash"), str
                ):
                    return f"line {number} is a JSON object without the chain fields prev and hash"
                return None
    except OSError as error:
        return f"cannot read it: {error.strerror or error}"
    return None
