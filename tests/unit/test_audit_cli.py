"""`authz-server audit verify` and `authz-server replay` on a log written by the real service."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from authz_server.audit.log import AuditLog
from authz_server.check.pipeline import Pipeline
from authz_server.check.service import CheckService
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.cli import main as cli
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from tests.conftest import make_check_request

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"

POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
rules:
  - id: orders-read
    methods: [GET]
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: reports
    paths: ["/v1/reports/**"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
    when:
      headers:
        x-team: {equals: shop}
  - id: health
    paths: ["/healthz"]
    unauthenticated: true
    effect: allow
"""

#: (name, CheckRequest fields): one decision each, in this order in the log.
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("orders", {"path": "/v1/orders/1", "principal": FRONTEND}),
    ("unmatched", {"path": "/v1/admin", "principal": FRONTEND}),
    ("health", {"path": "/healthz"}),
    ("reports", {"path": "/v1/reports/q3", "principal": FRONTEND, "headers": {"x-team": "shop"}}),
    ("foreign", {"path": "/v1/orders/1", "principal": "spiffe://evil.org/x"}),
    ("dots", {"path": "/v1/orders/../admin", "principal": FRONTEND}),
]


async def _decide_all(audit: AuditLog) -> None:
    policy = load_policy_text(POLICY)
    service = CheckService(
        Pipeline(MemoryStore()), SnapshotHolder(Snapshot(policy, TrustBundles.empty())), audit
    )
    for _, fields in REQUESTS:
        await service.check_bytes(make_check_request(**fields).SerializeToString())
    await service.check_bytes(b"\xff\xff not a protobuf")


@pytest.fixture
def audit_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An audit log of REQUESTS plus one malformed Check; returns it and the decision ids."""
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    asyncio.run(_decide_all(audit))
    audit.close()
    ids = [json.loads(line)["decision_id"] for line in path.read_text().splitlines()]
    return path, dict(zip([name for name, _ in REQUESTS], ids, strict=False))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _candidate(tmp_path: Path, text: str) -> str:
    path = tmp_path / "candidate.yaml"
    path.write_text(text)
    return str(path)


# --- audit verify ------------------------------------------------------------------------


def test_verify_intact_log_exits_0(
    audit_file: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """An untouched log verifies, with its record count and head."""
    path, _ = audit_file
    code, out = _run(capsys, "audit", "verify", str(path))
    assert code == 0, out
    assert out.startswith("ok: 7 record(s) (7 decisions, 0 chain markers) in 1 file(s); head ")


def test_verify_edited_log_exits_1_naming_the_line(
    audit_file: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Turning a recorded deny into an allow is reported at its line."""
    path, _ = audit_file
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"decision":"deny"', '"decision":"allow"')
    path.write_text("".join(lines))
    code, out = _run(capsys, "audit", "verify", str(path))
    assert code == 1
    assert f"{path}:2: edited: the record's hash does not match its content" in out
    assert "1 record(s) before it are intact" in out


def test_verify_missing_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that does not exist is named, not treated as an empty chain."""
    code, out = _run(capsys, "audit", "verify", str(tmp_path / "nope.jsonl"))
    assert code == 1
    assert "nope.jsonl' not found" in out


# --- replay --------------------------------------------------------------------------------


def test_replaying_the_recorded_policy_changes_nothing(
    audit_file: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The policy that made the decisions changes none; the header-conditioned one is
    uncertain because the record holds no headers."""
    path, ids = audit_file
    code, out = _run(capsys, "replay", "--policy", _candidate(tmp_path, POLICY), str(path))
    assert code == 0, out
    assert "0 changed, 5 unchanged, 1 uncertain; 1 not replayed" in out
    assert ids["reports"] in out.split("uncertain (1)")[1]
    assert "not replayed: 1 no request recorded (malformed or non-HTTP Check)" in out
    assert "audit records hold no headers, query, body or certificate" in out
    strict, _ = _run(
        capsys, "replay", "--strict", "--policy", _candidate(tmp_path, POLICY), str(path)
    )
    assert strict == 1


EVIL_RULE = """\
  - id: evil
    paths: ["/v1/**"]
    principals: ["spiffe://evil.org/**"]
    effect: allow
"""
FREEZE_RULE = """\
  - id: freeze
    paths: ["/v1/orders/**"]
    effect: deny
    mode: dry_run
"""

