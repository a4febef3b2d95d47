"""Ordinary mistakes on the `authz-server` command line end in one line, never a traceback.

A port already taken, an AUTHZ_* variable its flag would refuse, a `dev-certs --out` that
cannot be created, a reader that goes away (`... | head -1`): each is run through the real
program, as a subprocess, and must exit non-zero with one line saying what was wrong.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from authz_server.cli.env import environment_error
from authz_server.cli.main import EXIT_BROKEN_PIPE, EXIT_USAGE, build_parser, main
from authz_server.cli.parser import walk_parsers
from authz_server.runtime.settings import env_name

POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
rules:
  - id: orders-read
    methods: [GET]
    paths: ["/v1/orders/{id}"]
    effect: allow
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_clean_environment(), **(env or {})},
        check=False,
    )


def _clean_environment() -> dict[str, str]:
    """This process's environment without AUTHZ_* values that would change the command."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line the command printed on stderr (asserting it is one, no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def free_port() -> int:
    """A loopback port nothing listens on right now (the supervisor only checks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket is listening on for the whole test."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# --- a listener on a port already in use ---------------------------------------------


@pytest.mark.parametrize(
    ("flag", "args"),
    [
        pytest.param("--listen", ["--listen", "{address}"], id="check-listener"),
        pytest.param(
            "--admin-listen",
            ["--listen", "127.0.0.1:0", "--admin-listen", "{address}", "--admin-insecure-local"],
            id="admin-listener",
        ),
        pytest.param(
            "--listen",
            ["--listen", "{address}", "--workers", "2", "--store", "redis://127.0.0.1:1/0"],
            id="workers-supervisor",
        ),
        pytest.param(
            "--authzen-listen",
            [
                "--listen",
                "{free}",
                "--workers",
                "2",
                "--store",
                "redis://127.0.0.1:1/0",
                "--authzen-listen",
                "{address}",
                "--authzen-insecure-local",
            ],
            id="workers-supervisor-authzen",
        ),
    ],
)
def test_listen_on_a_port_in_use(policy: Path, taken_port: int, flag: str, args: list[str]) -> None:
    """serve exits 1 naming the flag, the address and the system's reason."""
    address = f"127.0.0.1:{taken_port}"
    free = f"127.0.0.1:{free_port()}"
    argv = [a.replace("{address}", address).replace("{free}", free) for a in args]
    result = run("serve", "--policy", str(policy), "--metrics-listen", "off", *argv)
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"authz-server: {flag} {address}: cannot listen: ")
    assert "Address already in use" in line
    assert "choose another port" in line


def test_listen_on_an_address_not_on_this_host(policy: Path) -> None:
    """An address of no interface here is refused the same way, with its own reason."""
    result = run("serve", "--policy", str(policy), "--metrics-listen", "off",
                 "--listen", "192.0.2.1:9191")  # fmt: skip
    assert result.returncode == 1
    assert "--listen 192.0.2.1:9191: cannot listen: " in one_line(result)


# --- AUTHZ_* variables go through their flag's converter -----------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        pytest.param("AUTHZ_WORKERS", "two", "expected an integer", id="workers"),
        pytest.param("AUTHZ_WORKERS", "1.5", "expected an integer", id="workers-fraction"),
        pytest.param("AUTHZ_GRACE", "abc", "expected a number", id="grace"),
        pytest.param("AUTHZ_RELOAD_INTERVAL", "x", "expected a number", id="reload-interval"),
        pytest.param(
            "AUTHZ_TLS_WORKLOAD_API",
            "maybe",
            "expected 1, true, yes or on (or 0, false, no, off)",
            id="switch",
        ),
    ],
)
def test_serve_variable_with_a_bad_value(
    policy: Path, variable: str, value: str, expected: str
) -> None:
    """Like a bad flag, a bad variable is a usage error naming the VARIABLE and its value."""
    result = run("serve", "--policy", str(policy), env={variable: value})
    assert result.returncode == EXIT_USAGE
    assert one_line(result) == f"authz-server serve: error: {variable}={value!r}: {expected}"


def test_non_finite_grace_is_refused(policy: Path) -> None:
    """A number the converter accepts but no drain can use is refused by the settings."""
    result = run("serve", "--policy", str(policy), env={"AUTHZ_GRACE": "nan"})
    assert result.returncode == 1
    assert one_line(result) == "authz-server: --grace must be >= 0 and finite, got nan"


def test_bad_variable_of_another_command_is_not_read(policy: Path) -> None:
    """A variable only `serve` reads does not break `validate`."""
    result = run("validate", str(policy), env={"AUTHZ_WORKERS": "two"})
    assert result.returncode == 0, result.stderr


def test_flag_on_the_command_line_wins_over_a_bad_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command line replaces the variable, so its bad value does not matter."""
    monkeypatch.setenv("AUTHZ_WORKERS", "two")
    args = build_parser().parse_args(["serve", "--policy", "p", "--workers", "3"])
    assert environment_error(args) is None
    assert args.workers == 3


def _typed_flags() -> Iterator[tuple[str, list[str], str]]:
    """(command, argv reaching it, variable) for every flag of every command that converts
    its value: a type, choices, or a switch."""
    for parser in walk_parsers(build_parser()):
        words = parser.prog.split()[1:]
        if not words:
            continue
        argv = list(words)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                break  # a group of commands: its leaves are walked on their own
            if not action.option_strings:
                argv += ["x"]  # any value satisfies a positional before the check
            elif action.required:
                argv += [action.option_strings[-1], "x"]
        else:
            for action in parser._actions:
                flags = [o for o in action.option_strings if o.startswith("--")]
                if not flags:
                    continue
                switch = isinstance(action, argparse._StoreConstAction) and isinstance(
                    action.const, bool
                )
                if switch or callable(action.type) or action.choices is not None:
                    yield parser.prog, argv, env_name(max(flags, key=len))


TYPED_FLAGS = list(_typed_flags())


def test_typed_flags_are_found() -> None:
    """The table below really covers serve's numbers and switches (and more)."""
    found = {(prog, variable) for prog, _, variable in TYPED_FLAGS}
    assert {
        ("authz-server serve", "AUTHZ_WORKERS"),
        ("authz-server serve", "AUTHZ_GRACE"),
        ("authz-server serve", "AUTHZ_RELOAD_INTERVAL"),
        ("authz-server serve", "AUTHZ_ADMIN_INSECURE_LOCAL"),
        ("authz-server check", "AUTHZ_EXPLAIN"),
        ("authz-server approvals list", "AUTHZ_INSECURE_LOCAL"),
    } <= found


