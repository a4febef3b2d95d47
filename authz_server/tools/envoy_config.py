"""Render the shipped Envoy configs in `envoy/`, which are `string.Template` files.

One renderer for the demo, the e2e tests and anyone deploying by hand, so that what is
tested is what ships. Substitution is strict: a placeholder without a value is an error
rather than an Envoy config with a literal `${...}` in it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path

from authz_server.core.errors import ConfigError

__all__ = ["DEFAULTS", "placeholders", "render_envoy_config", "shipped_configs"]

#: Values that are the same in almost every deployment; anything else must be given.
DEFAULTS: Mapping[str, str] = {
    "LISTEN_ADDRESS": "0.0.0.0",  # noqa: S104 — a proxy listens on all interfaces by design
    "TRUST_DOMAIN": "example.org",
    "AUTHZ_HOST": "127.0.0.1",
    "BACKEND_HOST": "127.0.0.1",
}


def render_envoy_config(template_path: Path | str, **values: object) -> str:
    """Fill a template's `${NAME}` placeholders from `values` over `DEFAULTS`.

    Raises `ConfigError` naming the template and every placeholder without a value, or
    the place of a `$` that is not a placeholder (write `$$` for a literal one).
    """
    text = Path(template_path).read_text(encoding="utf-8")
    merged = {**DEFAULTS, **{name: str(value) for name, value in values.items()}}
    template = string.Template(text)
    missing = sorted(set(template.get_identifiers()) - set(merged))
    if missing:
        names = ", ".join(f"${{{name}}}" for name in missing)
        raise ConfigError(f"Envoy template {template_path}: no value for {names} (give each one)")
    try:
        return template.substitute(merged)
    except ValueError as exc:  # "Invalid placeholder in string: line 3, col 7"
        raise ConfigError(f"Envoy template {template_path}: {exc} (write $$ for a '$')") from None


def placeholders(template_path: Path | str) -> set[str]:
    """The placeholder names a template uses, so a caller can check it passes them all."""
    text = Path(template_path).read_text(encoding="utf-8")
    return set(string.Template(text).get_identifiers())


def shipped_configs(root: Path | None = None) -> list[Path]:
    """The Envoy templates in the source checkout's `envoy/` directory (empty if absent)."""
    envoy_dir = (root or Path(__file__).resolve().parents[2]) / "envoy"
    return sorted(envoy_dir.glob("*.yaml"))


def with_trusted_ca(config: str, ca: Path | str) -> str:
    """Swap the listener's SPIFFE validator for Envoy's default one with a `trusted_ca` file.

    With one trust domain's CA this is a legitimate single-domain shape, and the only one in
    Envoy 1.40 where client certificates are really optional (the SPIFFE validator demands
    one whatever `require_client_certificate` says, envoyproxy/envoy#26412), so a caller
    without a certificate reaches authz-server and gets 401 `no_identity`. With several CAs
    pooled in one file it is the misconfiguration docs/concepts/identity.md#verification warns
    about; the server still verifies each chain against its own trust domain's bundle.
    """
    import yaml  # the renderer itself needs no YAML parser

    document = yaml.safe_load(config)
    for listener in document["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            socket = chain.get("transport_socket")
            if not socket:
                continue
            tls = socket["typed_config"]["common_tls_context"]
            tls["validation_context"] = {"trusted_ca": {"filename": str(ca)}}
    return str(yaml.safe_dump(document, sort_keys=False))
