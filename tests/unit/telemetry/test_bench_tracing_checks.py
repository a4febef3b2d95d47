"""`python -m bench.tracing_checks` (phase T of `make bench`) measures what it says
(counts, never timings): every mode decides the whole mix, each traced Check's three
spans reach the receiver, an unsampled parent sends none, nothing stays installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz_server.telemetry import spans
from bench.tracing_checks import MODES, main, measure_checks, render


def test_every_mode_runs_and_every_traced_check_is_exported(tmp_path: Path) -> None:
    results = measure_checks(rules=20, n=10, rounds=2, workdir=tmp_path)
    assert [r.mode for r in results] == list(MODES)
    exported = {r.mode: r.exported for r in results}
    assert exported == {
        "off": None,
        "on, unsampled parent": 0,
        "on, sampled parent": 10 * 2 * 3,  # the Check span, identity and rules
        "on, no parent": 10 * 2 * 3,
    }
    assert all(r.checks == 20 and r.caller_us > 0 and r.process_us > 0 for r in results)
    assert spans.tracer() is None
    table = render(results)
    assert all(mode in table for mode in MODES)


def test_counts_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        main(["--n", "0"])