@pytest.mark.parametrize(
    ("prog", "argv", "variable"),
    [
        pytest.param(*row, id=f"{row[0].removeprefix('authz-server ')}-{row[2]}")
        for row in TYPED_FLAGS
    ],
)
def test_every_typed_variable_is_checked(
    prog: str,
    argv: list[str],
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every converting flag of every command refuses a bad variable as a usage error."""
    for name in [n for n in os.environ if n.startswith("AUTHZ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(variable, "not-a-value")
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error: {variable}='not-a-value': expected "), err
    assert err.count("\n") == 1, err


# --- dev-certs --out that cannot be created ------------------------------------------


DEV_CERTS = ["--trust-domain", "example.org", "--id", "web=spiffe://example.org/web"]


@pytest.mark.parametrize(
    ("out", "reason"),
    [
        pytest.param("{tmp}/file/certs", "Not a directory", id="under-a-regular-file"),
        pytest.param("{tmp}/file", "a file, not a directory, has that name", id="a-file"),
        pytest.param("/proc/authz-dev-certs", "cannot write there", id="proc"),
    ],
)
def test_dev_certs_out_cannot_be_created(tmp_path: Path, out: str, reason: str) -> None:
    """One line naming the directory and the reason; exit 1."""
    (tmp_path / "file").write_text("a regular file")
    target = out.replace("{tmp}", str(tmp_path))
    result = run("dev-certs", "--out", target, *DEV_CERTS)
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"authz-server: --out {target!r}: cannot write there: ")
    assert reason in line


# --- dev-certs keeps the CA that is already there ------------------------------------


def _ca_fingerprint(directory: Path) -> bytes:
    return x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes()).signature


def test_dev_certs_reuses_refuses_or_replaces_the_ca(tmp_path: Path) -> None:
    """A second run reuses the CA and says so; another trust domain is refused in one
    line; --force mints a new CA and says what that breaks."""
    out = tmp_path / "certs"
    first = run("dev-certs", "--out", str(out), *DEV_CERTS)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("minted a new CA: ")
    ca = _ca_fingerprint(out)

    again = run("dev-certs", "--out", str(out), *DEV_CERTS)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"reused the CA in {out / 'ca.pem'}")
    assert _ca_fingerprint(out) == ca

    other = run("dev-certs", "--out", str(out), "--trust-domain", "other.org",
                "--id", "web=spiffe://other.org/web")  # fmt: skip
    assert other.returncode == 1
    line = one_line(other)
    assert "this CA is for trust domain 'example.org', not 'other.org'" in line
    assert "--force" in line
    assert _ca_fingerprint(out) == ca

    forced = run("dev-certs", "--out", str(out), *DEV_CERTS, "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith("minted a new CA in place of the old one (--force)")
    assert _ca_fingerprint(out) != ca


# --- a reader that goes away ---------------------------------------------------------


def _big_policy(path: Path) -> Path:
    """A policy whose `check --explain` trace is far larger than a pipe's buffer."""
    rules = "".join(
        f'  - id: r{i}\n    paths: ["/v1/**"]\n'
        f'    principals: ["spiffe://example.org/svc/{i}"]\n    effect: allow\n'
        for i in range(2000)
    )
    path.write_text(f"version: 1\nidentity:\n  trust_domains: [example.org]\nrules:\n{rules}")
    return path


def test_reader_closing_after_the_first_line(tmp_path: Path) -> None:
    """`check --explain | head -1`: the command stops quietly with the SIGPIPE status."""
    policy = _big_policy(tmp_path / "big.yaml")
    process = subprocess.Popen(
        [sys.executable, "-m", "authz_server", "check", "--policy", str(policy),
         "--method", "GET", "--path", "/v1/x", "--principal", "spiffe://example.org/o",
         "--explain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_clean_environment(),
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == b"{\n"
    process.stdout.close()  # like `head -1` exiting
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == EXIT_BROKEN_PIPE
    assert stderr == ""


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(
            ["check", "--policy", "{policy}", "--method", "GET", "--path", "/v1/orders/1"],
            id="check",
        ),
        pytest.param(["validate", "{policy}"], id="validate"),
        pytest.param(["dev-certs", "--out", "{tmp}/c", *DEV_CERTS], id="dev-certs"),
    ],
)
def test_no_reader_at_all(tmp_path: Path, policy: Path, args: list[str]) -> None:
    """Output to a pipe nobody reads any more ends quietly too, whatever the command."""
    argv = [a.replace("{policy}", str(policy)).replace("{tmp}", str(tmp_path)) for a in args]
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "authz_server", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=_clean_environment(),
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == EXIT_BROKEN_PIPE, result.stderr
    assert result.stderr == ""
