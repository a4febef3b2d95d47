"""The shipped Envoy configs pass `authz-server lint-envoy`, as templates and rendered.

(`envoy --mode validate` of the same files runs in tests/e2e/test_envoy_configs.py.)
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from authz_server.tools.envoy_config import placeholders, render_envoy_config, shipped_configs
from authz_server.tools.lint_envoy import lint_envoy_file, run_lint_envoy

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = shipped_configs(ROOT)
SAMPLE = {
    "LISTEN_PORT": 8443,
    "ADMIN_PORT": 9901,
    "CERT_DIR": "/certs",
    "AUTHZ_PORT": 9191,
    "BACKEND_PORT": 8080,
}


def test_both_configs_ship() -> None:
    assert {p.name for p in TEMPLATES} >= {"front-proxy.yaml", "sidecar.yaml"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_passes_lint_with_body_rules(template: Path) -> None:
    """Unrendered, `${...}` and all, with the strictest options."""
    assert lint_envoy_file(template, body_rules=True) == []


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_rendered_config_passes_the_cli(template: Path, tmp_path: Path) -> None:
    values = {name: SAMPLE[name] for name in placeholders(template) if name in SAMPLE}
    config = tmp_path / template.name
    config.write_text(render_envoy_config(template, **values))
    out = io.StringIO()
    assert run_lint_envoy(str(config), out, body_rules=True) == 0, out.getvalue()
