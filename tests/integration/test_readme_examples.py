"""Every `authz-server` example in README.md's fenced code blocks runs as printed.

An example is a line of a fenced block that starts with `authz-server` (or `$ authz-server`)
plus its `\\`-continued lines. It runs verbatim through bash from the repository root,
with `authz-server` replaced by `python -m authz_server`; the root is a directory of links
to the checkout's entries, so that files an example writes stay out of the working tree,
and TMPDIR points into the test's own directory (so `"$(mktemp -d)"` stays there too). What the README says it does is
asserted, read from a `# → ...` comment at the end of its last line or on the line after:

    # → exit 0                                          exit status only
    # → exit 3: deny, outside_schedule (rule R)         check: status, decision, reason, rule
    # → exit 0: `ok: 14 rules`                          the output contains each `…` text

With no comment, the example must exit 0. Lines shown right below a `$ authz-server`
command are its output: each must appear in what it prints. Blocks fenced as ```text are
synopses with placeholders, not examples. Commands that need a running server are listed
in EXCLUDED with the reason; every other command must have an example.

`python tests/integration/test_readme_examples.py` rewrites `examples/audit.jsonl`, the
audit log the `audit verify` and `replay` examples read, when the audit format changes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
AUDIT_SAMPLE = ROOT / "examples" / "audit.jsonl"

#: Commands whose README examples are not run here, and why.
EXCLUDED = {
    "serve": "runs a server until it is stopped (tests/integration/test_cli.py starts one)",
    "demo": "starts Envoy and a server and runs until Ctrl-C (tests/e2e cover the tour)",
    "approvals": "needs a running server's admin API and admin credentials",
    "revoke": "needs a running server's admin API and admin credentials",
    "unrevoke": "needs a running server's admin API and admin credentials",
}

_FENCE = re.compile(r"^```(\S*)\s*$")
_COMMAND = re.compile(r"^(\$ )?authz-server(\s|$)")
_OUTCOME = re.compile(r"\s*# → (?P<text>.*)$")
_EXIT = re.compile(r"exit (?P<code>\d+)(?:: (?P<detail>.+))?$")
_DECISION = re.compile(
    r"(?P<decision>allow|deny), (?P<reason>[a-z_]+)(?: \(rule (?P<rule>[a-z0-9][a-z0-9._-]*)\))?$"
)
_QUOTED = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Example:
    line: int
    command: str
    outcome: str | None
    output: tuple[str, ...]

    @property
    def subcommand(self) -> str:
        words = shlex.split(self.command, comments=True)
        return words[1] if len(words) > 1 else ""

    @property
    def name(self) -> str:
        return f"line{self.line}-{self.subcommand}"


def readme_examples(text: str) -> list[Example]:
    lines = text.splitlines()
    examples: list[Example] = []
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if (match := _FENCE.match(line)) is not None:
            fence = None if fence is not None else match.group(1)
            i += 1
            continue
        if fence is None or fence == "text" or not _COMMAND.match(line):
            i += 1
            continue
        start, prompt = i, line.startswith("$ ")
        parts = [line.removeprefix("$ ")]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        i += 1
        outcome = None
        if (found := _OUTCOME.search(parts[-1])) is not None:
            outcome = found.group("text")
            parts[-1] = parts[-1][: found.start()]
        elif i < len(lines) and (found := _OUTCOME.match(lines[i])) is not None:
            outcome = found.group("text")
            i += 1
        output: list[str] = []
        while prompt and i < len(lines) and not lines[i].startswith(("$ ", "```", "#")):
            output.append(lines[i].strip())
            i += 1
        command = "\n".join(parts)
        examples.append(Example(start + 1, command, outcome, tuple(o for o in output if o)))
    return examples


EXAMPLES = readme_examples(README.read_text(encoding="utf-8"))
RUNNABLE = [e for e in EXAMPLES if e.subcommand not in EXCLUDED]


def _checkout(tmp_path: Path) -> Path:
    """The repository root as seen by an example: a directory of links to its entries, so
    that paths resolve as in the checkout while files an example writes (`--out
    envoy.yaml`, `--out certs`) land in the test's directory, not in the working tree."""
    root = tmp_path / "checkout"
    root.mkdir()
    for entry in ROOT.iterdir():
        if not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    return root


