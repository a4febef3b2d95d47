"""Check an audit hash chain and name the first record that breaks it.

Files are read as one chain, in the order given (`audit.jsonl.1 audit.jsonl`): the first
record of a later file is the `rotate` marker that links it to the earlier one. What each
finding means:

    edited      the record's hash does not match its content
    removed     its `prev` matches no record: records before it are missing, or the one
                before was edited and re-hashed; also a first record that neither starts a
                chain nor is a marker
    reordered   its `prev` is the hash of a record that comes later
    inserted    its `prev` is the hash of an earlier record, not the one just before it
    duplicated  it is the same record as an earlier line
    restarted   a new chain (`prev` = genesis) begins after other records
    malformed   a line that is not a chained JSON record (a torn line is accepted only
                when the marker after it records its length)
    torn        the last line is incomplete: the writer died mid-write and has not restarted
    anchor      the chain does not contain the hash given with `--anchor`: its end was cut

Streaming, one pass; a second pass over the files only to classify the first break.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz_server.audit.format import GENESIS, MARKER, chain_hash

__all__ = ["ChainProblem", "ChainReport", "verify_chain"]


@dataclass(frozen=True, slots=True)
class ChainProblem:
    file: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.message}"


@dataclass(slots=True)
class ChainReport:
    files: int = 0
    #: Chained records checked (decisions and markers).
    records: int = 0
    decisions: int = 0
    markers: int = 0
    head: str = GENESIS
    problem: ChainProblem | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Torn:
    file: str
    line: int
    length: int
    terminated: bool


def _lines(paths: Sequence[str | Path]) -> Iterator[tuple[int, str, int, bytes]]:
    """(file index, file name, line number, raw line) for every line of every file."""
    for index, path in enumerate(paths):
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                yield index, str(path), number, raw


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("hash"), str) or not isinstance(record.get("prev"), str):
        return None
    return record


def verify_chain(paths: Sequence[str | Path], anchor: str | None = None) -> ChainReport:
    """Verify the chain across `paths`; `report.problem` is the first break, or None."""
    report = ChainReport(files=len(paths))
    expected: str | None = None  # the hash the next record must name as `prev`
    torn: _Torn | None = None
    anchored = anchor is None
    current_file = -1
    last = ("", 0)
    for index, name, number, raw in _lines(paths):
        new_file, current_file = index != current_file, index
        if new_file and torn is not None and torn.terminated:
            # A complete but unreadable line at the end of a file is not a torn write.
            return _fail(report, torn.file, torn.line, "malformed", "not a chained JSON record")
        last = (name, number)
        record = _parse(raw)
        if record is None:
            if torn is not None:
                return _fail(report, torn.file, torn.line, "malformed", "not a chained JSON record")
            text = raw.rstrip(b"\n")
            torn = _Torn(name, number, len(text), raw.endswith(b"\n"))
            continue
        claimed = record.pop("hash")
        if chain_hash(record) != claimed:
            return _fail(
                report, name, number, "edited", "the record's hash does not match its content"
            )
        is_marker = record.get("type") == MARKER
        if torn is not None:
            acknowledged = record.get("previous_torn" if new_file else "torn_tail")
            if not is_marker or acknowledged != torn.length:
                return _fail(report, torn.file, torn.line, "malformed", "not a chained JSON record")
            torn = None
        prev = record["prev"]
        if expected is None:
            if prev != GENESIS:
                if not is_marker:
                    return _fail(
                        report, name, number, "removed",
                        "the first record does not begin a chain (prev is not the genesis "
                        "hash) and is no marker: records before it were removed",
                    )  # fmt: skip
                report.notes.append(
                    f"{name}:{number} continues an earlier file (prev {prev[:16]}…): "
                    "pass that file first to check the link"
                )
        elif prev != expected:
            return _classify(report, paths, name, number, prev, claimed)
        expected = claimed
        anchored = anchored or claimed == anchor
        report.records += 1
        report.markers += is_marker
        report.decisions += not is_marker
        report.head = claimed
    if torn is not None:
        if torn.terminated:
            return _fail(report, torn.file, torn.line, "malformed", "not a chained JSON record")
        return _fail(
            report, torn.file, torn.line, "torn",
            "the last line is incomplete: the writer stopped mid-write (a restarted server "
            "marks it), or the file was cut",
        )  # fmt: skip
    if not anchored:
        return _fail(
            report, last[0], last[1] + 1, "anchor",
            f"the chain does not contain the anchor {anchor}: records at its end were "
            "removed (or the anchor belongs to another log)",
        )  # fmt: skip
    return report


def _fail(report: ChainReport, file: str, line: int, kind: str, message: str) -> ChainReport:
    report.problem = ChainProblem(file, line, kind, message)
    return report


def _classify(
    report: ChainReport, paths: Sequence[str | Path], name: str, number: int, prev: str, own: str
) -> ChainReport:
    """Name the break at (name, number): where else do `prev` and its own hash occur?"""
    here: int | None = None
    predecessor: int | None = None
    predecessor_at = ""
    duplicate_at = ""
    prev_key, own_key = prev.encode(), own.encode()
    for position, (_, file, line, raw) in enumerate(_lines(paths)):
        if file == name and line == number:
            here = position
            continue
        if prev_key not in raw and own_key not in raw:
            continue
        record = _parse(raw)
        if record is None:
            continue
        if record["hash"] == own and here is None and not duplicate_at:
            duplicate_at = f"{file}:{line}"
        if record["hash"] == prev and predecessor is None:
            predecessor, predecessor_at = position, f"{file}:{line}"
    if duplicate_at:
        return _fail(report, name, number, "duplicated", f"the same record as {duplicate_at}")
    if prev == GENESIS:
        return _fail(
            report, name, number, "restarted",
            "a new chain begins here (prev is the genesis hash): the link to the records "
            "before it is lost",
        )  # fmt: skip
    if predecessor is None:
        return _fail(
            report, name, number, "removed",
            f"the record before it is missing (prev {prev[:16]}… matches no record): records "
            "were removed here, or the record before was edited and re-hashed",
        )  # fmt: skip
    if here is not None and predecessor > here:
        return _fail(
            report, name, number, "reordered",
            f"its predecessor is {predecessor_at}, later in the log",
        )  # fmt: skip
    return _fail(
        report, name, number, "inserted",
        f"it follows {predecessor_at}, not the line before it: the record(s) in between "
        "were inserted (or records were reordered)",
    )  # fmt: skip
