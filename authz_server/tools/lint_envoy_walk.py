"""Reading an Envoy config the way `lint-envoy` needs: fields by either spelling, typed
configs (TypedStruct unwrapped), the inbound HTTP connection managers, and `Finding`, what
every check reports. The checks themselves are `lint_envoy.py` (listeners, filters, routes)
and `lint_envoy_policy.py` (routes that must send the body).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz_server.core.errors import ConfigError
from authz_server.tools.lint_envoy_codes import CODES, Severity

__all__ = [
    "EXT_AUTHZ_PER_ROUTE_TYPE",
    "HCM_TYPE",
    "ROUTER_TYPE",
    "Finding",
    "Hcm",
    "field",
    "finding",
    "http_connection_managers",
    "load_envoy_file",
    "maps",
    "typed",
]

HCM_TYPE = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXT_AUTHZ_PER_ROUTE_TYPE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
ROUTER_TYPE = "envoy.extensions.filters.http.router.v3.Router"
_TYPED_STRUCTS = {"udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One missing or unsafe setting, located by a dotted path into the config."""

    code: str
    path_in_config: str
    message: str
    fix: str
    severity: Severity = "error"


def finding(code: str, path: str, found: str) -> Finding:
    rule = CODES[code]
    return Finding(code, path, f"{found}: {rule.why}.", rule.fix, rule.severity)


def field(m: Mapping[str, Any], name: str) -> Any:
    """A field by its proto name or its JSON (lowerCamel) name; Envoy accepts both."""
    if name in m:
        return m[name]
    head, *rest = name.split("_")
    return m.get(head + "".join(p.title() for p in rest))


def maps(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def typed(entry: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """(@type without its prefix, body) of an entry's typed_config; TypedStruct unwrapped."""
    tc = field(entry, "typed_config")
    if not isinstance(tc, Mapping):
        return "", {}
    type_name = str(tc.get("@type", "")).rsplit("/", 1)[-1]
    if type_name in _TYPED_STRUCTS:
        value = tc.get("value")
        type_url = str(field(tc, "type_url") or "")
        return type_url.rsplit("/", 1)[-1], value if isinstance(value, Mapping) else {}
    return type_name, tc


@dataclass(frozen=True, slots=True)
class Hcm:
    path: str
    who: str  # "listener 'NAME': ", the prefix of every message about it
    config: Mapping[str, Any]


def listeners(config: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Listeners of a bootstrap (static_resources) or of an LDS response file (resources)."""
    static = field(config, "static_resources")
    if isinstance(static, Mapping):
        for i, lst in enumerate(maps(static.get("listeners"))):
            yield f"static_resources.listeners[{i}]", lst
    for i, res in enumerate(maps(config.get("resources"))):
        if str(res.get("@type", "")).endswith("envoy.config.listener.v3.Listener"):
            yield f"resources[{i}]", res


def http_connection_managers(config: Mapping[str, Any]) -> list[Hcm]:
    found = []
    for lpath, listener in listeners(config):
        if field(listener, "traffic_direction") == "OUTBOUND":
            continue  # a sidecar's egress: the local app calling out, judged at the far side
        name = str(listener.get("name", lpath))
        chains = [
            (f"{lpath}.filter_chains[{i}]", c)
            for i, c in enumerate(maps(field(listener, "filter_chains")))
        ]
        default = field(listener, "default_filter_chain")
        if isinstance(default, Mapping):
            chains.append((f"{lpath}.default_filter_chain", default))
        for cpath, chain in chains:
            for i, flt in enumerate(maps(chain.get("filters"))):
                type_name, body = typed(flt)
                if type_name == HCM_TYPE:
                    found.append(
                        Hcm(f"{cpath}.filters[{i}].typed_config", f"listener {name!r}: ", body)
                    )
    return found


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_envoy_file(path: str | Path) -> Mapping[str, Any]:
    """Parse YAML or JSON; `${NAME}` template placeholders become harmless strings."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        text = _PLACEHOLDER.sub(lambda m: f"placeholder-{m.group(1)}", text)
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read Envoy config {str(path)!r}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"Envoy config {str(path)!r} is not a mapping")
    return data
