"""Instructions per Check, counted by valgrind's callgrind: the figure noise cannot move.

    python -m bench.instructions [--rules 200] [--checks 1000]

Timings on a shared 2-core machine wander by 5-10% between runs, more than most single
changes to the Check path are worth. An instruction count does not: the same code, inputs
and interpreter give the same count whatever else the machine is doing. The whole Check
(`bench.micro`'s assembly: parse, identity with a warm certificate cache, rules, response,
metrics, audit record written to a file) runs in a child process under callgrind twice,
once with `BASE` Checks over the benchmark mix and once with `BASE + checks`; the
difference divided by `checks` is one Check, start-up and policy loading excluded.

It counts work, not time: a cache miss costs no instruction, and under valgrind OpenSSL
runs its portable SHA-256 (no CPU extensions), so the audit chain's hash counts several
times what it costs natively. Compare counts with counts, before and after a change.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["InstructionCount", "count_instructions", "main"]

#: Checks in the shorter run: enough to warm every cache the longer run relies on.
BASE = 200

_ROOT = Path(__file__).resolve().parent.parent
_COLLECTED = re.compile(r"Collected : (\d+)")


@dataclass(frozen=True)
class InstructionCount:
    rules: int
    checks: int
    #: Instructions of the whole Check, averaged over `checks` Checks of the mix.
    per_check: int
    #: The two runs' totals (BASE Checks, BASE + checks Checks).
    base_total: int
    long_total: int


class ValgrindMissing(RuntimeError):
    pass


def _run(rules: int, checks: int, workdir: Path) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ValgrindMissing("valgrind not installed (apt-get install -y valgrind)")
    argv = [
        valgrind,
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        str(checks),
        "--rules",
        str(rules),
        "--workdir",
        str(workdir),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # same dict layouts in both runs
    done = subprocess.run(  # noqa: S603 (our own interpreter and module)
        argv, cwd=_ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def count_instructions(rules: int = 200, checks: int = 1000) -> InstructionCount:
    """Instructions of one Check over the benchmark mix, with a `rules`-rule policy."""
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        base = _run(rules, BASE, Path(tmp) / "base")
        long = _run(rules, BASE + checks, Path(tmp) / "long")
    return InstructionCount(rules, checks, (long - base) // checks, base, long)


def _child(rules: int, checks: int, workdir: Path) -> None:
    from bench.micro import assemble  # only in the child: the parent needs no policy

    assembly = assemble(rules, workdir)
    for i in range(checks):
        assembly.check(i)
    assembly.audit.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--checks", type=int, default=1000, help="Checks counted (default 1000)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        _child(args.rules, args.child, args.workdir)
        return 0
    try:
        result = count_instructions(args.rules, args.checks)
    except ValgrindMissing as error:
        print(f"bench.instructions: {error}", file=sys.stderr)
        return 2
    what = f"{result.rules} rules, {result.checks} Checks"
    print(f"{result.per_check:,} instructions per Check ({what})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
