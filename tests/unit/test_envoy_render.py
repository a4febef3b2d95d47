"""`authz-server render-envoy`: the shipped templates filled from the command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from authz_server.cli import main as cli
from authz_server.tools.envoy_config import DEFAULTS, placeholders, shipped_configs
from authz_server.tools.envoy_render import PLACEHOLDERS, describe_placeholders

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = shipped_configs(ROOT)
FRONT = ROOT / "envoy" / "front-proxy.yaml"
REQUIRED = ["LISTEN_PORT=8443", "ADMIN_PORT=9901", "CERT_DIR=/certs", "AUTHZ_PORT=9191"]
FRONT_VALUES = [*REQUIRED, "BACKEND_PORT=8080"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["render-envoy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def sets(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def test_every_shipped_placeholder_is_documented() -> None:
    """`--list`, `--help` and docs/deployment/envoy.md explain each name the templates use."""
    used = set().union(*(placeholders(t) for t in TEMPLATES))
    assert used == set(PLACEHOLDERS)
    page = (ROOT / "docs" / "deployment" / "envoy.md").read_text()
    for name, placeholder in PLACEHOLDERS.items():
        default = f"`{placeholder.default}`" if placeholder.default else "required"
        assert re.search(rf"`{name}`\s*\|\s*{re.escape(default)}\s*\|", page), name


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_list_shows_each_placeholder_with_its_default(
    template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, str(template), "--list")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(
        placeholders(template), key=template.read_text().index
    )
    for line in lines:
        name = line.split()[0]
        expected = f"default {DEFAULTS[name]}" if name in DEFAULTS else "required"
        assert expected in line, line


def test_renders_a_shipped_template_by_name_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """Given values win, the rest take their defaults; the result is YAML without `${`."""
    code, out, _ = run(capsys, "front-proxy", *sets(FRONT_VALUES), "--set", "AUTHZ_HOST=authz")
    assert code == 0
    assert "${" not in out
    config = yaml.safe_load(out)
    authz, backend = config["static_resources"]["clusters"]
    address = authz["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "authz", "port_value": 9191}
    backend_address = backend["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert backend_address["address"]["socket_address"]["address"] == DEFAULTS["BACKEND_HOST"]
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["address"] == DEFAULTS["LISTEN_ADDRESS"]


def test_writes_out_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "envoy.yaml"
    code, out, err = run(capsys, str(FRONT), *sets(FRONT_VALUES), "--out", str(out_file))
    assert (code, out) == (0, "")
    assert f"wrote {out_file}" in err
    assert yaml.safe_load(out_file.read_text())["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9901,
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["front-proxy", *sets(REQUIRED)],
                     "front-proxy.yaml needs a value for BACKEND_PORT: --set BACKEND_PORT=...",
                     id="missing-required"),
        pytest.param(["front-proxy", *sets(FRONT_VALUES), "--set", "LISTEN_PROT=1"],
                     "front-proxy.yaml has no placeholder LISTEN_PROT (it uses: ", id="unknown-name"),
        pytest.param(["sidecar", *sets(FRONT_VALUES), "--set", "BACKEND_HOST=x"],
                     "sidecar.yaml has no placeholder BACKEND_HOST", id="name-of-the-other-template"),
        pytest.param(["front-proxy", "--set", "LISTEN_PORT"],
                     "--set 'LISTEN_PORT' must be NAME=VALUE", id="not-an-assignment"),
        pytest.param(["front-proxy", *sets(FRONT_VALUES), "--set", "LISTEN_PORT=1"],
                     "--set LISTEN_PORT given twice", id="repeated"),
        pytest.param(["front-proxy", *sets([*FRONT_VALUES[:-1], "BACKEND_PORT=http"])],
                     "BACKEND_PORT must be a port number 1-65535", id="port-not-a-number"),
        pytest.param(["front-proxy", *sets([*FRONT_VALUES[:-1], "BACKEND_PORT=70000"])],
                     "BACKEND_PORT must be a port number 1-65535", id="port-out-of-range"),
        pytest.param(["front-proxy", *sets(FRONT_VALUES), "--set", "AUTHZ_HOST=a, port_value: 1}"],
                     "AUTHZ_HOST must be a host name or IPv4 address", id="yaml-injection-host"),
        pytest.param(["front-proxy", *sets([v for v in FRONT_VALUES if "CERT" not in v]),
                      "--set", "CERT_DIR=/c}\n  evil: 1"], "CERT_DIR may only contain",
                     id="yaml-injection-newline"),
        pytest.param(["front-proxy", *sets([v for v in FRONT_VALUES if "CERT" not in v]),
                      "--set", "CERT_DIR=/my certs"], "CERT_DIR may only contain", id="path-with-space"),
        pytest.param(["front-proxy", *sets(FRONT_VALUES), "--set", "TRUST_DOMAIN=Example.ORG"],
                     "TRUST_DOMAIN must be a trust domain", id="trust-domain-case"),
        pytest.param(["no-such-template"], "template 'no-such-template': no such file, nor a "
                     "shipped template (front-proxy, sidecar)", id="unknown-template"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 with one line naming the problem, never a traceback or a half-filled config."""
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1, err
    assert message in err, err


def test_template_with_a_stray_dollar_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "mine.yaml"
    template.write_text("admin: {port: ${ADMIN_PORT}, cost: $5}\n")
    code, _, err = run(capsys, str(template), "--set", "ADMIN_PORT=9901")
    assert code == 1
    assert "has a '$' that is not ${NAME} (write '$$' for '$')" in err


def test_own_template_placeholders_are_required_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's template may use names of its own: required, and pasted only when safe."""
    template = tmp_path / "mine.yaml"
    template.write_text("cluster: ${MY_CLUSTER}\nport: ${AUTHZ_PORT}\n")
    code, _, err = run(capsys, str(template), "--set", "AUTHZ_PORT=9191")
    assert code == 1
    assert "needs a value for MY_CLUSTER" in err
    code, out, _ = run(capsys, str(template), "--set", "AUTHZ_PORT=9191", "--set", "MY_CLUSTER=a")
    assert (code, out) == (0, "cluster: a\nport: 9191\n")


def test_help_documents_every_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["render-envoy", "--help"])
    out = capsys.readouterr().out
    for line in describe_placeholders(list(PLACEHOLDERS)).splitlines():
        assert line.strip() in out
