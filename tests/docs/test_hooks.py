"""The build hooks that generate pages: a reason without a meaning fails the build, a
meaning without a reason too, and a hand-written copy of a generated page is refused."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from mkdocs.exceptions import PluginError

from authz_server.core.decision import STATUS_BY_REASON
from tests.docs.pages import DOCS, ROOT


def _hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reason_codes = _hook("reason_codes")
cli_reference = _hook("cli_reference")
TABLE = {str(reason): codes for reason, codes in STATUS_BY_REASON.items()}


def test_every_reason_of_the_server_has_a_meaning() -> None:
    page = reason_codes.render_page()
    for reason in TABLE:
        assert f"`{reason}`{{#{reason}}}" in page


def test_a_new_reason_without_a_meaning_fails_the_build() -> None:
    with pytest.raises(PluginError, match="brand_new_reason"):
        reason_codes.render_page({**TABLE, "brand_new_reason": (7, 403)})


def test_a_meaning_for_a_reason_that_is_gone_fails_the_build() -> None:
    table = {k: v for k, v in TABLE.items() if k != "revoked"}
    with pytest.raises(PluginError, match="revoked"):
        reason_codes.render_page(table)


def test_statuses_come_from_the_table() -> None:
    page = reason_codes.render_page({"revoked": (16, 401)}, {"revoked": ("identity", "x")})
    assert "| `revoked`{#revoked} | 401 | `UNAUTHENTICATED` (16) |" in page


def test_cli_page_ignores_this_machines_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults are documented as the program has them, not as AUTHZ_* set them here."""
    monkeypatch.setenv("AUTHZ_LISTEN", "10.9.8.7:1")
    page = cli_reference.render_page()
    assert "10.9.8.7" not in page
    assert "| `--listen HOST:PORT`<br>`AUTHZ_LISTEN` | `0.0.0.0:9191` |" in page


@pytest.mark.parametrize("generated", ["cli.md", "concepts/reason-codes.md"])
def test_a_committed_copy_of_a_generated_page_fails_the_build(
    generated: str, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(DOCS, project / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    (project / "docs" / generated).write_text("# stale copy\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert f"docs/{generated} is generated" in result.stderr, result.stderr
