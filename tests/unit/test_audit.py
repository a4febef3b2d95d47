"""The audit log: hash chain, restarts, rotation, a failing sink, and what verify finds."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.audit.log import (
    GENESIS,
    AuditLog,
    MemoryAudit,
    canonical_json,
    chain_hash,
    format_time,
)
from authz_server.audit.verify import verify_chain


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _decisions(path: Path) -> list[str]:
    return [r["decision_id"] for r in _records(path) if "decision_id" in r]


def _log(path: Path, ids: range | list[int], **kwargs: Any) -> AuditLog:
    audit = AuditLog(str(path), **kwargs)
    for i in ids:
        audit.record({"decision_id": f"d{i}", "decision": "allow", "status": 200})
    return audit


def _write(path: Path, count: int) -> None:
    _log(path, range(count)).close()


def _ok(*paths: Path) -> None:
    report = verify_chain(list(paths))
    assert report.problem is None, report.problem


# --- the chain ---------------------------------------------------------------------------


def test_records_are_chained_from_genesis(tmp_path: Path) -> None:
    """Each record names the previous record's hash, and its own hash covers its content."""
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    records = _records(path)
    assert records[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    for record in records:
        claimed = record.pop("hash")
        assert chain_hash(record) == claimed
    _ok(path)


def test_record_is_in_the_file_before_record_returns(tmp_path: Path) -> None:
    """Write-through: a SIGKILL right after a decision cannot lose its record."""
    path = tmp_path / "audit.jsonl"
    audit = _log(path, range(1))
    assert _decisions(path) == ["d0"]
    audit.close()


def test_restart_continues_the_chain_with_a_marker(tmp_path: Path) -> None:
    """A server restarted on the same file links its first record to the last one there."""
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    _log(path, range(2, 4)).close()
    records = _records(path)
    marker = records[2]
    assert (marker["type"], marker["event"]) == ("chain", "restart")
    assert marker["prev"] == records[1]["hash"]
    assert _decisions(path) == ["d0", "d1", "d2", "d3"]
    _ok(path)


def test_torn_last_line_is_terminated_and_acknowledged(tmp_path: Path) -> None:
    """A line cut by a crash is closed off, and the restart marker records its length."""
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    with path.open("ab") as f:
        f.write(b'{"decision_id":"d2","sta')
    report = verify_chain([path])
    assert report.problem is not None and report.problem.kind == "torn"
    _log(path, range(3, 4)).close()
    marker = _records_lenient(path)[2]
    assert marker["torn_tail"] == len('{"decision_id":"d2","sta')
    _ok(path)


def _records_lenient(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


_AWKWARD_VALUES = [
    pytest.param("spiffe://example.org/ns/a/sa/b", id="plain"),
    pytest.param("".join(map(chr, range(128))), id="every-ascii-character"),
    pytest.param('ü é "quoted" \\ \u2028 \U0001f600', id="non-ascii-and-escapes"),
    pytest.param(2**70, id="big-int"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("value", _AWKWARD_VALUES)
def test_line_is_the_canonical_json_with_its_hash(tmp_path: Path, value: object) -> None:
    """Each line is json.dumps(sort_keys, compact, ASCII) of the record plus its hash, last."""
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    audit.record({"path": value, "decision": "allow", "status": 200})
    audit.close()
    line = path.read_bytes()
    record = json.loads(line)
    claimed = record.pop("hash")
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert line == f'{canonical[:-1]},"hash":"{claimed}"}}\n'.encode()
    assert chain_hash(record) == claimed
    assert record["path"] == value
    _ok(path)


_JSON_SCALARS = (
    st.text()  # any code point, lone surrogates and DEL included
    | st.text(alphabet=st.characters(max_codepoint=127))
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        _JSON_SCALARS
        | st.lists(_JSON_SCALARS, max_size=3)
        | st.dictionaries(st.text(max_size=4), _JSON_SCALARS, max_size=3),
        max_size=12,
    )
)
def test_canonical_json_is_exactly_json_dumps(record: dict[str, object]) -> None:
    """The fast encoder and the defining one agree on every record, not only on typical ones."""
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert canonical_json(record) == expected


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(0.0, id="epoch"),
        pytest.param(1_764_400_000.0, id="whole-second"),
        pytest.param(1_764_400_000.123456, id="micros"),
        pytest.param(1_764_400_000.9999996, id="rounds-into-next-second"),
        pytest.param(1_764_400_000.0000005, id="half-micro"),
        pytest.param(1_767_225_599.9999999, id="rounds-into-new-year"),
        *(pytest.param(1_764_400_000 + i / 7, id=f"seventh-{i}") for i in range(1, 8)),
    ],
)
def test_time_format_matches_datetime(at: float) -> None:
    """The cached time formatter writes what datetime.isoformat writes, at any instant."""
    expected = datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")
    assert format_time(at) == expected
    assert format_time(at) == expected  # the cached second, again


def test_memory_audit_chains_records() -> None:
    """The test double chains like the real log."""
    audit = MemoryAudit()
    audit.record({"decision_id": "a"})
    audit.record({"decision_id": "b"})
    assert audit.records[1]["prev"] == audit.records[0]["hash"]
    assert audit.head == audit.records[1]["hash"]


def test_stdout_target_writes_lines(capfd: pytest.CaptureFixture[str]) -> None:
    """`--audit-log -` writes the chained lines to standard output."""
    audit = _log(Path("-"), range(2))
    audit.close()
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert [r["decision_id"] for r in lines] == ["d0", "d1"]


# --- rotation ----------------------------------------------------------------------------


def _rename(path: Path) -> Path:
    rotated = path.with_name(path.name + ".1")
    path.rename(rotated)
    return rotated


def _copytruncate(path: Path) -> Path:
    rotated = path.with_name(path.name + ".1")
    shutil.copy(path, rotated)
    with path.open("r+b") as f:
        f.truncate(0)
    return rotated


def _delete(path: Path) -> Path:
    path.unlink()
    return path  # nothing of the old file survives


ROTATIONS = [
    pytest.param(_rename, True, id="rename"),
    pytest.param(_copytruncate, True, id="copytruncate"),
    pytest.param(_delete, False, id="delete"),
]


@pytest.mark.parametrize(("rotate", "old_survives"), ROTATIONS)
def test_rotation_starts_a_linked_file(
    tmp_path: Path, rotate: Callable[[Path], Path], old_survives: bool
) -> None:
    """After rotation the new file begins with a marker linked to the old file's last hash."""
    path = tmp_path / "audit.jsonl"
    audit = _log(path, range(3))
    rotated = rotate(path)
    audit.flush()  # the server's periodic flush notices
    for i in range(3, 5):
        audit.record({"decision_id": f"d{i}", "status": 403})
    audit.close()
    records = _records(path)
    assert (records[0]["type"], records[0]["event"]) == ("chain", "rotate")
    assert _decisions(path) == ["d3", "d4"]
    if old_survives:
        assert _decisions(rotated) == ["d0", "d1", "d2"]
        _ok(rotated, path)
    report = verify_chain([path])
    assert report.problem is None
    assert "continues an earlier file" in report.notes[0]


def test_records_after_a_rename_but_before_the_flush_stay_in_the_old_file(tmp_path: Path) -> None:
    """Until the rotation is noticed, records go on into the renamed file, still chained."""
    path = tmp_path / "audit.jsonl"
    audit = _log(path, range(2))
    rotated = _rename(path)
    audit.record({"decision_id": "d2", "status": 200})
    audit.flush()
    audit.record({"decision_id": "d3", "status": 200})
    audit.close()
    assert _decisions(rotated) == ["d0", "d1", "d2"]
    assert _decisions(path) == ["d3"]
    _ok(rotated, path)


def test_start_beside_a_rotated_file_links_to_it(tmp_path: Path) -> None:
    """Rotated while the server was down: the new file links to the newest rotated one,
    never to another worker's chain (`--workers N` writes `FILE.workerI`)."""
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    rotated = _rename(path)
    _write(tmp_path / "audit.jsonl.worker0", 1)
    _log(path, range(2, 3)).close()
    marker = _records(path)[0]
    assert marker["previous_file"] == "audit.jsonl.1"
    _ok(rotated, path)


# --- a sink that fails ---------------------------------------------------------------------


def _swap_to_dev_full(path: Path) -> Path:
    rotated = _rename(path)
    path.symlink_to("/dev/full")  # every write fails with ENOSPC
    return rotated


def _swap_to_directory(path: Path) -> Path:
    rotated = _rename(path)
    path.mkdir()  # cannot be opened for writing
    return rotated


def _restore(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        path.rmdir()


@pytest.mark.parametrize(
    "break_sink",
    [
        pytest.param(_swap_to_dev_full, id="disk-full"),
        pytest.param(_swap_to_directory, id="directory-in-its-place"),
    ],
)
def test_failing_sink_keeps_records_fails_closed_and_recovers(
    tmp_path: Path, break_sink: Callable[[Path], Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Records wait in memory, health drops at the limit, and all are written on recovery."""
    path = tmp_path / "audit.jsonl"
    audit = _log(path, range(2), max_pending=4)
    rotated = break_sink(path)
    audit.flush()
    assert audit.healthy
    waiting = 0
    while audit.healthy:
        audit.record({"decision_id": f"w{waiting}", "status": 200})
        waiting += 1
        assert waiting <= 4
    assert audit.stats.write_errors > 0
    assert "kept in memory" in caplog.text
    _restore(path)
    audit.flush()
    assert audit.healthy and audit.pending == 0
    audit.close()
    assert _decisions(path) == [f"w{i}" for i in range(waiting)]
    _ok(rotated, path)


def test_records_waiting_too_long_also_fail_closed(tmp_path: Path) -> None:
    """A quiet server with a broken sink does not keep deciding on records held in memory."""
    path = tmp_path / "audit.jsonl"
    audit = _log(path, range(1), max_pending=100, max_wait=0.2)
    rotated = _swap_to_dev_full(path)
    audit.flush()
    audit.record({"decision_id": "waiting", "status": 200})
    assert audit.healthy
    time.sleep(0.3)  # longer than max_wait: a bound crossed, not a timing measurement
    assert not audit.healthy
    assert "write failed" in (audit.problem() or "")
    _restore(path)
    audit.flush()
    assert audit.healthy
    audit.close()
    _ok(rotated, path)


def test_denies_beyond_twice_the_limit_are_counted_in_a_gap_marker(tmp_path: Path) -> None:
    """Fail-closed denies past the buffer are dropped but counted; allows are always kept."""
    path = tmp_path / "audit.jsonl"
    audit = _log(path, range(1), max_pending=2)
    rotated = _swap_to_dev_full(path)
    audit.flush()
    for i in range(6):
        audit.record({"decision_id": f"x{i}", "status": 503})
    audit.record({"decision_id": "late-allow", "status": 200})
    # Room for four: the rotate marker and three denies; the other three are counted.
    assert audit.stats.dropped == 3
    _restore(path)
    audit.flush()
    audit.close()
    records = _records(path)
    gaps = [r for r in records if r.get("event") == "gap"]
    assert [g["dropped"] for g in gaps] == [audit.stats.dropped]
    assert _decisions(path)[-1] == "late-allow"
    kept = len([d for d in _decisions(path) if d.startswith("x")])
    assert kept + audit.stats.dropped == 6
    _ok(rotated, path)


def test_close_with_unwritable_records_says_they_are_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Records that could never be written are reported at shutdown, not silently gone."""
    path = tmp_path / "audit.jsonl"
    audit = _log(path, range(1))
    _swap_to_dev_full(path)
    audit.flush()
    audit.record({"decision_id": "stuck", "status": 403})
    with caplog.at_level(logging.ERROR):
        audit.close()
    assert "could not be written and are lost" in caplog.text


# --- what verify finds ---------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _rehash(line: str, **changes: Any) -> str:
    record = json.loads(line)
    record.update(changes)
    record.pop("hash")
    record["hash"] = chain_hash(record)
    return json.dumps(record, separators=(",", ":")) + "\n"


def _edit(lines: list[str]) -> list[str]:
    lines[2] = lines[2].replace('"allow"', '"deny"')
    return lines


def _edit_and_rehash(lines: list[str]) -> list[str]:
    lines[2] = _rehash(lines[2], decision="deny")
    return lines


def _remove(lines: list[str]) -> list[str]:
    del lines[2]
    return lines


def _remove_first(lines: list[str]) -> list[str]:
    return lines[1:]


def _swap(lines: list[str]) -> list[str]:
    lines[2], lines[3] = lines[3], lines[2]
    return lines


def _duplicate(lines: list[str]) -> list[str]:
    return [*lines[:3], lines[2], *lines[3:]]


def _insert_forged(lines: list[str]) -> list[str]:
    before = json.loads(lines[1])
    forged = {"decision_id": "forged", "decision": "allow", "status": 200, "prev": before["hash"]}
    forged["hash"] = chain_hash(forged)
    return [*lines[:2], json.dumps(forged) + "\n", *lines[2:]]


def _garbage(lines: list[str]) -> list[str]:
    lines[3] = "not json at all\n"
    return lines


def _new_chain(lines: list[str]) -> list[str]:
    lines[3] = _rehash(lines[3], prev=GENESIS)
    return lines


#: (change, finding, 1-based line it names)
TAMPERING = [
    pytest.param(_edit, "edited", 3, id="edited"),
    pytest.param(_edit_and_rehash, "removed", 4, id="edited-and-rehashed"),
    pytest.param(_remove, "removed", 3, id="removed"),
    pytest.param(_remove_first, "removed", 1, id="first-removed"),
    pytest.param(_swap, "reordered", 3, id="reordered"),
    pytest.param(_duplicate, "duplicated", 4, id="duplicated"),
    pytest.param(_insert_forged, "inserted", 4, id="inserted"),
    pytest.param(_garbage, "malformed", 4, id="malformed"),
    pytest.param(_new_chain, "restarted", 4, id="restarted"),
]


@pytest.mark.parametrize(("tamper", "kind", "line"), TAMPERING)
def test_verify_names_the_first_bad_record(
    tmp_path: Path, tamper: Callable[[list[str]], list[str]], kind: str, line: int
) -> None:
    """Each kind of tampering is reported with its kind and the line where the chain breaks."""
    path = tmp_path / "audit.jsonl"
    _write(path, 6)
    path.write_text("".join(tamper(_lines(path))))
    problem = verify_chain([path]).problem
    assert problem is not None
    assert (problem.kind, problem.line) == (kind, line), problem


def test_verify_across_files_detects_a_missing_middle_file(tmp_path: Path) -> None:
    """Leaving out a rotated file breaks the link at the next file's first record."""
    path = tmp_path / "audit.jsonl"
    audit = _log(path, range(2))
    first = _rename(path)
    audit.flush()
    audit.record({"decision_id": "d2", "status": 200})
    second = path.rename(tmp_path / "audit.jsonl.2")
    audit.flush()
    audit.record({"decision_id": "d3", "status": 200})
    audit.close()
    _ok(first, second, path)
    problem = verify_chain([first, path]).problem
    assert problem is not None and (problem.kind, problem.line) == ("removed", 1)


def test_anchor_detects_a_cut_tail(tmp_path: Path) -> None:
    """A head published earlier must still be in the chain: cutting the end shows."""
    path = tmp_path / "audit.jsonl"
    audit = _log(path, range(4))
    anchor = audit.head
    audit.close()
    assert verify_chain([path], anchor=anchor).problem is None
    path.write_text("".join(_lines(path)[:-1]))
    problem = verify_chain([path], anchor=anchor).problem
    assert problem is not None and problem.kind == "anchor"


def test_verify_counts_decisions_and_markers(tmp_path: Path) -> None:
    """The report separates decision records from chain markers and gives the head."""
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    audit = _log(path, range(2, 3))
    head = audit.head
    audit.close()
    report = verify_chain([path])
    assert (report.records, report.decisions, report.markers) == (4, 3, 1)
    assert report.head == head


def test_log_file_is_not_world_readable(tmp_path: Path) -> None:
    """The log is created owner read-write, group read: never world-readable."""
    path = tmp_path / "audit.jsonl"
    _write(path, 1)
    assert os.stat(path).st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
