"""Every shipped Envoy config renders and passes `envoy --mode validate`."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from authz_server.core.errors import ConfigError
from authz_server.tools import stack
from authz_server.tools.demo.tour import DEMO_POLICY
from authz_server.tools.envoy_config import placeholders, render_envoy_config, shipped_configs
from authz_server.tools.lint_envoy import run_lint_envoy
from tests.e2e import harness

pytestmark = pytest.mark.e2e

CONFIGS = shipped_configs()

#: Example values for every placeholder any shipped template uses.
VALUES = {
    "LISTEN_ADDRESS": "127.0.0.1",
    "LISTEN_PORT": 8443,
    "ADMIN_PORT": 9901,
    "TRUST_DOMAIN": "example.org",
    "AUTHZ_HOST": "127.0.0.1",
    "AUTHZ_PORT": 9191,
    "BACKEND_HOST": "127.0.0.1",
    "BACKEND_PORT": 8080,
}


def _assert_valid(config: Path) -> None:
    binary = stack.envoy_binary()
    if binary is None:
        pytest.skip("envoy not installed")
    result = subprocess.run(
        [binary, "--mode", "validate", "-c", str(config), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_are_configs_to_check() -> None:
    """The glob finds the shipped files (an empty parametrisation would pass silently)."""
    names = {path.name for path in CONFIGS}
    assert {"front-proxy.yaml", "sidecar.yaml"} <= names


@pytest.mark.parametrize("template", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_renders_and_validates(template: Path, tmp_path: Path) -> None:
    """Rendering leaves no placeholder behind and real Envoy accepts the result."""
    certs = harness.mint_certs(tmp_path / "certs")
    unknown = placeholders(template) - set(VALUES) - {"CERT_DIR"}
    assert not unknown, f"placeholders without an example value: {sorted(unknown)}"
    rendered = render_envoy_config(template, CERT_DIR=certs.dir, **VALUES)
    assert "${" not in rendered
    config = tmp_path / template.name
    config.write_text(rendered, encoding="utf-8")
    _assert_valid(config)


def test_missing_placeholder_value_is_an_error_naming_it() -> None:
    """A forgotten value fails loudly instead of leaving `${...}` in an Envoy config."""
    with pytest.raises(ConfigError, match=r"\$\{AUTHZ_PORT\}"):
        render_envoy_config(harness.FRONT_PROXY, LISTEN_PORT=1, ADMIN_PORT=2, CERT_DIR="/c")


@pytest.mark.parametrize("variant", ["pooled", "raw-paths"])
def test_test_only_variants_validate(variant: str, tmp_path: Path) -> None:
    """The misconfigured variants the e2e tests run are themselves valid Envoy configs."""
    certs = harness.mint_certs(tmp_path / "certs")
    base = harness.render_front_proxy(
        certs, authz_port=9191, backend_port=8080, listen_port=8443, admin_port=9901
    )
    text = (
        harness.with_trusted_ca(base, certs.pooled_ca)
        if variant == "pooled"
        else harness.without_path_normalisation(base)
    )
    config = tmp_path / "variant.yaml"
    config.write_text(text, encoding="utf-8")
    _assert_valid(config)


@pytest.mark.parametrize("template", CONFIGS, ids=[p.name for p in CONFIGS])
def test_render_envoy_command_output_validates(template: Path, tmp_path: Path) -> None:
    """`authz-server render-envoy NAME --set ... --out FILE` gives a config Envoy runs."""
    certs = harness.mint_certs(tmp_path / "certs")
    config = tmp_path / template.name
    values = {**VALUES, "CERT_DIR": certs.dir}
    sets = [f"--set={n}={values[n]}" for n in sorted(placeholders(template))]
    result = subprocess.run(
        [sys.executable, "-m", "authz_server", "render-envoy", template.stem, *sets],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config.write_text(result.stdout, encoding="utf-8")
    _assert_valid(config)


POLICIES = {
    "examples": lambda tmp: harness.ROOT / "examples" / "policy",
    "demo": lambda tmp: _written(tmp / "demo-policy.yaml", DEMO_POLICY),
}


def _written(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("template", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_sends_the_body_to_every_body_rule(
    template: Path, policy: str, tmp_path: Path
) -> None:
    """`lint-envoy --policy`: every route that examples/policy's and the demo's body rules
    reach sends the body."""
    out = io.StringIO()
    path = POLICIES[policy](tmp_path)
    assert run_lint_envoy(str(template), out, policy=str(path)) == 0, out.getvalue()
    assert "read the body, every route sends it" in out.getvalue()
