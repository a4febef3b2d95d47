"""`authz-server demo`: `--once` runs its whole tour against real Envoy, stops and says so;
the approval round trip goes through the web console and the demo's signed-notification
receiver; on a terminal the stack stays up, and the curl commands it prints work until
Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from authz_server.tools import stack
from authz_server.tools.demo.approval import APPROVAL_STEPS
from authz_server.tools.demo.certs import BROWSER_P12, IDS, P12_PASSWORD
from authz_server.tools.demo.tour import TOUR, run_demo

pytestmark = pytest.mark.e2e

TOTAL = len(TOUR) + len(APPROVAL_STEPS)


def test_demo_tour_passes_and_stops_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every step gets its expected answer; then the stack is gone, so no curl line is
    offered, and the output says the stack stopped and how to keep it running."""
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed")
    assert run_demo(tmp_path / "demo", once=True) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert f"{TOTAL}/{TOTAL} steps as expected." in out
    assert "rejected " in out  # the approvals CLI printed what it did
    assert not _curl_commands(out)
    assert "The stack has stopped (--once)" in out
    assert "run `authz-server demo` (or `make demo`) from a terminal, without --once" in out
    assert (tmp_path / "demo" / "audit.jsonl").stat().st_size > 0


def test_demo_approves_through_the_console_and_receives_signed_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console URL and the browser certificate are printed; the approval is read and
    approved through the console's pages (303 to the approved page); the demo's receiver
    got pending, approved and rejected with verified signatures, the pending one linking
    to the console; the browser certificate opens with the printed password."""
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed")
    workdir = tmp_path / "demo"
    assert run_demo(workdir, once=True) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    console = re.search(r"Approval console: (https://localhost:\d+)/approvals", out)
    assert console is not None, out
    p12 = workdir / "certs" / BROWSER_P12
    assert f"import {p12} (password: {P12_PASSWORD})" in out
    _, certificate, _ = pkcs12.load_key_and_certificates(p12.read_bytes(), P12_PASSWORD.encode())
    assert certificate is not None
    assert IDS["human"] in certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)

    approval_id = re.search(r'"approval_id":"([0-9a-f]{64})"', out)
    assert approval_id is not None, out
    page = f"{console.group(1)}/approvals/{approval_id.group(1)}"
    assert f"GET {page}  as {IDS['human']}" in out
    assert f"POST {page}/decide  decision=approve" in out
    assert f"→ 303, to /approvals/{approval_id.group(1)}?done=approved" in out
    for event in ("pending", "approved", "rejected"):
        assert f"← notification {event}: POST localhost/v1/transfers" in out
    assert out.count("; signature verified") == 3 and "BAD SIGNATURE" not in out
    assert f"     link: {page}\n" in out


def _curl_commands(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith("curl ")]


def _read_until(proc: subprocess.Popen[bytes], marker: str, timeout: float) -> str:
    """The demo's output up to and including the line with `marker`."""
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in out:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
        chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
        if not chunk:
            raise AssertionError(f"no {marker!r} from the demo:\n{out.decode(errors='replace')}")
        out += chunk
    return out.decode()


def test_on_a_terminal_the_printed_curl_commands_work_until_ctrl_c(tmp_path: Path) -> None:
    """Stdin a terminal, no --once: the stack stays up, each printed curl command reaches
    it, the printed console answers the human, and Ctrl-C stops it all."""
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "authz_server", "demo", "--workdir", str(tmp_path / "demo")],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    os.close(secondary)
    try:
        out = _read_until(proc, "Ctrl-C stops everything", timeout=120)
        assert f"{TOTAL}/{TOTAL} steps as expected." in out
        assert "The stack has stopped" not in out
        commands = _curl_commands(out)
        assert len(commands) == 4, out
        first = shlex.split(commands[0])  # the frontend reads an order
        reply = subprocess.run(first, capture_output=True, timeout=30, check=False)
        assert reply.returncode == 0, reply.stderr
        echoed = json.loads(reply.stdout)
        assert echoed["headers"]["x-authz-rule"] == "orders-read"
        console = re.findall(r"Approval console: https://localhost:(\d+)/approvals", out)
        assert len(console) == 2, out  # at the start, and with the commands to try
        certs = tmp_path / "demo" / "certs"
        page = stack.https_request(
            int(console[-1]),
            "/approvals",
            ca=certs / "ca.pem",
            cert=(certs / "human.pem", certs / "human.key"),
        )
        assert page.status == 200 and b"Approvals" in page.body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        after = subprocess.run(first, capture_output=True, timeout=30, check=False)
        assert after.returncode != 0, "Envoy still answers after Ctrl-C"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the demo stops its children on SIGTERM too
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        os.close(primary)
        if proc.stdout is not None:
            proc.stdout.close()
