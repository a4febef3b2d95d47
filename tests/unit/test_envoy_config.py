"""Rendering an Envoy template: a value that is missing is a ConfigError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz_server.core.errors import ConfigError
from authz_server.tools.envoy_config import render_envoy_config

TEMPLATE = """\
address: ${LISTEN_ADDRESS}
port: ${LISTEN_PORT}
authz: ${AUTHZ_HOST}:${AUTHZ_PORT}
"""


def test_renders_given_values_over_defaults(tmp_path: Path) -> None:
    """Given values fill their placeholders; the rest come from the defaults."""
    template = tmp_path / "proxy.yaml"
    template.write_text(TEMPLATE)
    rendered = render_envoy_config(template, LISTEN_PORT=8443, AUTHZ_PORT=9191)
    assert rendered == "address: 0.0.0.0\nport: 8443\nauthz: 127.0.0.1:9191\n"


@pytest.mark.parametrize(
    ("values", "missing"),
    [
        pytest.param({}, "${AUTHZ_PORT}, ${LISTEN_PORT}", id="two-missing"),
        pytest.param({"LISTEN_PORT": 1}, "${AUTHZ_PORT}", id="one-missing"),
    ],
)
def test_missing_placeholders_are_named_with_the_template(
    tmp_path: Path, values: dict[str, object], missing: str
) -> None:
    """Every placeholder without a value is named, with the template file, in one error."""
    template = tmp_path / "proxy.yaml"
    template.write_text(TEMPLATE)
    with pytest.raises(ConfigError) as caught:
        render_envoy_config(template, **values)
    assert str(caught.value) == (
        f"Envoy template {template}: no value for {missing} (give each one)"
    )


def test_a_dollar_that_is_no_placeholder(tmp_path: Path) -> None:
    """A stray `$` is a ConfigError with its place, not a ValueError."""
    template = tmp_path / "proxy.yaml"
    template.write_text("port: 1\nprice: $5\n")
    with pytest.raises(ConfigError, match=r"proxy\.yaml: Invalid placeholder .*line 2"):
        render_envoy_config(template)
