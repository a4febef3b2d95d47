"""Real Envoy for phase C: render a `bench/envoy_*.yaml` variant, start it, read /stats.

Templates are filled with `envoy_config.render_envoy_config` (strict placeholders), then
loaded and dumped again with PyYAML so that the anchors the templates use to share the
client clusters reach Envoy expanded. Envoy runs as `stack.start_envoy` runs it for the
demo and the e2e tests (`--concurrency 1`).
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from authz_server.tools import stack
from authz_server.tools.envoy_config import render_envoy_config
from bench.envoy_rbac import rbac_policies
from bench.policies import RuleSpec

__all__ = ["BenchEnvoy", "render_variant", "start_bench_envoy"]

HERE = Path(__file__).resolve().parent
TEMPLATES = {
    "noauthz": HERE / "envoy_noauthz.yaml",
    "rbac": HERE / "envoy_rbac.yaml",
    "ext_authz": HERE / "envoy_ext_authz.yaml",
}
_STATS_FILTER = r"^(http\.bench_(edge|front)\.|cluster\.authz\.upstream_rq)"
_COUNTER = re.compile(r"^([\w.\-]+): (\d+)$")


def render_variant(
    variant: str,
    *,
    cert_dir: Path,
    edge_port: int,
    front_port: int,
    admin_port: int,
    authz_port: int | None = None,
    rules: Sequence[RuleSpec] = (),
    max_streams: int = 16,
) -> str:
    """The Envoy config for `variant` ("noauthz", "rbac", "ext_authz"), ready to run."""
    values: dict[str, object] = {
        "EDGE_PORT": edge_port,
        "FRONT_PORT": front_port,
        "ADMIN_PORT": admin_port,
        "CERT_DIR": cert_dir,
    }
    if variant == "ext_authz":
        if authz_port is None:
            raise ValueError("ext_authz needs authz_port")
        values["AUTHZ_PORT"] = authz_port
        values["MAX_STREAMS"] = max_streams
    if variant == "rbac":
        deny, allow = rbac_policies(rules)
        values["RBAC_DENY"] = json.dumps(deny)
        values["RBAC_ALLOW"] = json.dumps(allow)
    text = render_envoy_config(TEMPLATES[variant], **values)
    return str(yaml.safe_dump(yaml.safe_load(text), sort_keys=False))


@dataclass
class BenchEnvoy:
    """One running Envoy variant: h2load targets `edge_port`."""

    name: str
    service: stack.Service
    edge_port: int
    admin_port: int

    @property
    def pid(self) -> int:
        return self.service.process.pid

    def counters(self) -> dict[str, int]:
        """The edge, front and authz-cluster counters from the admin /stats."""
        query = urllib.parse.urlencode({"filter": _STATS_FILTER})
        url = f"http://{stack.LOOPBACK}:{self.admin_port}/stats?{query}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode("utf-8")
        found: dict[str, int] = {}
        for line in text.splitlines():
            if (match := _COUNTER.match(line)) is not None:
                found[match.group(1)] = int(match.group(2))
        return found

    def stop(self) -> None:
        self.service.stop()


def counter_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """After minus before, for every counter that moved."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def start_bench_envoy(
    name: str,
    variant: str,
    workdir: Path,
    *,
    cert_dir: Path,
    authz_port: int | None = None,
    rules: Sequence[RuleSpec] = (),
    max_streams: int = 16,
    timeout: float = 60.0,
) -> BenchEnvoy:
    """Render and start `variant` on free loopback ports; return once /ready answers."""
    edge, front, admin = stack.free_port(), stack.free_port(), stack.free_port()
    config = render_variant(
        variant,
        cert_dir=cert_dir,
        edge_port=edge,
        front_port=front,
        admin_port=admin,
        authz_port=authz_port,
        rules=rules,
        max_streams=max_streams,
    )
    service = stack.start_envoy(workdir, name, config, listen_port=edge, timeout=timeout)
    return BenchEnvoy(name, service, edge, admin)
