"""The `authz-server` command line as a user runs it: exit codes, output, AUTHZ_* variables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz_server.tools import stack

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
  - id: no-admin
    paths: ["/admin/**"]
    effect: deny
"""

BROKEN = """\
version: 1
identity:
  trust_domains: [example.org]
rules:
  - id: a
    paths: ["/x/**/y"]
    effect: allow
  - id: a
    efect: allow
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_validate_ok(policy: Path) -> None:
    """A valid policy exits 0 and says how many rules it has."""
    result = run("validate", str(policy))
    assert result.returncode == 0, result.stderr
    assert "ok: 2 rules" in result.stdout


def test_validate_reports_every_error_located(tmp_path: Path) -> None:
    """An invalid policy exits 1 listing every error with file:line and rule id."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = run("validate", str(path))
    assert result.returncode == 1
    lines = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert len(lines) >= 3
    assert any(f"{path}:6: rule 'a': paths[0]:" in line for line in lines)
    assert any(f"{path}:8: rule 'a': id: duplicate rule id" in line for line in lines)
    assert any(f"{path}:9: rule 'a': efect: unknown key" in line for line in lines)


@pytest.mark.parametrize(
    ("args", "code", "decision", "reason", "rule"),
    [
        pytest.param(
            [
                "--principal",
                "spiffe://example.org/ns/shop/sa/web",
                "--method",
                "get",
                "--path",
                "/v1/orders/42?x=1",
            ],
            0,
            "allow",
            "allowed_by_rule",
            "orders-read",
            id="allow",
        ),
        pytest.param(
            [
                "--principal",
                "spiffe://example.org/ns/shop/sa/web",
                "--method",
                "GET",
                "--path",
                "/admin/x",
            ],
            3,
            "deny",
            "denied_by_rule",
            "no-admin",
            id="deny-rule",
        ),
        pytest.param(
            [
                "--principal",
                "spiffe://example.org/ns/shop/sa/web",
                "--method",
                "GET",
                "--path",
                "/v1/orders/../admin",
            ],
            2,
            "deny",
            "non_canonical_path",
            None,
            id="path-trick",
        ),
        pytest.param(
            [
                "--principal",
                "spiffe://Example.org/ns/shop/sa/web",
                "--method",
                "GET",
                "--path",
                "/v1/orders/1",
            ],
            2,
            "deny",
            "invalid_spiffe_id",
            None,
            id="bad-id",
        ),
        pytest.param(
            ["--method", "GET", "--path", "/v1/orders/1"],
            3,
            "deny",
            "no_identity",
            None,
            id="anonymous",
        ),
    ],
)
def test_check(
    policy: Path, args: list[str], code: int, decision: str, reason: str, rule: str | None
) -> None:
    """`check` prints the decision as JSON and exits 0 on allow, 3 when the policy denies,
    2 when the described request is invalid (the server would refuse it before any rule)."""
    result = run("check", "--policy", str(policy), *args)
    assert result.returncode == code, result.stderr
    output = json.loads(result.stdout)
    assert (output["decision"], output["reason"], output["rule"]) == (decision, reason, rule)


def test_check_with_invalid_policy_exits_1(tmp_path: Path) -> None:
    """`check` refuses to judge against an invalid policy."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = run("check", "--policy", str(path), "--method", "GET", "--path", "/")
    assert result.returncode == 1
    assert "policy rejected" in result.stderr


HOSTED = """\
version: 1
identity:
  trust_domains: [example.org]
rules:
  - id: orders-read
    hosts: ["orders.internal"]
    methods: [GET]
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: orders-write
    methods: [POST]
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
"""
WEB = "spiffe://example.org/ns/shop/sa/web"


@pytest.mark.parametrize(
    ("args", "note"),
    [
        pytest.param(
            ["--method", "GET", "--path", "/v1/orders/7"],
            "no rule matches host '', method GET, path /v1/orders/7; rules with hosts: never "
            "match an empty --host (the default), and these would match with theirs: "
            "orders-read (hosts orders.internal); rules that match this path with another "
            "--method: orders-write (POST)",
            id="empty-host",
        ),
        pytest.param(
            ["--method", "GET", "--path", "/v1/orders/7", "--host", "shop.internal"],
            "no rule matches host 'shop.internal', method GET, path /v1/orders/7; rules that "
            "match another host: orders-read (hosts orders.internal); rules that match this "
            "path with another --method: orders-write (POST)",
            id="other-host",
        ),
        pytest.param(
            ["--method", "DELETE", "--path", "/v1/orders/7?x=1", "--host", "orders.internal"],
            "no rule matches host 'orders.internal', method DELETE, path /v1/orders/7?x=1; "
            "rules that match this path with another --method: orders-read (GET); "
            "orders-write (POST)",
            id="other-method",
        ),
        pytest.param(
            ["--method", "GET", "--path", "/nowhere"],
            "no rule matches host '', method GET, path /nowhere",
            id="nothing-near",
        ),
    ],
)
def test_check_explains_why_no_rule_was_considered(
    tmp_path: Path, args: list[str], note: str
) -> None:
    """When no rule's route matches, the trace holds no rule: the note says what was
    looked for and which rules would have matched another host or method."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(HOSTED)
    result = run("check", "--policy", str(policy), "--principal", WEB, *args, "--explain")
    assert result.returncode == 3, result.stderr
    output = json.loads(result.stdout)
    assert output["reason"] == "no_matching_rule"
    assert output["note"] == note
    assert [step["rule"] for step in output["trace"]] == [None]  # only the outcome


