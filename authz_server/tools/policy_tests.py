"""`authz-server test`: policy test files, each case decided offline (`check/offline.py`).

    policy: ../policy              # a file or directory, relative to this test file
    cases:
      - name: publishing on a Saturday is refused
        request: {principal: "spiffe://example.org/ci/release", method: POST,
                  path: /v1/releases/7, at: "2026-11-28T10:00:00+01:00"}
        expect: {decision: deny, reason: outside_schedule}

`request` takes `principal` (taken as verified; omit it for an anonymous caller),
`method` (GET), `host`, `path` (with `?query`), `headers` (name: value, or a list of
values that is joined with `,` as Envoy does), `body` (a mapping or list is sent as
JSON with `content-type: application/json`; a string is sent byte for byte) and `at`
(ISO 8601 with an offset; default now). `expect` compares `decision` (allow or deny,
the policy's decision: in dry run the would-be one), and when given `reason`, `rule`
(null for none) and `dry_run`.

Each case is decided by `decide_offline`, as `check` decides: the principal taken as
verified, on empty state (a rate limit admits, an approval is `approval_required`).

Output: one line per failed case with file, line, name and what differed, then
`N passed, M failed`. Exit 0 when all passed, 1 when any failed (a policy that does not
load fails all its cases), 2 when a test file cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz_server.check.offline import (
    OfflineRequest,
    decide_offline,
    offline_snapshot,
    parse_at,
)
from authz_server.core.decision import Decision
from authz_server.core.errors import PolicyError
from authz_server.core.yaml_source import Broken, Fields, Map, Scalar, Seq, Value, parse_document
from authz_server.policy.load import load_policy
from authz_server.policy.model import Policy

__all__ = ["add_commands", "run_tests"]

EXIT_OK, EXIT_FAILED, EXIT_UNREADABLE = 0, 1, 2
_TOP = frozenset({"policy", "cases"})
_CASE = frozenset({"name", "request", "expect"})
_REQUEST = frozenset({"principal", "method", "host", "path", "headers", "body", "at"})
_EXPECT = frozenset({"decision", "reason", "rule", "dry_run"})
_PATTERNS = ("*_test.yaml", "*_test.yml", "*.test.yaml", "*.test.yml")


@dataclass(frozen=True, slots=True)
class _Case:
    file: str
    line: int
    name: str
    request: OfflineRequest
    expect: dict[str, Any]


class _Unreadable(Exception):
    pass


def run_tests(paths: Sequence[str], out: Callable[[str], None] = print) -> int:
    """Run every case of every test file under `paths`; print failures and the summary."""
    files, unreadable = _test_files(paths)
    passed = failed = 0
    policies: dict[Path, Policy | PolicyError] = {}
    for file in files:
        try:
            policy_path, cases = _read(file)
        except _Unreadable as error:
            print(f"error: {error}", file=sys.stderr)
            unreadable = True
            continue
        if policy_path not in policies:
            try:
                policies[policy_path] = load_policy(policy_path)
            except PolicyError as error:
                policies[policy_path] = error
                out(f"policy {policy_path} rejected ({len(error.issues)} error(s)):")
                for issue in error.issues:
                    out(f"  {issue}")
        policy = policies[policy_path]
        for case in cases:
            problem = "policy does not load" if isinstance(policy, PolicyError) else None
            if problem is None:
                assert isinstance(policy, Policy)
                problem = _differences(asyncio.run(_decide(policy, case.request)), case)
            if problem is None:
                passed += 1
            else:
                failed += 1
                out(f"FAIL {case.file}:{case.line} {case.name}: {problem}")
    out(f"{passed} passed, {failed} failed")
    if unreadable:
        return EXIT_UNREADABLE
    return EXIT_FAILED if failed else EXIT_OK


async def _decide(policy: Policy, request: OfflineRequest) -> Decision:
    return await decide_offline(offline_snapshot(policy), request.view(), request.at)


def _differences(decision: Decision, case: _Case) -> str | None:
    got = {
        "decision": decision.verdict,
        "reason": decision.reason.value,
        "rule": decision.rule,
        "dry_run": decision.dry_run,
    }
    wrong = [
        f"{key}: expected {_show(value)}, got {_show(got[key])}"
        for key, value in case.expect.items()
        if got[key] != value
    ]
    if not wrong:
        return None
    context = ", ".join(f"{k} {_show(v)}" for k, v in got.items() if k not in case.expect)
    return "; ".join(wrong) + (f" ({context})" if context else "")


def _show(value: object) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def _test_files(paths: Sequence[str]) -> tuple[list[Path], bool]:
    files: list[Path] = []
    unreadable = False
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted({f for pattern in _PATTERNS for f in path.rglob(pattern)})
            if not found:
                print(
                    f"error: no test files ({', '.join(_PATTERNS)}) under {path}", file=sys.stderr
                )
                unreadable = True
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            print(f"error: {path}: no such file or directory", file=sys.stderr)
            unreadable = True
    return files, unreadable


def _read(file: Path) -> tuple[Path, list[_Case]]:
    try:
        data = file.read_bytes()
    except OSError as error:
        raise _Unreadable(f"{file}: {error.strerror}") from None
    tree, issues = parse_document(data, str(file))
    fields = Fields(str(file), issues)
    top = fields.mapping(tree, None, _TOP) if tree is not None else None
    policy: Path | None = None
    cases: list[_Case] = []
    if top is not None:
        if "policy" not in top.entries:
            fields.issue(top.line, "policy", "required: the policy file or directory to test")
        elif (text := fields.string(top.entries["policy"], "policy")) is not None:
            policy = (file.parent / text).resolve()
        listed = top.entries.get("cases")
        if not isinstance(listed, Seq) or not listed.items:
            fields.issue(top.line, "cases", "required: a non-empty list of cases")
        else:
            for i, item in enumerate(listed.items):
                case = _case(fields, item, f"cases[{i}]", str(file))
                if case is not None:
                    cases.append(case)
    if fields.issues or policy is None:
        raise _Unreadable("\n".join(str(issue) for issue in fields.issues))
    return policy, cases


def _case(fields: Fields, value: Value, path: str, file: str) -> _Case | None:
    node = fields.mapping(value, path, _CASE)
    if node is None:
        return None
    before = len(fields.issues)
    name = fields.string(node.entries.get("name", Broken(node.line)), f"{path}.name")
    if "name" not in node.entries:
        fields.issue(node.line, f"{path}.name", "required")
    request = _request(fields, node.entries.get("request"), f"{path}.request", node.line)
    expect = _expect(fields, node.entries.get("expect"), f"{path}.expect", node.line)
    if len(fields.issues) != before or request is None or expect is None:
        return None
    return _Case(file, node.line, name or "", request, expect)


def _request(fields: Fields, value: Value | None, path: str, line: int) -> OfflineRequest | None:
    if value is None:
        fields.issue(line, path, "required")
        return None
    node = fields.mapping(value, path, _REQUEST)
    if node is None:
        return None
    entries = node.entries
    text: dict[str, str] = {}
    for key in ("principal", "method", "host", "path", "at"):
        if key in entries and (v := fields.string(entries[key], f"{path}.{key}")) is not None:
            text[key] = v
    if "path" not in entries:
        fields.issue(node.line, f"{path}.path", "required")
    at = None
    if "at" in text:
        try:
            at = parse_at(text["at"])
        except ValueError as error:
            fields.issue(entries["at"].line, f"{path}.at", str(error))
    headers: list[tuple[str, str]] = []
    if "headers" in entries:
        headers = _headers(fields, entries["headers"], f"{path}.headers")
    body = None
    if "body" in entries:
        raw = entries["body"]
        if isinstance(raw, Scalar) and isinstance(raw.value, str):
            body = raw.value.encode("utf-8", "surrogateescape")
        else:
            body = json.dumps(_plain(raw), separators=(",", ":")).encode()
    return OfflineRequest(
        path=text.get("path", "/"),
        method=text.get("method", "GET"),
        principal=text.get("principal", ""),
        host=text.get("host", ""),
        headers=tuple(headers),
        body=body,
        at=at,
    )


def _headers(fields: Fields, value: Value, path: str) -> list[tuple[str, str]]:
    if not isinstance(value, Map):
        fields.wrong_type(value, path, "a mapping of header names to values")
        return []
    headers: list[tuple[str, str]] = []
    for name, item in value.entries.items():
        items = item.items if isinstance(item, Seq) else (item,)
        for one in items:
            if (text := fields.string(one, f"{path}.{name}")) is not None:
                headers.append((name, text))
    return headers


def _expect(fields: Fields, value: Value | None, path: str, line: int) -> dict[str, Any] | None:
    if value is None:
        fields.issue(line, path, "required")
        return None
    node = fields.mapping(value, path, _EXPECT)
    if node is None:
        return None
    expect: dict[str, Any] = {}
    if "decision" not in node.entries:
        fields.issue(node.line, f"{path}.decision", "required (allow or deny)")
    for key, item in node.entries.items():
        where = f"{path}.{key}"
        if key == "decision":
            expect[key] = fields.choice(item, where, ("allow", "deny"))
        elif key == "dry_run":
            expect[key] = fields.boolean(item, where)
        elif key == "rule" and isinstance(item, Scalar) and item.value is None:
            expect[key] = None
        else:
            expect[key] = fields.string(item, where)
    return expect


def _plain(value: Value) -> Any:
    if isinstance(value, Scalar):
        return value.value
    if isinstance(value, Seq):
        return [_plain(item) for item in value.items]
    if isinstance(value, Map):
        return {key: _plain(item) for key, item in value.entries.items()}
    return None


def _run(args: argparse.Namespace) -> int:
    return run_tests(args.paths)


def add_commands(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """`test`, for the project CLI."""
    parser = subparsers.add_parser(
        "test",
        help="run policy test files",
        description="Run policy test files: each names a policy and cases of a request and "
        "the expected decision. Exit 0 when all pass, 1 when any fails, 2 when a test file "
        "cannot be read.",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="test files, or directories of *_test.yaml"
    )
    return {"test": _run}