def _run(example: Example, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    program = f"{shlex.quote(sys.executable)} -m authz_server"
    command = program + example.command.removeprefix("authz-server")
    return subprocess.run(
        ["bash", "-c", command],
        cwd=_checkout(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
        check=False,
    )


@pytest.mark.parametrize("example", [pytest.param(e, id=e.name) for e in RUNNABLE])
def test_readme_example_does_what_the_readme_says(example: Example, tmp_path: Path) -> None:
    result = _run(example, tmp_path)
    shown = result.stdout + result.stderr
    assert "Traceback" not in shown, shown
    code, detail = 0, None
    if example.outcome is not None:
        parsed = _EXIT.match(example.outcome)
        assert parsed, f"README line {example.line}: unreadable outcome {example.outcome!r}"
        code, detail = int(parsed.group("code")), parsed.group("detail")
    assert result.returncode == code, f"README line {example.line}:\n{shown}"
    if detail is not None and example.subcommand == "check":
        expected = _DECISION.match(detail)
        assert expected, f"README line {example.line}: unreadable decision {detail!r}"
        decision = json.loads(result.stdout)
        assert decision["decision"] == expected.group("decision"), shown
        assert decision["reason"] == expected.group("reason"), shown
        if expected.group("rule") is not None:
            assert decision["rule"] == expected.group("rule"), shown
    elif detail is not None:
        fragments = _QUOTED.findall(detail)
        assert fragments, f"README line {example.line}: quote the expected output in `…`"
        for fragment in fragments:
            assert fragment in shown, f"README line {example.line}: {fragment!r} not in\n{shown}"
    for line in example.output:
        assert line in shown, f"README line {example.line}: {line!r} not printed:\n{shown}"


def test_every_offline_command_has_a_readme_example() -> None:
    """Each command `authz-server --help` lists has a README example that runs here,
    except the ones that need a running server (EXCLUDED, with the reason)."""
    from authz_server.cli.main import build_parser

    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    offline = set(commands.choices) - set(EXCLUDED)
    assert offline - {e.subcommand for e in RUNNABLE} == set()
    assert set(EXCLUDED) <= set(commands.choices), "EXCLUDED names a command that is gone"


def test_readme_parser_reads_commands_outcomes_and_output() -> None:
    """The extraction rules on a small sample: continuations, both comment places, output."""
    sample = """\
```sh
authz-server check --policy p \\
  --method GET --path /x
# → exit 3: deny, no_matching_rule
authz-server test t   # → exit 0: `0 failed`
```
```
$ authz-server validate bad.yaml   # → exit 1
policy rejected (1 error(s)):
  bad.yaml:3: oops
```
```text
authz-server serve --policy PATH [--listen ADDR]
```
"""
    assert readme_examples(sample) == [
        Example(2, "authz-server check --policy p \\\n  --method GET --path /x",
                "exit 3: deny, no_matching_rule", ()),
        Example(5, "authz-server test t", "exit 0: `0 failed`", ()),
        Example(8, "authz-server validate bad.yaml", "exit 1",
                ("policy rejected (1 error(s)):", "bad.yaml:3: oops")),
    ]  # fmt: skip


def write_audit_sample(path: Path) -> None:
    """Decide a few requests of the seed scenarios with `examples/policy` at fixed times
    and write them as the server would: one hash-chained audit record each."""
    from authz_server.audit.format import audit_record
    from authz_server.audit.log import AuditLog
    from authz_server.check.offline import OfflineRequest, decide_offline, parse_at
    from authz_server.policy.load import load_policy

    policy = load_policy(ROOT / "examples" / "policy")
    release, deployer = "spiffe://example.org/ci/release", "spiffe://example.org/ci/deployer"
    requests = [
        OfflineRequest(
            "/v1/deployments/prod/api?confirm=yes",
            "DELETE",
            deployer,
            at=parse_at("2026-11-25T11:30:00+01:00"),
        ),
        OfflineRequest("/v1/releases", "GET", release, at=parse_at("2026-11-26T09:58:12+01:00")),
        OfflineRequest(
            "/v1/releases/1.4.2/publish",
            "POST",
            release,
            headers=(("x-change-ticket", "CHG-1234"), ("x-git-ref", "refs/heads/main")),
            body=b'{"version":"1.4.2","channel":"stable"}',
            at=parse_at("2026-11-26T10:00:03+01:00"),
        ),
        OfflineRequest(
            "/v1/releases/1.4.3/publish",
            "POST",
            release,
            headers=(("x-change-ticket", "CHG-1240"), ("x-git-ref", "refs/heads/main")),
            body=b'{"version":"1.4.3","channel":"stable"}',
            at=parse_at("2026-11-28T10:00:00+01:00"),
        ),
        OfflineRequest("/healthz", at=parse_at("2026-11-26T10:00:05+01:00")),
        OfflineRequest("/admin/users", "GET", release, at=parse_at("2026-11-26T10:01:00+01:00")),
    ]
    path.unlink(missing_ok=True)
    audit = AuditLog(str(path))
    for request in requests:
        assert request.at is not None
        decision = asyncio.run(decide_offline(policy, request))
        decision = dataclasses.replace(decision, at=request.at.timestamp())
        audit.record(
            audit_record(decision, request.view(), policy_version=policy.version, latency_us=180)
        )
    audit.close()


if __name__ == "__main__":
    write_audit_sample(AUDIT_SAMPLE)
    print(f"wrote {AUDIT_SAMPLE.relative_to(ROOT)}")
