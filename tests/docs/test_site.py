"""`mkdocs build --strict` builds the documentation (so `make test` catches broken docs);
broken links and anchors fail it; every `docs/<page>.md#<anchor>` the code refers to is a built
page and heading; the generated pages hold every command, flag and reason; no file cites
documents the repository does not have.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz_server.telemetry.metrics import Metrics
from authz_server.tools.lint_envoy_codes import CODES
from tests.docs.pages import DOCS, ROOT

#: Citations of documents that are not in the repository (spelled apart, so that this
#: file does not cite them either).
FORBIDDEN = ("SPEC" + " §", "PERF" + "-NOTES")
#: A reference to a page of the site from outside it: `docs/concepts/identity.md#sources`.
_DOCS_REFERENCE = re.compile(r"(?<![\w./-])docs/([\w./-]+?\.md)(?:#([\w-]+))?")
#: Never searched: version control, environments, caches, build output.
_NOT_SOURCES = {".git", ".venv", "build", "site", "__pycache__", ".mypy_cache", ".ruff_cache",
                ".pytest_cache", ".hypothesis", ".demo"}  # fmt: skip


def _build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _build(ROOT, out)
    assert result.returncode == 0, result.stderr
    return out


def _html(site: Path, doc: str) -> str:
    """The built page of docs/`doc` (directory URLs: a/b.md → a/b/index.html)."""
    page = Path(doc).with_suffix("")
    parts = page.parts[:-1] if page.name == "index" else page.parts
    path = site.joinpath(*parts, "index.html")
    assert path.is_file(), f"docs/{doc} was not built ({path})"
    return path.read_text(encoding="utf-8")


def _repository_files() -> Iterator[Path]:
    """Every file of the repository: what git tracks or would track, or, outside a git
    checkout, every file but those under `_NOT_SOURCES`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
        yield from (ROOT / n for n in names if (ROOT / n).is_file())
        return
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if path.is_file() and not _NOT_SOURCES & set(relative.parts):
            yield path


def _texts() -> Iterator[tuple[str, str]]:
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, archives: no prose
        yield str(path.relative_to(ROOT)), text


def test_no_file_cites_documents_the_repository_does_not_have() -> None:
    """Code, tests, configuration and docs say the fact itself, or point into docs/."""
    found = [f"{name}: {word}" for name, text in _texts() for word in FORBIDDEN if word in text]
    assert not found, found


def test_the_file_list_covers_code_docs_and_configuration() -> None:
    names = {name for name, _ in _texts()}
    assert {"README.md", "Makefile", "Dockerfile", "mkdocs.yml"} <= names
    assert any(n.startswith("authz_server/") for n in names)
    assert any(n.startswith("k8s/") for n in names)
    assert not any(n.startswith((".venv/", ".git/")) for n in names)


def _references() -> list[tuple[str, str, str]]:
    """(file, page, anchor) of every docs/<page>.md#<anchor> outside the site's own pages."""
    found = []
    for name, text in _texts():
        if name.startswith("docs/") and name.endswith(".md"):
            continue  # the site's own links: the strict build checks them
        for match in _DOCS_REFERENCE.finditer(text):
            found.append((name, match.group(1), match.group(2) or ""))
    return found


def test_the_code_refers_to_the_docs() -> None:
    """The check below is not vacuous: the code's references to the docs are found."""
    referring = {name for name, _, _ in _references()}
    assert "README.md" in referring
    assert any(name.startswith("authz_server/") for name in referring)


def test_every_docs_reference_in_the_code_is_a_built_page_and_heading(site: Path) -> None:
    missing = []
    for name, page, anchor in _references():
        built = _built_page(site, page)
        if built is None:
            missing.append(f"{name}: docs/{page} is not a page of the site")
        elif anchor and f'id="{anchor}"' not in built.read_text(encoding="utf-8"):
            missing.append(f"{name}: docs/{page} has no heading #{anchor}")
    assert not missing, "\n".join(sorted(set(missing)))


def _built_page(site: Path, doc: str) -> Path | None:
    page = Path(doc).with_suffix("")
    parts = page.parts[:-1] if page.name == "index" else page.parts
    path = site.joinpath(*parts, "index.html")
    return path if path.is_file() else None


def test_cli_page_documents_every_command_and_flag(site: Path) -> None:
    from authz_server.cli.main import build_parser

    html = _html(site, "cli.md")
    pending = [("", build_parser())]
    while pending:
        prefix, parser = pending.pop()
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    full = f"{prefix} {name}".strip()
                    assert f'id="{full.replace(" ", "-")}"' in html, f"no section for {full}"
                    pending.append((full, sub))
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help", "--version"):
                    assert f"<code>{flag}" in html, f"{prefix}: {flag} is not documented"


def test_reason_page_lists_every_reason_with_its_status(site: Path) -> None:
    from authz_server.core.decision import STATUS_BY_REASON

    html = _html(site, "concepts/reason-codes.md")
    for reason, (_, http_status) in STATUS_BY_REASON.items():
        row = re.search(
            rf'<tr>\s*<td><code id="{reason}">{reason}</code></td>\s*<td[^>]*>(\d+)', html
        )
        assert row is not None, f"{reason} is not in the table"
        assert int(row.group(1)) == http_status


def test_metrics_page_names_every_metric() -> None:
    text = (DOCS / "operations" / "metrics.md").read_text(encoding="utf-8")
    names = {
        metric.name + ("_total" if metric.type == "counter" else "")
        for metric in Metrics().registry.collect()
    }
    missing = sorted(name for name in names if f"`{name}" not in text)
    assert not missing, f"docs/operations/metrics.md does not name: {missing}"


def test_envoy_page_names_every_lint_finding() -> None:
    text = (DOCS / "deployment" / "envoy.md").read_text(encoding="utf-8")
    missing = sorted(code for code in CODES if f"`{code}`" not in text)
    assert not missing, f"docs/deployment/envoy.md does not explain: {missing}"


@pytest.mark.parametrize(
    ("addition", "complaint"),
    [
        ("[gone](no-such-page.md)", "no-such-page.md"),
        ("[anchor](policy/reference.md#no-such-anchor)", "no-such-anchor"),
        ("[dir](policy/)", "policy/"),
    ],
    ids=["missing-page", "missing-anchor", "unrecognised-link"],
)
def test_strict_build_fails_on_broken_links(addition: str, complaint: str, tmp_path: Path) -> None:
    """The configuration turns each kind of broken link into a build failure."""
    project = tmp_path / "project"
    shutil.copytree(DOCS, project / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    index = project / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + f"\n{addition}\n", encoding="utf-8")
    result = _build(project, tmp_path / "site")
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_strict_build_fails_on_a_page_missing_from_the_nav(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(DOCS, project / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    (project / "docs" / "orphan.md").write_text("# Orphan\n", encoding="utf-8")
    result = _build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "orphan.md" in result.stderr, result.stderr