def test_check_adds_no_note_when_the_trace_explains(policy: Path) -> None:
    """A decision made by a rule needs no note: the trace shows it."""
    result = run("check", "--policy", str(policy), "--principal", WEB, "--method", "GET",
                 "--path", "/admin/x", "--explain")  # fmt: skip
    assert result.returncode == 3, result.stderr
    output = json.loads(result.stdout)
    assert "note" not in output
    assert output["trace"][0]["rule"] == "no-admin"


@pytest.mark.parametrize(
    ("principal", "path", "reason", "note"),
    [
        pytest.param(
            "spiffe://Example.org/ns/shop/sa/web", "/v1/orders/1", "invalid_spiffe_id",
            "invalid SPIFFE ID 'spiffe://Example.org/ns/shop/sa/web': trust domain may "
            "contain only [a-z0-9._-] (no port, userinfo, upper case)",
            id="upper-case-trust-domain",
        ),
        pytest.param(
            "spiffe://example.org/ns//web", "/v1/orders/1", "invalid_spiffe_id",
            "invalid SPIFFE ID 'spiffe://example.org/ns//web': empty path segment",
            id="empty-segment",
        ),
        pytest.param(
            WEB, "/v1/orders/../admin", "non_canonical_path",
            "the path is not canonical (dot segment '..')",
            id="dot-dot",
        ),
    ],
)  # fmt: skip
def test_check_invalid_request_exits_2_naming_the_rule_it_breaks(
    policy: Path, principal: str, path: str, reason: str, note: str
) -> None:
    """A principal or path the server refuses before any rule is invalid input: exit 2,
    and the decision says which rule of the grammar failed (the trace is empty)."""
    result = run("check", "--policy", str(policy), "--principal", principal, "--method", "GET",
                 "--path", path, "--explain")  # fmt: skip
    assert result.returncode == 2, result.stderr
    output = json.loads(result.stdout)
    assert (output["decision"], output["reason"], output["trace"]) == ("deny", reason, [])
    assert output["note"] == f"{note}: refused before any rule is considered"
    assert result.stderr == f"authz-server check: invalid request: {output['note']}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--at", "2026-11-28T10:00:00"],
            "--at '2026-11-28T10:00:00' needs a UTC offset",
            id="at-without-offset",
        ),
        pytest.param(["--at", "Saturday"], "--at 'Saturday' is not ISO 8601", id="at-not-a-time"),
        pytest.param(
            ["--body", "{amount: 5}"],
            "--body is not JSON (Expecting property name",
            id="body-not-json",
        ),
        pytest.param(
            ["--body", "@/nonexistent/body.json"],
            "--body '@/nonexistent/body.json': No such file",
            id="body-file-missing",
        ),
        pytest.param(
            ["--header", "x-ticket"],
            "--header 'x-ticket' must be NAME:VALUE",
            id="header-without-colon",
        ),
    ],
)
def test_check_malformed_flags_exit_2_with_one_line(
    policy: Path, args: list[str], message: str
) -> None:
    """A malformed flag is a usage error: exit 2, one line naming the flag, no decision."""
    result = run("check", "--policy", str(policy), "--principal", WEB, "--method", "POST",
                 "--path", "/v1/orders/1", *args)  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"authz-server check: {message}")
    assert result.stderr.count("\n") == 1


