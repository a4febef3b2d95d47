"""Policy directories: merging files, ConfigMap volumes, the version hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from authz_server.core.errors import PolicyError
from authz_server.policy.load import load_policy
from authz_server.policy.model import Effect

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org]\n"  # lines 1-3


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_directory_merges_rules_of_all_yaml_files(tmp_path: Path) -> None:
    """Rules of every *.yaml/*.yml file load; hidden files, other suffixes and dirs do not."""
    _write(tmp_path, "00-base.yaml", HEADER + "defaults: {decision: allow}\n")
    _write(tmp_path, "10-a.yaml", "version: 1\nrules:\n  - {id: a, effect: allow}\n")
    _write(tmp_path, "20-b.yml", "version: 1\nrules:\n  - {id: b, effect: deny}\n")
    _write(tmp_path, ".hidden.yaml", "garbage: [")
    _write(tmp_path, "README.md", "not policy")
    (tmp_path / "sub.yaml").mkdir()
    policy = load_policy(tmp_path)
    assert [r.id for r in policy.rules] == ["a", "b"]
    assert policy.default_effect is Effect.ALLOW
    assert policy.files == tuple(
        str(tmp_path / n) for n in ("00-base.yaml", "10-a.yaml", "20-b.yml")
    )
    assert {r.id: r.location for r in policy.rules}["b"] == f"{tmp_path / '20-b.yml'}:3"


def test_version_is_independent_of_mount_point(tmp_path: Path) -> None:
    """The version hashes file names and bytes, not the directory they sit in."""
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        _write(tmp_path / d, "p.yaml", HEADER)
    assert load_policy(tmp_path / "one").version == load_policy(tmp_path / "two").version
    _write(tmp_path / "two", "p.yaml", HEADER + "rules: []\n")
    assert load_policy(tmp_path / "one").version != load_policy(tmp_path / "two").version


def test_duplicate_ids_and_sections_across_files(tmp_path: Path) -> None:
    """Ids are unique across files; `identity` may be defined by one file only."""
    a = _write(tmp_path, "a.yaml", HEADER + "rules:\n  - {id: same, effect: allow}\n")
    b = _write(tmp_path, "b.yaml", HEADER + "rules:\n  - {id: same, effect: deny}\n")
    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path)
    assert [(i.file, i.line, i.field, i.message) for i in raised.value.issues] == [
        (str(b), 2, "identity", f"already defined at {a}:2"),
        (str(b), 5, "id", f"duplicate rule id 'same' (first defined at {a}:5)"),
    ]


def test_errors_of_all_files_are_reported(tmp_path: Path) -> None:
    """A broken file does not hide the problems of the others."""
    _write(tmp_path, "a.yaml", HEADER + "rules:\n  - {id: a, effect: maybe}\n")
    _write(tmp_path, "b.yaml", "version: 1\nrules: [\n")
    _write(tmp_path, "c.yaml", "version: 1\nrules:\n  - {id: c, effect: allow, hosts: ['h:1']}\n")
    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path)
    assert [(Path(i.file).name, i.line) for i in raised.value.issues] == [
        ("a.yaml", 5),
        ("b.yaml", 3),
        ("c.yaml", 3),
    ]


def test_configmap_volume_is_read_through_data_symlink(tmp_path: Path) -> None:
    """Kubernetes' `..data` layout loads its files once, from the current snapshot."""
    snapshot = tmp_path / "..2024_01_01_00_00_00.1"
    snapshot.mkdir()
    _write(snapshot, "policy.yaml", HEADER + "rules:\n  - {id: cm, effect: allow}\n")
    os.symlink(snapshot.name, tmp_path / "..data")
    os.symlink("..data/policy.yaml", tmp_path / "policy.yaml")
    policy = load_policy(tmp_path)
    assert [r.id for r in policy.rules] == ["cm"]
    assert policy.files == (str(tmp_path / "policy.yaml"),)


def test_missing_path_and_empty_directory_are_issues(tmp_path: Path) -> None:
    """Nothing to load is an error, never an empty allow-nothing policy."""
    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path / "nope.yaml")
    assert [i.message for i in raised.value.issues] == ["cannot read: No such file or directory"]
    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path)
    assert [i.message for i in raised.value.issues] == ["no *.yaml or *.yml files in directory"]
