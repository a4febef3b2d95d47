"""What the benchmark ran on: a table without its machine is not a result."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from authz_server.tools import stack

__all__ = ["machine_info"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603 — fixed argv
            argv, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[-1] if lines else "unknown"


def _envoy_version(binary: str | None) -> str:
    if binary is None:
        return "not installed"
    found = re.search(r"/(\d+\.\d+\.\d+)/", _version([binary, "--version"]))
    return f"Envoy {found.group(1)}" if found else "Envoy (version unknown)"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, kernel, load and the versions of every part measured."""
    from google.protobuf.internal import api_implementation

    envoy = stack.envoy_binary()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "memory_mb": _mem_total_mb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": _package("grpcio"),
        "protobuf": f"{_package('protobuf')} ({api_implementation.Type()})",
        "cryptography": _package("cryptography"),
        "uvloop": _package("uvloop"),
        "envoy": _envoy_version(envoy),
        "h2load": _version(["h2load", "--version"]),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
