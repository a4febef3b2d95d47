"""The AuthZEN page's `curl` examples run as shown, against a real AuthZEN listener.

The listener is the server's own (`start_authzen`: aiohttp, mutual TLS, the real pipeline,
store and audit log) serving the page's `policy.yaml` with the certificates the page's
`dev-certs` command mints, on 127.0.0.1 port 0, reading the real clock (the certificates
are minted around the real time by that command). The commands run verbatim through bash;
curl reaches the `authz.internal:9443` they name through a `connect-to` line in its own
configuration file (CURL_HOME), so the host name it verifies is the one shown. What each
prints must be what the page shows: JSON in which every member shown has the value shown,
`"..."` standing for any value.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz_server.audit.log import MemoryAudit
from authz_server.authzen import AuthzenServer, AuthzenService, start_authzen
from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.identity.bundles import load_pem_bundles
from authz_server.policy.load import load_policy
from authz_server.state.memory import MemoryStore
from authz_server.transport.tls import TlsCredentials, load_certificate_files
from tests.docs.pages import Command, commands
from tests.docs.workdir import environment, prepare

PAGE = "api/authzen.md"
#: What the page's `serve` command sets up, and the test reproduces in-process.
ADDRESS = "authz.internal:9443"
TRUST_DOMAIN, BUNDLE = "example.org", "certs/ca.pem"
SERVER_CERT, SERVER_KEY = "certs/authz.pem", "certs/authz.key"
ANY = "..."


def _page_commands(program: str, subcommand: str | None = None) -> list[Command]:
    return [
        c
        for c in commands(PAGE)
        if c.program == program and (subcommand is None or c.subcommand == subcommand)
    ]


def _flag(argv: list[str], name: str) -> str:
    index = argv.index(name)
    return argv[index + 1]


def test_the_page_serves_what_the_test_reproduces() -> None:
    """The constants above are the page's own `serve` command, so the test follows it."""
    [serve] = _page_commands("authz-server", "serve")
    argv = serve.argv
    assert _flag(argv, "--authzen-listen").rpartition(":")[2] == ADDRESS.rpartition(":")[2]
    assert _flag(argv, "--trust-bundle") == f"{TRUST_DOMAIN}={BUNDLE}"
    assert _flag(argv, "--authzen-tls-cert") == SERVER_CERT
    assert _flag(argv, "--authzen-tls-key") == SERVER_KEY
    assert _flag(argv, "--policy") == "policy.yaml"


def test_every_endpoint_has_a_curl_example_with_a_client_certificate() -> None:
    curls = _page_commands("curl")
    for path in (
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/.well-known/authzen-configuration",
    ):
        shown = [c for c in curls if c.argv[-1] == f"https://{ADDRESS}{path}"]
        assert shown, f"no curl example for {path}"
        assert all("--cert" in c.argv and "--key" in c.argv for c in shown), path


@dataclass
class Listener:
    workdir: Path
    env: dict[str, str]
    server: AuthzenServer


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[Listener]:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the documented examples: `make system-deps`")
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = environment(prepare(PAGE, workdir))
    for command in _page_commands("authz-server", "dev-certs"):
        code, output = await _run(command.text, workdir, env)
        assert code == 0, f"{command.block.where}: $ {command.text}\n{output}"
    bundles = load_pem_bundles({TRUST_DOMAIN: workdir / BUNDLE})
    holder = SnapshotHolder(Snapshot(load_policy(workdir / "policy.yaml"), bundles))
    service = AuthzenService(Pipeline(store=MemoryStore()), holder, MemoryAudit())
    certificate = load_certificate_files(str(workdir / SERVER_CERT), str(workdir / SERVER_KEY))
    credentials = TlsCredentials(certificate, bundles.roots_pem())
    server = await start_authzen("127.0.0.1:0", service, credentials=credentials)
    curl_home = tmp_path / "curl"
    curl_home.mkdir()
    (curl_home / ".curlrc").write_text(f"connect-to = {ADDRESS}:127.0.0.1:{server.port}\n")
    env["CURL_HOME"] = str(curl_home)
    try:
        yield Listener(workdir, env, server)
    finally:
        await server.stop()


async def _run(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_curl_examples_print_what_the_page_shows(listener: Listener) -> None:
    curls = _page_commands("curl")
    assert len(curls) >= 3
    for command in curls:
        where = f"{command.block.where}: $ {command.text}"
        code, output = await _run(command.text, listener.workdir, listener.env)
        assert code == command.exit_code, f"{where}\nexit {code}\n{output}"
        assert command.output is not None, f"{where}: the page shows no output"
        try:
            printed = json.loads(output)
        except json.JSONDecodeError:
            pytest.fail(f"{where}\nnot JSON:\n{output}")
        problem = shown_problem(json.loads(command.output), printed)
        assert problem is None, f"{where}\n{problem}\n--- printed:\n{output}"


def shown_problem(shown: Any, printed: Any, where: str = "") -> str | None:
    """None when `printed` holds everything `shown` shows, else the first difference.

    Objects: every member shown is printed with the shown value (more may be printed).
    Arrays: as many items, each as shown. `"..."`: any value.
    """
    if shown == ANY:
        return None
    if isinstance(shown, dict):
        if not isinstance(printed, dict):
            return f"{where or 'top'}: expected an object, printed {printed!r}"
        for key, value in shown.items():
            if key not in printed:
                return f"{where}.{key}: not printed"
            problem = shown_problem(value, printed[key], f"{where}.{key}")
            if problem is not None:
                return problem
        return None
    if isinstance(shown, list):
        if not isinstance(printed, list) or len(printed) != len(shown):
            return f"{where or 'top'}: expected {len(shown)} item(s), printed {printed!r}"
        for index, (item, got) in enumerate(zip(shown, printed, strict=True)):
            problem = shown_problem(item, got, f"{where}[{index}]")
            if problem is not None:
                return problem
        return None
    same = type(shown) is type(printed) and shown == printed  # true is not 1
    return None if same else f"{where or 'top'}: shown {shown!r}, printed {printed!r}"


@pytest.mark.parametrize(
    ("shown", "printed", "matches"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": ANY}}, {"a": {"b": "x", "c": 1}}, True),
        ({"a": {"b": 1}}, {"a": {}}, False),
        ([{"a": 1}], [{"a": 1}, {"a": 2}], False),
        ([{"a": True}, {"a": False}], [{"a": True}, {"a": False}], True),
        (True, 1, False),
    ],
    ids=["extra-member", "differs", "wildcard", "missing-member", "extra-item",
         "items", "true-is-not-1"],
)  # fmt: skip
def test_shown_json_comparison(shown: Any, printed: Any, matches: bool) -> None:
    assert (shown_problem(shown, printed) is None) is matches
