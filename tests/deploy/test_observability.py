"""k8s/observability/: the Grafana dashboard and the PrometheusRule, checked offline.

- The dashboard against a JSON Schema of the fields it uses, transcribed from Grafana's
  dashboard schema (kinds/dashboard/dashboard_kind.cue in grafana/grafana); panels tile
  the 24-column grid; every topic operators asked for has a panel.
- The rules against the PrometheusRule CRD's schema (test_k8s_manifests), and sensible.
- Every PromQL expression (after Grafana's own variable interpolation) parses, and every
  metric it names is one a live server really exports: the test starts a server with a
  real Redis and a real webhook receiver, causes the events that make series appear
  (decisions, an identity failure, a dry-run deny, a pending approval and its
  notification, a rejected reload, a store outage) and scrapes /metrics. Counters are
  named with `_total`, histograms by `_bucket`/`_sum`/`_count`, as Prometheus stores them.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jsonschema  # type: ignore[import-untyped]
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from authz_server.runtime.server import RunningServer, start_server
from authz_server.runtime.settings import Settings
from authz_server.tools import devcerts
from tests.deploy.test_k8s_manifests import K8S, rendered, validate
from tests.integration.support import check, eventually, http_get, outcome, request_for
from tests.redis_server import RedisServer, own_redis  # noqa: F401 - fixture
from tests.unit.notify.receiver import SECRET, Receiver, receiver

OBSERVABILITY = K8S / "observability"
DASHBOARD = json.loads((OBSERVABILITY / "dashboard.json").read_text())
RULES = yaml.safe_load((OBSERVABILITY / "prometheus-rules.yaml").read_text())

# --- Grafana's dashboard schema, the fields this dashboard uses ---------------------------

_STR, _BOOL, _INT = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
_UINT = {"type": "integer", "minimum": 0}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_DATASOURCE_REF = _closed({"type": _STR, "uid": _STR})
# #GridPos: h > 0, 0 < w <= 24, 0 <= x < 24, y >= 0
_GRID_POS = _closed(
    {
        "h": {"type": "integer", "exclusiveMinimum": 0},
        "w": {"type": "integer", "exclusiveMinimum": 0, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": _UINT,
        "static": _BOOL,
    },
    ("h", "w", "x", "y"),
)
# #Target is open in Grafana (each data source defines it); these are Prometheus's fields.
_TARGET = _closed(
    {"datasource": _DATASOURCE_REF, "refId": _STR, "expr": _STR, "legendFormat": _STR},
    ("refId", "expr"),
)
_THRESHOLDS = _closed(
    {
        "mode": {"enum": ["absolute", "percentage"]},
        "steps": {
            "type": "array",
            "items": _closed({"value": {"type": ["number", "null"]}, "color": _STR}, ("color",)),
        },
    },
    ("mode", "steps"),
)
_VALUE_MAPPING_RESULT = _closed({"text": _STR, "color": _STR, "icon": _STR, "index": _INT})
_VALUE_MAP = _closed(
    {
        "type": {"const": "value"},
        "options": {"type": "object", "additionalProperties": _VALUE_MAPPING_RESULT},
    },
    ("type", "options"),
)
_FIELD_CONFIG = _closed(
    {
        "unit": _STR,
        "min": {"type": "number"},
        "max": {"type": "number"},
        "decimals": {"type": "number"},
        "thresholds": _THRESHOLDS,
        "mappings": {"type": "array", "items": _VALUE_MAP},
    }
)
PANEL = _closed(
    {
        "type": {"enum": ["timeseries", "stat"]},  # the plugin types used here
        "id": _UINT,
        "title": _STR,
        "description": _STR,
        "datasource": _DATASOURCE_REF,
        "gridPos": _GRID_POS,
        "targets": {"type": "array", "items": _TARGET, "minItems": 1},
        "options": {"type": "object"},  # each panel plugin defines its own options
        "fieldConfig": _closed(
            {"defaults": _FIELD_CONFIG, "overrides": {"type": "array"}}, ("defaults", "overrides")
        ),
    },
    ("type", "id", "title", "gridPos", "targets", "fieldConfig", "options"),
)
ROW = _closed(
    {
        "type": {"const": "row"},
        "id": _UINT,
        "title": _STR,
        "collapsed": _BOOL,
        "gridPos": _GRID_POS,
        "panels": {"type": "array", "items": PANEL},
    },
    ("type", "id", "collapsed", "panels"),
)
VARIABLE_TYPES = [
    "query",
    "adhoc",
    "constant",
    "datasource",
    "interval",
    "textbox",
    "custom",
    "system",
]
_VARIABLE = _closed(
    {
        "name": _STR,
        "label": _STR,
        "type": {"enum": VARIABLE_TYPES},
        "query": {"anyOf": [_STR, {"type": "object"}]},
        "definition": _STR,
        "datasource": _DATASOURCE_REF,
        "includeAll": _BOOL,
        "multi": _BOOL,
        "allValue": _STR,
        "refresh": {"enum": [0, 1, 2]},
        "sort": _UINT,
        "hide": {"enum": [0, 1, 2]},
    },
    ("name", "type"),
)
_ANNOTATION = _closed(
    {
        "name": _STR,
        "datasource": _DATASOURCE_REF,
        "enable": _BOOL,
        "hide": _BOOL,
        "iconColor": _STR,
        "expr": _STR,  # a Prometheus annotation query spreads its fields in here
        "titleFormat": _STR,
        "step": _STR,
    },
    ("name", "datasource", "enable", "iconColor"),
)
DASHBOARD_SCHEMA = _closed(
    {
        "uid": {"type": "string", "minLength": 8, "maxLength": 40},
        "title": _STR,
        "description": _STR,
        "tags": {"type": "array", "items": _STR},
        "editable": _BOOL,
        "graphTooltip": {"enum": [0, 1, 2]},
        "timezone": _STR,
        "refresh": {"anyOf": [_STR, {"const": False}]},
        "schemaVersion": {"type": "integer", "minimum": 0, "maximum": 65535},
        "version": _UINT,
        "time": _closed({"from": _STR, "to": _STR}, ("from", "to")),
        "templating": _closed({"list": {"type": "array", "items": _VARIABLE}}),
        "annotations": _closed({"list": {"type": "array", "items": _ANNOTATION}}),
        "links": {"type": "array"},
        "panels": {"type": "array", "items": {"oneOf": [PANEL, ROW]}},
    },
    ("editable", "graphTooltip", "schemaVersion", "title", "uid", "panels"),
)


def test_dashboard_follows_grafanas_schema() -> None:
    jsonschema.validate(DASHBOARD, DASHBOARD_SCHEMA)


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda p: p.update(gridpos=p.pop("gridPos")), id="misspelt-field"),
        pytest.param(lambda p: p["gridPos"].update(w=25), id="wider-than-the-grid"),
        pytest.param(lambda p: p.update(targets=[]), id="no-query"),
        pytest.param(lambda p: p["targets"][0].pop("expr"), id="target-without-expr"),
    ],
)
def test_the_schema_would_catch_mistakes(broken: Any) -> None:
    """Guard: passing the schema means something."""
    dashboard = json.loads(json.dumps(DASHBOARD))
    broken(next(p for p in dashboard["panels"] if p["type"] != "row"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dashboard, DASHBOARD_SCHEMA)


def panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def test_panels_tile_the_grid() -> None:
    """Unique ids; no two panels (rows included) overlap on Grafana's 24-column grid."""
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    for panel in panels():
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


