"""`python -m bench.tracing` measures what it says (counts, never timings): every mode
runs, the live collector receives every span of every sampled Check, nothing is left
installed afterwards."""

from __future__ import annotations

import pytest

from authz_server.telemetry import spans
from bench.tracing import main, measure


def test_every_mode_runs_and_the_live_collector_gets_every_span() -> None:
    results = measure(n=20, rounds=2)
    assert [r.mode for r in results] == [
        "off",
        "on, not sampled",
        "on, live collector",
        "on, dead collector",
    ]
    by_mode = {r.mode: r for r in results}
    # 20 Checks x 2 rounds, each a Check span and two children.
    assert by_mode["on, live collector"].exported == 20 * 2 * 3
    assert by_mode["on, dead collector"].exported == 0
    assert all(r.caller_us > 0 and r.process_us > 0 for r in results)
    assert spans.tracer() is None


def test_the_table_names_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--n", "5", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for mode in ("off", "on, not sampled", "on, live collector", "on, dead collector"):
        assert mode in out


def test_counts_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        main(["--n", "0"])
