"""`authz-server audit verify` and `authz-server replay`: commands over the audit log.

    audit verify FILE... [--anchor HASH]   exit 0 intact; 1 naming the first bad record
    replay --policy CANDIDATE AUDIT_FILE... [--strict]
                                            exit 0 when no recorded decision changes; 1 else;
                                            2 when a file is missing or no audit log

Registered through `cli._FEATURE_COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authz_server.audit.files import audit_log_problem
from authz_server.audit.verify import verify_chain
from authz_server.check.replay import MISSING_FIELDS_NOTE, Change, replay_audit
from authz_server.core.errors import ConfigError
from authz_server.policy.load import load_policy

__all__ = ["add_commands"]

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_INVALID = 2

Handler = Callable[[argparse.Namespace], int]


def add_commands(subparsers: Any) -> dict[str, Handler]:
    audit = subparsers.add_parser("audit", help="work with the audit log")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="check the hash chain; exit 1 naming the first removed, reordered or edited record",
        description="Files are one chain in the order given, oldest first "
        "(e.g. audit.jsonl.1 audit.jsonl after rotation).",
    )
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit files, oldest first")
    verify.add_argument(
        "--anchor",
        metavar="HASH",
        help="a chain head published earlier (the server logs it on shutdown): fail unless "
        "the chain still contains it, which detects records cut from the end",
    )

    replay = subparsers.add_parser(
        "replay",
        help="list the recorded decisions a candidate policy would change",
        description=MISSING_FIELDS_NOTE[0].upper() + MISSING_FIELDS_NOTE[1:] + ".",
        epilog="Exit 0 when no recorded decision changes, 1 when one does (with --strict: "
        "also an uncertain one), 2 when a file is missing or is not an audit log.",
    )
    replay.add_argument("--policy", required=True, help="candidate policy file or directory")
    replay.add_argument(
        "files", nargs="+", metavar="AUDIT_FILE", help="audit files written by serve --audit-log"
    )
    replay.add_argument(
        "--strict", action="store_true", help="uncertain differences also make the exit code 1"
    )
    return {"audit": _audit, "replay": _replay}


def _existing(files: list[str]) -> list[Path]:
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"audit file {str(path)!r} not found")
    return paths


def _audit(args: argparse.Namespace) -> int:
    report = verify_chain(_existing(args.files), anchor=args.anchor)
    for note in report.notes:
        print(f"note: {note}")
    if report.problem is not None:
        print(report.problem)
        print(f"{report.records} record(s) before it are intact")
        return EXIT_FOUND
    print(
        f"ok: {report.records} record(s) ({report.decisions} decisions, {report.markers} "
        f"chain markers) in {report.files} file(s); head {report.head}"
    )
    return EXIT_OK


def _print_change(change: Change) -> None:
    record = change.record
    print(f"{record.get('time')} {record.get('decision_id')} {change.request}")
    print(f"    {change.old} -> {change.new}")


def _replay(args: argparse.Namespace) -> int:
    # Exit 1 means "the candidate changes decisions": a wrong file must not look like that.
    try:
        files = _existing(args.files)
    except ConfigError as error:
        print(f"authz-server replay: {error}", file=sys.stderr)
        return EXIT_INVALID
    for path in files:
        problem = audit_log_problem(path)
        if problem is not None:
            print(f"authz-server replay: {path} is not an audit log: {problem}", file=sys.stderr)
            return EXIT_INVALID
    policy = load_policy(args.policy)
    report = replay_audit(policy, files)
    if report.changes:
        print(f"changed ({len(report.changes)}):")
        for change in report.changes:
            _print_change(change)
    if report.uncertain:
        print(f"uncertain ({len(report.uncertain)}): they depend on what the record lacks")
        for change in report.uncertain:
            _print_change(change)
    skipped = sum(report.skipped.values())
    print(
        f"{report.replayed} decision(s) replayed against policy {policy.version[:12]}: "
        f"{len(report.changes)} changed, {report.unchanged} unchanged, "
        f"{len(report.uncertain)} uncertain; {skipped} not replayed"
    )
    for why, count in sorted(report.skipped.items()):
        print(f"  not replayed: {count} {why}")
    print(f"note: {MISSING_FIELDS_NOTE}")
    changed = bool(report.changes) or (args.strict and bool(report.uncertain))
    return EXIT_FOUND if changed else EXIT_OK
