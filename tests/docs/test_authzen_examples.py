"""The AuthZEN page's `curl` examples run as shown, against the page's own server.

The page's `dev-certs` command mints the certificates, and its `authz-server serve`
command runs as a real server process with the page's `policy.yaml`, on free loopback
ports instead of the fixed ones shown (`--listen`, `--authzen-listen` given again at the
end, which wins; metrics off). The `curl` commands run verbatim through bash; curl reaches
the `authz.internal:9443` they name through a `connect-to` line in its own configuration
file (CURL_HOME), so the host name it verifies is the one shown. What each prints must be
what the page shows: JSON in which every member shown has the value shown, `"..."`
standing for any value. The server reads the real clock, and the certificates are minted
around the real time by that same `dev-certs` command.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.docs.pages import Command, commands
from tests.docs.workdir import environment, prepare

PAGE = "api/authzen.md"
#: The address the page's curl commands name; the page's server must listen on its port.
ADDRESS = "authz.internal:9443"
#: Given after the page's own flags: free ports, no metrics listener.
LOCAL_PORTS = (
    "--listen",
    "127.0.0.1:0",
    "--metrics-listen",
    "off",
    "--authzen-listen",
    "127.0.0.1:0",
)
_BOUND = re.compile(r"AuthZEN API on port (\d+)")
ANY = "..."


def _page_commands(program: str, subcommand: str | None = None) -> list[Command]:
    return [
        c
        for c in commands(PAGE)
        if c.program == program and (subcommand is None or c.subcommand == subcommand)
    ]


def test_the_page_serves_where_its_examples_ask() -> None:
    [serve] = _page_commands("authz-server", "serve")
    argv = serve.argv
    listen = argv[argv.index("--authzen-listen") + 1]
    assert listen.rpartition(":")[2] == ADDRESS.rpartition(":")[2], listen


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
class Server:
    workdir: Path
    env: dict[str, str]
    port: int


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the documented examples: `make system-deps`")
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = environment(prepare(PAGE, workdir))
    for command in _page_commands("authz-server", "dev-certs"):
        code, output = await _run(command.text, workdir, env)
        assert code == 0, f"{command.block.where}: $ {command.text}\n{output}"
    [serve] = _page_commands("authz-server", "serve")
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        "exec " + serve.text + " " + shlex.join(LOCAL_PORTS),
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        port = await asyncio.wait_for(_bound_port(process), timeout=30)
        drain = asyncio.create_task(process.stdout.read())  # the server's log, unread
        curl_home = tmp_path / "curl"
        curl_home.mkdir()
        (curl_home / ".curlrc").write_text(f"connect-to = {ADDRESS}:127.0.0.1:{port}\n")
        yield Server(workdir, {**env, "CURL_HOME": str(curl_home)}, port)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)
        if drain is not None:
            await drain


async def _bound_port(process: asyncio.subprocess.Process) -> int:
    """The AuthZEN port the server reports on its output; fails with that output if it
    exits first."""
    assert process.stdout is not None
    seen: list[str] = []
    while line := (await process.stdout.readline()).decode():
        seen.append(line)
        if (found := _BOUND.search(line)) is not None:
            return int(found.group(1))
    pytest.fail("the page's serve command exited:\n" + "".join(seen))


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


async def test_curl_examples_print_what_the_page_shows(server: Server) -> None:
    curls = _page_commands("curl")
    assert len(curls) >= 3
    for command in curls:
        where = f"{command.block.where}: $ {command.text}"
        code, output = await _run(command.text, server.workdir, server.env)
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