def test_check_sends_other_bytes_with_their_content_type(policy: Path) -> None:
    """A body that is not JSON is accepted when a content-type says it is something else."""
    result = run("check", "--policy", str(policy), "--principal", WEB, "--method", "GET",
                 "--path", "/v1/orders/1", "--header", "content-type:text/plain",
                 "--body", "plain words")  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_dev_certs(tmp_path: Path) -> None:
    """`dev-certs` writes a CA and one SVID per id, each carrying exactly its SPIFFE ID."""
    out = tmp_path / "certs"
    result = run(
        "dev-certs",
        "--out",
        str(out),
        "--trust-domain",
        "example.org",
        "--id",
        "web=spiffe://example.org/ns/shop/sa/web",
        "--id",
        "bot=spiffe://example.org/agents/a/b",
        "--dns",
        "web=localhost",
    )
    assert result.returncode == 0, result.stderr
    for name, spiffe_id in (
        ("web", "spiffe://example.org/ns/shop/sa/web"),
        ("bot", "spiffe://example.org/agents/a/b"),
    ):
        cert = x509.load_pem_x509_certificate((out / f"{name}.pem").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe_id]
        assert (out / f"{name}.key").stat().st_mode & 0o777 == 0o600
    assert (out / "ca.pem").exists()


def test_dev_certs_refuses_foreign_trust_domain(tmp_path: Path) -> None:
    """An id outside the trust domain is a clear error, and nothing is written."""
    result = run(
        "dev-certs",
        "--out",
        str(tmp_path / "c"),
        "--trust-domain",
        "example.org",
        "--id",
        "x=spiffe://other.org/x",
    )
    assert result.returncode == 1
    assert "other.org" in result.stderr
    assert not (tmp_path / "c" / "x.pem").exists()


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
        return int(reply.status)


def test_serve_from_environment_and_drain(policy: Path, tmp_path: Path) -> None:
    """Every serve flag can come from AUTHZ_*; SIGTERM drains and exits 0."""
    certs = tmp_path / "certs"
    assert (
        run(
            "dev-certs",
            "--out",
            str(certs),
            "--trust-domain",
            "example.org",
            "--id",
            "a=spiffe://example.org/a",
        ).returncode
        == 0
    )
    port = stack.free_port()
    audit = tmp_path / "audit.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "authz_server", "serve"],
        env={
            **os.environ,
            "AUTHZ_POLICY": str(policy),
            "AUTHZ_LISTEN": f"127.0.0.1:{port}",
            "AUTHZ_TRUST_BUNDLE": f"example.org={certs / 'ca.pem'}",
            "AUTHZ_AUDIT_LOG": str(audit),
            "AUTHZ_METRICS_LISTEN": "127.0.0.1:0",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            try:
                status = _health(port)
                break
            except grpc.RpcError:
                time.sleep(0.1)
        assert status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert audit.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_refuses_invalid_policy(tmp_path: Path) -> None:
    """`serve` with an invalid policy exits 1 before listening, listing the errors."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = run(
        "serve",
        "--policy",
        str(path),
        "--listen",
        f"127.0.0.1:{stack.free_port()}",
        "--metrics-listen",
        "127.0.0.1:0",
    )
    assert result.returncode == 1
    assert "duplicate rule id" in result.stderr


def test_serve_refuses_missing_bundle_file(policy: Path, tmp_path: Path) -> None:
    """A trust bundle that does not exist is a clear error at start."""
    result = run(
        "serve",
        "--policy",
        str(policy),
        "--listen",
        f"127.0.0.1:{stack.free_port()}",
        "--trust-bundle",
        f"example.org={tmp_path / 'missing.pem'}",
    )
    assert result.returncode == 1
    assert "missing.pem" in result.stderr


def test_every_command_reads_authz_variables(policy: Path) -> None:
    """Flags of offline commands come from AUTHZ_* too; a required flag is satisfied by it."""
    result = run(
        "check",
        "--path",
        "/v1/orders/7",
        env={
            "AUTHZ_POLICY": str(policy),
            "AUTHZ_METHOD": "GET",
            "AUTHZ_PRINCIPAL": "spiffe://example.org/ns/shop/sa/web",
            "AUTHZ_EXPLAIN": "true",
        },
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["rule"] == "orders-read"
    assert "trace" in output


def test_repeatable_flag_on_the_command_line_replaces_the_environment() -> None:
    """`--header` given on the command line replaces AUTHZ_HEADER instead of adding to it."""
    from authz_server.cli.main import build_parser

    environ = dict(os.environ)
    os.environ["AUTHZ_HEADER"] = "x-a:1,x-b:2"
    try:
        parser = build_parser()
        base = ["check", "--policy", "p", "--method", "GET", "--path", "/"]
        assert parser.parse_args(base).header == ["x-a:1", "x-b:2"]
        assert parser.parse_args([*base, "--header", "x-c:3"]).header == ["x-c:3"]
    finally:
        os.environ.clear()
        os.environ.update(environ)
