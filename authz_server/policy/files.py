"""Finding and reading policy files.

`--policy` is one file or a directory. A directory is read non-recursively: every
`*.yaml` / `*.yml` file in sorted name order; hidden files (`.x.yaml`, `..data`,
`..2024_...`) and subdirectories are skipped, symlinks to files are followed.

A Kubernetes ConfigMap volume shows each key as a symlink through `..data`, which
kubelet swaps atomically on update. When `..data` exists the files are listed and read
from the directory it points to, so one load never mixes two ConfigMap versions.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from authz_server.core.errors import PolicyIssue

__all__ = ["MAX_FILE_BYTES", "SourceFile", "policy_version", "read_sources"]

#: Larger files are refused: a policy is text written by people, not a data dump.
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One policy file's bytes, read once: hashing and parsing see the same bytes."""

    #: As shown in issues and `Rule.location`: the path under the directory given.
    name: str
    data: bytes


def read_sources(path: Path) -> tuple[list[SourceFile], list[PolicyIssue]]:
    """The policy's files as bytes, read once: hashing and parsing see the same bytes."""
    issues: list[PolicyIssue] = []
    where = str(path)
    if not path.is_dir():
        source = _read_file(path, where, issues)
        return ([source] if source else []), issues
    listing = path
    if (path / "..data").is_dir():  # ConfigMap volume: one consistent snapshot
        listing = (path / "..data").resolve()
    try:
        names = sorted(os.listdir(listing))
    except OSError as e:
        issues.append(PolicyIssue(where, None, None, None, f"cannot list directory: {e.strerror}"))
        return [], issues
    sources = []
    for name in names:
        if name.startswith(".") or not name.endswith((".yaml", ".yml")):
            continue
        if not (listing / name).is_file():  # follows symlinks; skips directories
            continue
        source = _read_file(listing / name, str(path / name), issues)
        if source:
            sources.append(source)
    if not sources and not issues:
        issues.append(PolicyIssue(where, None, None, None, "no *.yaml or *.yml files in directory"))
    return sources, issues


def _read_file(path: Path, name: str, issues: list[PolicyIssue]) -> SourceFile | None:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        issues.append(PolicyIssue(name, None, None, None, f"cannot read: {e.strerror}"))
        return None
    if len(data) > MAX_FILE_BYTES:
        issues.append(PolicyIssue(name, None, None, None, f"larger than {MAX_FILE_BYTES} bytes"))
        return None
    return SourceFile(name, data)


def policy_version(sources: list[SourceFile]) -> str:
    """sha256 over (base name, length, bytes) of each file: the same files, the same id."""
    digest = hashlib.sha256()
    for source in sorted(sources, key=lambda s: os.path.basename(s.name)):
        digest.update(f"{os.path.basename(source.name)}\0{len(source.data)}\0".encode())
        digest.update(source.data)
    return digest.hexdigest()
