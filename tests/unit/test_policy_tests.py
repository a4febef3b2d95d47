"""`authz-server test` (docs/policy/testing.md) and `authz-server check`: offline decisions from the
CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz_server.cli import main as cli
from authz_server.tools.policy_tests import run_tests

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
rules:
  - id: releases-publish
    methods: [POST]
    paths: ["/v1/releases/**"]
    principals: ["spiffe://example.org/ci/release"]
    effect: allow
    when:
      schedule: {timezone: Europe/Berlin, days: [mon, tue, wed, thu], hours: "09:00-16:00"}
      headers: {x-ticket: {regex: "CHG-[0-9]+"}}
  - id: transfers
    methods: [POST]
    paths: ["/v1/transfers"]
    effect: allow
    when:
      body: {amount: {lte: 1000}}
"""

CASES = """\
policy: policy.yaml
cases:
  - name: publishing in the window
    request: {principal: "spiffe://example.org/ci/release", method: POST,
              path: /v1/releases/7, at: "2026-11-26T10:00:00+01:00",
              headers: {X-Ticket: CHG-1}}
    expect: {decision: allow, rule: releases-publish}
  - name: publishing on a Saturday is refused
    request: {principal: "spiffe://example.org/ci/release", method: POST,
              path: /v1/releases/7, at: "2026-11-28T10:00:00+01:00"}
    expect: {decision: deny, reason: outside_schedule}
  - name: a repeated ticket header arrives comma-joined and fails the regex
    request: {principal: "spiffe://example.org/ci/release", method: POST,
              path: /v1/releases/7, at: "2026-11-26T10:00:00+01:00",
              headers: {x-ticket: [CHG-1, CHG-2]}}
    expect: {decision: deny, reason: condition_failed, rule: releases-publish}
  - name: a raw body with a duplicate key
    request: {principal: "spiffe://example.org/ops/a", method: POST, path: /v1/transfers,
              body: '{"amount": 1, "amount": 99999}'}
    expect: {decision: deny, reason: body_unavailable, rule: transfers, dry_run: false}
  - name: a mapping body is sent as JSON
    request: {principal: "spiffe://example.org/ops/a", method: POST, path: /v1/transfers,
              body: {amount: 10}}
    expect: {decision: allow, rule: transfers}
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "publish_test.yaml").write_text(CASES)
    return tmp_path


def _run(*paths: Path | str) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = run_tests([str(p) for p in paths], lines.append)
    return code, lines


def test_all_cases_pass(suite: Path) -> None:
    """A passing file prints only the summary and exits 0."""
    assert _run(suite / "publish_test.yaml") == (0, ["5 passed, 0 failed"])


def test_failures_are_named_with_what_differed(suite: Path) -> None:
    """Each failing case is one line: file, line, name, expected versus got."""
    text = CASES.replace("decision: allow, rule: releases-publish", "decision: deny, rule: other")
    (suite / "publish_test.yaml").write_text(text)
    code, lines = _run(suite / "publish_test.yaml")
    assert code == 1
    assert lines == [
        f"FAIL {suite / 'publish_test.yaml'}:3 publishing in the window: decision: expected deny, "
        "got allow; rule: expected other, got releases-publish "
        "(reason allowed_by_rule, dry_run false)",
        "4 passed, 1 failed",
    ]


def test_directories_are_searched_for_test_files(suite: Path) -> None:
    """A directory runs its *_test.yaml files (the policy file next to them is not a test)."""
    assert _run(suite) == (0, ["5 passed, 0 failed"])


def test_unreadable_test_file_exits_2(suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A test file with a schema error exits 2 naming the line; readable files still run."""
    (suite / "broken_test.yaml").write_text(
        "policy: policy.yaml\ncases:\n  - name: x\n    expct: {}\n"
    )
    code, lines = _run(suite)
    assert code == 2
    assert lines == ["5 passed, 0 failed"]
    err = capsys.readouterr().err
    assert "broken_test.yaml:4: cases[0].expct: unknown key 'expct'" in err
    assert "broken_test.yaml:3: cases[0].request: required" in err


def test_missing_path_exits_2(tmp_path: Path) -> None:
    """A path that does not exist cannot be run."""
    assert _run(tmp_path / "nope.yaml") == (2, ["0 passed, 0 failed"])


def test_a_policy_that_does_not_load_fails_every_case(suite: Path) -> None:
    """An invalid policy under test prints its errors and fails its cases (exit 1)."""
    (suite / "policy.yaml").write_text(POLICY.replace("Europe/Berlin", "Europe/Nowhere"))
    code, lines = _run(suite / "publish_test.yaml")
    assert code == 1
    assert lines[0].endswith("rejected (1 error(s)):")
    assert "unknown time zone 'Europe/Nowhere'" in lines[1]
    assert lines[-1] == "0 passed, 5 failed"
    assert all("policy does not load" in line for line in lines[2:-1])