#: (candidate policy edit, decision that changes, old → new as printed)
CANDIDATES = [
    pytest.param(
        lambda text: text.replace("methods: [GET]", "methods: [POST]", 1),
        "orders",
        "allow allowed_by_rule [orders-read] -> deny no_matching_rule [-]",
        id="grant-narrowed",
    ),
    pytest.param(
        lambda text: text.replace("[example.org]", "[example.org, evil.org]") + EVIL_RULE,
        "foreign",
        "deny untrusted_trust_domain [-] -> allow allowed_by_rule [evil]",
        id="new-trust-domain",
    ),
    pytest.param(
        lambda text: text + FREEZE_RULE,
        "orders",
        "allow allowed_by_rule [orders-read] -> deny (dry run) denied_by_rule [freeze]",
        id="dry-run-deny",
    ),
]


@pytest.mark.parametrize(("edit", "changed", "shown"), CANDIDATES)
def test_replay_lists_each_changed_decision(
    audit_file: tuple[Path, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Any,
    changed: str,
    shown: str,
) -> None:
    """A candidate that decides a recorded request differently lists it and exits 1."""
    path, ids = audit_file
    code, out = _run(capsys, "replay", "--policy", _candidate(tmp_path, edit(POLICY)), str(path))
    assert code == 1, out
    listed = out.split("changed (1):\n")[1].splitlines()
    assert ids[changed] in listed[0]
    assert listed[1].strip() == shown


def test_replay_reads_rotated_files_in_order_and_skips_markers(
    audit_file: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chain markers are not decisions; several files are replayed as one log."""
    path, _ = audit_file
    rotated = path.rename(tmp_path / "audit.jsonl.1")
    AuditLog(str(path)).close()  # starts with a rotate marker linked to audit.jsonl.1
    code, out = _run(
        capsys, "replay", "--policy", _candidate(tmp_path, POLICY), str(rotated), str(path)
    )
    assert code == 0, out
    assert "6 decision(s) replayed" in out


def test_replay_with_an_invalid_candidate_lists_its_errors(
    audit_file: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A candidate that does not load is rejected with its errors, exit 1."""
    path, _ = audit_file
    code, out = _run(capsys, "replay", "--policy", _candidate(tmp_path, "version: 2\n"), str(path))
    assert code == 1
    assert "policy rejected" in out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("# authz-server\n\nPer-action authorization\n", "line 1 is not JSON", id="markdown"),
        pytest.param("\n\n  \nnot json\n", "line 4 is not JSON", id="blank-lines-then-text"),
        pytest.param('["a", "b"]\n', "line 1 is JSON but not an object", id="json-array"),
        pytest.param('{"decision": "allow"}\n', "line 1 is a JSON object without the chain fields prev and hash", id="unchained-object"),
    ],
)  # fmt: skip
def test_replay_refuses_a_file_that_is_not_an_audit_log(
    audit_file: tuple[Path, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    problem: str,
) -> None:
    """Replaying the wrong file is an error, exit 2 with one line, not "0 changed" (exit
    1 would read as "decisions changed"); nothing is replayed, not even the good file."""
    path, _ = audit_file
    wrong = tmp_path / "notes.md"
    wrong.write_text(text)
    code = cli.main(["replay", "--policy", _candidate(tmp_path, POLICY), str(path), str(wrong)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err == f"authz-server replay: {wrong} is not an audit log: {problem}\n"


def test_replay_of_a_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file is named; its exit code cannot be mistaken for changed decisions."""
    code, out = _run(
        capsys, "replay", "--policy", _candidate(tmp_path, POLICY), str(tmp_path / "nope.jsonl")
    )
    assert code == 2
    assert "nope.jsonl' not found" in out


def test_replay_of_an_empty_log_or_a_damaged_line_inside_one_is_no_error(
    audit_file: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty file is an empty log; a torn line after real records is counted, not fatal."""
    path, _ = audit_file
    with path.open("a") as f:
        f.write('{"torn": \n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, out = _run(
        capsys, "replay", "--policy", _candidate(tmp_path, POLICY), str(empty), str(path)
    )
    assert code == 0, out
    assert "6 decision(s) replayed" in out
    assert "not replayed: 1 unreadable line" in out