REQUIRED_PANELS = [
    "Decisions by reason", "Decisions by rule", "Deny rate", "Dry-run would-be denies",
    "Check latency", "Identity failures", "Pending approvals", "Revocations", "Store errors",
    "Reloads", "Reload failing", "Last reload error", "Audit log", "Audit healthy",
    "TLS certificate expiry", "Notifications", "Ready",
]  # fmt: skip


def test_every_topic_has_a_panel_with_a_description() -> None:
    titles = {p["title"]: p for p in panels()}
    assert sorted(set(REQUIRED_PANELS) - set(titles)) == []
    assert all(p.get("description") for p in panels())
    exprs = " ".join(t["expr"] for t in titles["Check latency"]["targets"])
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs


def test_queries_use_the_data_source_variable() -> None:
    [variable] = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    wanted = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    for panel in panels():
        assert panel["datasource"] == wanted, panel["title"]
        assert all(t["datasource"] == wanted for t in panel["targets"]), panel["title"]


# --- PromQL -----------------------------------------------------------------------------

#: What Grafana puts in place of its built-in variables before it sends a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h"}
#: Series Prometheus itself makes, not the server.
PROMETHEUS_SERIES: frozenset[str] = frozenset()


def interpolate(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$__" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and annotation."""
    found = [
        (f"panel {p['title']!r} {t['refId']}", interpolate(t["expr"]))
        for p in panels()
        for t in p["targets"]
    ]
    found += [
        (f"annotation {a['name']!r}", interpolate(a["expr"]))
        for a in DASHBOARD["annotations"]["list"]
        if "expr" in a
    ]
    return found


def rules() -> list[dict[str, Any]]:
    return [rule for group in RULES["spec"]["groups"] for rule in group["rules"]]


def rule_queries() -> list[tuple[str, str]]:
    return [(f"rule {r.get('alert') or r['record']}", str(r["expr"])) for r in rules()]


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects (by name or by `__name__`)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    assert matcher.op == promql_parser.MatchOp.Equal, f"name pattern in {expr}"
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def used_metrics() -> dict[str, list[str]]:
    """Metric name → where it is used (panels, annotations, variables, rules)."""
    used: dict[str, list[str]] = {}
    for where, expr in dashboard_queries() + rule_queries():
        for name in metric_names(expr):
            used.setdefault(name, []).append(where)
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((\w+), *\w+\)", query)
            assert match, f"variable {variable['name']}: {query}"
            used.setdefault(match.group(1), []).append(f"variable {variable['name']}")
    return used


@pytest.mark.parametrize(
    ("where", "expr"), dashboard_queries() + rule_queries(), ids=lambda v: str(v)[:60]
)
def test_every_expression_parses(where: str, expr: str) -> None:
    assert promql_parser.parse(expr) is not None, where


def test_metric_names_are_found_in_any_position() -> None:
    """Guard for `metric_names`: selectors inside functions, aggregations, both sides of
    a binary operator, offsets, subqueries and `__name__` matchers are all seen."""
    expr = (
        "max_over_time(a[5m:1m]) + on(job) group_left sum by (le) (rate(b_bucket[1m] offset 5m))"
        ' / {__name__="c", job="x"} and d'
    )
    assert metric_names(expr) == {"a", "b_bucket", "c", "d"}


# --- the rules ------------------------------------------------------------------------

REQUIRED_ALERTS = {
    "AuthzServerNotReady",
    "AuthzServerStoreUnreachable",
    "AuthzServerAuditFailing",
    "AuthzServerReloadFailing",
    "AuthzServerCertificateExpiring",
    "AuthzServerDenyRateSpike",
    "AuthzServerNotificationsFailing",
}


def test_alerts_are_complete_and_explained() -> None:
    validate(RULES)
    alerts = [r for r in rules() if "alert" in r]
    assert {a["alert"] for a in alerts} >= REQUIRED_ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert "for" in alert, f"{alert['alert']} would fire on one bad scrape"
    records = [r["record"] for r in rules() if "record" in r]
    assert all(re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", r) for r in records), records
    assert all(("alert" in r) != ("record" in r) for r in rules())


def test_the_kustomization_renders_valid_objects() -> None:
    objects = rendered("observability")
    assert {(o["kind"], o["metadata"]["name"]) for o in objects} == {
        ("ConfigMap", "authz-server-dashboard"),
        ("PrometheusRule", "authz-server"),
    }
    for obj in objects:
        validate(obj)
        assert obj["metadata"]["namespace"] == "authz-system"
    [config_map] = [o for o in objects if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["dashboard.json"]) == DASHBOARD


# --- every metric named is one a live server exports ---------------------------------------

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
RELEASE = "spiffe://example.org/ci/release"
POLICY = """\
version: 1
identity: {{trust_domains: [example.org], require_certificate: true}}
admin:
  principals: ["spiffe://example.org/humans/*"]
  approvals:
    notify:
      - url: {hook}
        secret_file: {secret}
        name: hook
        events: [pending]
rules:
  - id: orders-read
    paths: ["/v1/orders/{{id}}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: no-admin
    paths: ["/v1/orders/13"]
    effect: deny
    mode: dry_run
  - id: releases-publish
    methods: [POST]
    paths: ["/v1/releases/**"]
    principals: ["spiffe://example.org/ci/*"]
    effect: allow
    when:
      approval: {{approvers: ["spiffe://example.org/humans/*"], ttl: 15m}}
"""

#: Metrics the dashboard and alerts use that a server started as above declares but gives
#: no value yet, and why. Each must leave this table the day it gets one (a test fails).
WITHOUT_VALUES: dict[str, str] = {}


@dataclass(frozen=True)
class Scrape:
    #: Series names Prometheus would store for every declared family.
    declared: frozenset[str]
    #: Series names with at least one sample.
    with_values: frozenset[str]


def series_names(family: Any) -> set[str]:
    """The names Prometheus stores for one parsed family (the parser strips suffixes)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
    }.get(family.type, ("",))
    return {family.name + suffix for suffix in suffixes}


def scrape_of(text: str) -> Scrape:
    declared: set[str] = set()
    with_values: set[str] = set()
    for family in text_string_to_metric_families(text):
        declared |= series_names(family)
        with_values |= {sample.name for sample in family.samples}
    return Scrape(frozenset(declared), frozenset(with_values))


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    async with receiver() as running:
        yield running


@pytest.fixture
def files(tmp_path: Path, hook: Receiver) -> Iterator[tuple[Path, devcerts.Authority]]:
    ca = devcerts.mint_ca("example.org")  # the server uses the real clock: so do these
    (tmp_path / "ca.pem").write_bytes(devcerts.pem(ca.certificate))
    (tmp_path / "secret").write_bytes(SECRET)
    policy = POLICY.format(hook=hook.url, secret=tmp_path / "secret")
    (tmp_path / "policy.yaml").write_text(policy)
    yield tmp_path, ca


@pytest.fixture
async def live(
    files: tuple[Path, devcerts.Authority],
    own_redis: RedisServer,  # noqa: F811
) -> AsyncIterator[tuple[RunningServer, devcerts.Authority, RedisServer]]:
    directory, ca = files
    settings = Settings(
        policy=str(directory / "policy.yaml"),
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        trust_bundles={"example.org": str(directory / "ca.pem")},
        audit_log=str(directory / "audit.jsonl"),
        store=own_redis.url,
        reload_interval=0,
    )
    running = await start_server(settings)
    yield running, ca, own_redis
    await running.stop(1.0)


async def test_every_metric_used_is_one_a_live_server_exports(
    live: tuple[RunningServer, devcerts.Authority, RedisServer], hook: Receiver, tmp_path: Path
) -> None:
    running, ca, redis = live
    port = running.metrics_port
    assert port is not None and running.reloader is not None
    good, _ = devcerts.mint_svid(ca, FRONTEND)
    forged, _ = devcerts.mint_svid(devcerts.mint_ca("example.org"), FRONTEND)
    release, _ = devcerts.mint_svid(ca, RELEASE)
    publish = request_for(
        RELEASE, release, method="POST", path="/v1/releases/7",
        headers={"content-type": "application/json"}, body=b'{"tag":"v7"}',
    )  # fmt: skip
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        seen = [
            outcome(await check(channel, r))
            for r in (
                request_for(FRONTEND, good),
                request_for(FRONTEND, good, path="/v1/orders/13"),  # dry-run deny
                request_for(FRONTEND, forged),  # identity failure
                publish,  # a pending approval: a notification
            )
        ]
    assert seen == ["allow", "allow", "certificate_invalid", "approval_required"]
    await hook.wait_for(1)

    async def notified() -> bool:
        return (
            "authz_notifications_total"
            in scrape_of((await http_get(port, "/metrics"))[1]).with_values
        )

    await eventually(notified, "the notification is counted")
    (tmp_path / "policy.yaml").write_text("version: 1\nrules: [")  # a rejected reload
    await running.reloader.check(force=True)
    redis.kill()  # a store outage, seen by the readiness probe's ping
    assert (await http_get(port, "/readyz"))[0] == 503
    running.audit.flush()

    status, text = await http_get(port, "/metrics")
    assert status == 200
    scrape = scrape_of(text)
    recorded = {r["record"] for r in rules() if "record" in r}
    used = used_metrics()
    unknown = {
        name: where
        for name, where in used.items()
        if name not in scrape.declared | recorded | PROMETHEUS_SERIES
    }
    assert unknown == {}, "used but not exported by the server"
    without_values = sorted(n for n in used if n in scrape.declared and n not in scrape.with_values)
    assert without_values == sorted(WITHOUT_VALUES), "update WITHOUT_VALUES"


async def test_suffixes_are_the_stored_series_names(
    live: tuple[RunningServer, devcerts.Authority, RedisServer],
) -> None:
    """Guard for `scrape_of`: a panel naming a counter without `_total` or a histogram by
    its bare name would select nothing in Prometheus; such names are not exported."""
    running, _, _ = live
    assert running.metrics_port is not None
    scrape = scrape_of((await http_get(running.metrics_port, "/metrics"))[1])
    assert {"authz_decisions_total", "authz_check_duration_seconds_bucket"} <= scrape.declared
    assert "authz_check_duration_seconds_count" in scrape.with_values
    for bare in ("authz_decisions", "authz_check_duration_seconds", "authz_store_errors"):
        assert bare not in scrape.declared
