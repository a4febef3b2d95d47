"""`mkdocs build --strict` builds the documentation (so `make test` catches broken docs);
broken links and anchors fail it; every citation the code makes has a page and anchor;
the generated pages hold every command, flag and reason; nothing cites documents the
repository does not have.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from authz_server.telemetry.metrics import Metrics
from authz_server.tools.lint_envoy_codes import CODES
from tests.docs.pages import DOCS, ROOT

CITATIONS = DOCS / "_citations.txt"
FORBIDDEN = ("SPEC §", "PERF-NOTES")
#: Where the code cites them; the mapping file says where each now lives in docs/.
CITING = ("authz_server", "tests", "bench", "Makefile", "envoy", "k8s")
_CITATION = re.compile(r"SPEC §[0-9]+(?:\.[0-9]+)*|PERF-NOTES")


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


def _mapping() -> dict[str, str]:
    mapping: dict[str, str] = {}
    for line in CITATIONS.read_text(encoding="utf-8").splitlines():
        citation, arrow, target = line.partition(" -> ")
        assert arrow and citation not in mapping, f"bad line in {CITATIONS.name}: {line!r}"
        mapping[citation] = target
    return mapping


def test_every_citation_in_the_code_has_a_target() -> None:
    cited: set[str] = set()
    for name in CITING:
        root = ROOT / name
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".pem", ".key"):
                continue
            cited.update(_CITATION.findall(path.read_text(encoding="utf-8", errors="replace")))
    missing = cited - set(_mapping())
    assert not missing, f"citations without a line in docs/_citations.txt: {sorted(missing)}"


def test_every_citation_target_is_a_built_page_and_anchor(site: Path) -> None:
    for citation, target in _mapping().items():
        doc, _, anchor = target.removeprefix("docs/").partition("#")
        html = _html(site, doc)
        if anchor:
            assert f'id="{anchor}"' in html, f"{citation}: no #{anchor} in docs/{doc}"


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


def test_no_page_cites_documents_the_repository_does_not_have() -> None:
    """README.md and every file in docs/ say the fact itself; only the mapping file, which
    is not published (mkdocs.yml excludes it), names the citations it maps."""
    files = [ROOT / "README.md"] + [
        p
        for p in DOCS.rglob("*")
        if p.is_file() and p != CITATIONS and "__pycache__" not in p.parts
    ]
    found = [
        f"{p.relative_to(ROOT)}: {word}"
        for p in files
        for word in FORBIDDEN
        if word in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert not found, found


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