def test_shipped_examples_pass() -> None:
    """The shipped example policy (examples/policy) passes its own test files."""
    code, lines = _run(EXAMPLES / "tests")
    assert code == 0, lines
    assert lines[-1].endswith(" passed, 0 failed")


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = cli.main(["check", "--policy", str(EXAMPLES / "policy"), *args])
    return code, json.loads(capsys.readouterr().out)


PUBLISH = [
    "--principal", "spiffe://example.org/ci/release", "--method", "POST",
    "--path", "/v1/releases/1.4.2/publish",
    "--header", "x-change-ticket: CHG-1234", "--header", "X-Git-Ref:refs/heads/main",
    "--body", '{"version": "1.4.2", "channel": "stable"}',
]  # fmt: skip


def test_check_at_a_time_in_the_window(capsys: pytest.CaptureFixture[str]) -> None:
    """`check --at` sets the clock; headers and body are judged; exit 0 on allow."""
    code, out = _check(capsys, *PUBLISH, "--at", "2026-11-26T10:30:00+01:00")
    assert code == 0
    assert (out["decision"], out["rule"], out["status"]) == ("allow", "ci-releases-publish", 200)


def test_check_outside_the_window_explains(capsys: pytest.CaptureFixture[str]) -> None:
    """Outside the window: exit 3, and --explain shows each condition's outcome."""
    code, out = _check(capsys, *PUBLISH, "--at", "2026-11-28T10:00:00+01:00", "--explain")
    assert code == 3
    assert (out["reason"], out["status"]) == ("outside_schedule", 403)
    *rules, decided = out["trace"]  # type: ignore[misc]
    steps = {step["rule"]: step for step in rules}
    assert set(steps) == {"ci-releases-publish"}
    assert decided["enforced"] == decided["would_be"] == {
        "decision": "deny", "reason": "outside_schedule", "rule": "ci-releases-publish",
    }  # fmt: skip
    conditions = steps["ci-releases-publish"]["conditions"]
    assert [(c["condition"], c["outcome"]) for c in conditions] == [
        ("schedule", "fails"),
        ("headers", "not_evaluated"),
        ("body", "not_evaluated"),
        ("expr", "not_evaluated"),
    ]


def test_check_body_from_file_and_repeated_header(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--body @FILE reads the file; a repeated --header is joined with ',' like Envoy does."""
    body = tmp_path / "body.json"
    body.write_text('{"version": "1.4.2", "channel": "stable"}')
    args = [a if a != PUBLISH[-1] else f"@{body}" for a in PUBLISH]
    code, out = _check(
        capsys, *args, "--header", "x-git-ref:refs/heads/x", "--at", "2026-11-26T10:30:00+01:00"
    )
    assert code == 3
    assert out["reason"] == "condition_failed"


def test_check_dry_run_is_enforced_as_allow(capsys: pytest.CaptureFixture[str]) -> None:
    """A dry-run rule's would-be deny is printed with its rule; the exit code is enforced."""
    code, out = _check(
        capsys,
        "--principal", "spiffe://example.org/agents/acme/db", "--method", "POST",
        "--path", "/v1/db/prod/acme/query", "--header", "x-agent-task:TASK-1",
        "--body", '{"operation": "select", "tables": ["orders"], "limit": 500}',
    )  # fmt: skip
    assert code == 0
    assert (out["decision"], out["reason"], out["rule"]) == (
        "deny",
        "denied_by_rule",
        "agents-db-prod-large-reads",
    )
    assert (out["dry_run"], out["enforced"]) == (True, "allow")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--at", "yesterday"], "--at 'yesterday' is not ISO 8601", id="bad-at"),
        pytest.param(["--at", "2026-11-26T10:00:00"], "needs a UTC offset", id="naive-at"),
        pytest.param(
            ["--header", "novalue"], "--header 'novalue' must be NAME:VALUE", id="bad-header"
        ),
        pytest.param(
            ["--body", "@/nonexistent/body.json"],
            "No such file or directory",
            id="missing-body-file",
        ),
    ],
)
def test_check_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad flags are usage errors: exit 2 with a message naming the flag."""
    code = cli.main(
        ["check", "--policy", str(EXAMPLES / "policy"), "--method", "GET", "--path", "/", *args]
    )
    assert code == 2
    assert message in capsys.readouterr().err
