"""`authz-server demo --once` runs its whole tour against real Envoy and exits 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz_server import stack
from authz_server.demo import TOUR, run_demo
from authz_server.demo_approval import APPROVAL_STEPS

pytestmark = pytest.mark.e2e


def test_demo_tour_passes_and_stops_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every step gets its expected answer; the audit log and curl hints are printed."""
    if stack.envoy_binary() is None:
        pytest.skip("envoy not installed")
    assert run_demo(tmp_path / "demo", once=True) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    total = len(TOUR) + len(APPROVAL_STEPS)
    assert f"{total}/{total} steps as expected." in out
    assert "approved " in out  # the approvals CLI printed what it did
    assert f"--cacert {tmp_path / 'demo' / 'certs' / 'ca.pem'}" in out
    assert (tmp_path / "demo" / "audit.jsonl").stat().st_size > 0
