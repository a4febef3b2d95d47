"""`authz-server render-envoy`: fill a shipped Envoy template from the command line.

The templates in `envoy/` were only fillable from Python; someone putting authz-server
in front of their own Envoy needs the same strict rendering without writing code. Every
placeholder is documented here once (meaning, kind, default), for `--list`, `--help`
and docs/deployment/envoy.md#shipped. Values are checked before substitution: a value is
pasted into YAML, so one with a newline, a brace or a comma could add or change settings,
not just fill one.
"""

from __future__ import annotations

import argparse
import re
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from authz_server.core.errors import ConfigError
from authz_server.tools.envoy_config import DEFAULTS, render_envoy_config, shipped_configs

__all__ = [
    "PLACEHOLDERS",
    "Placeholder",
    "add_commands",
    "describe_placeholders",
    "fill_template",
    "parse_assignments",
    "resolve_template",
]

Kind = Literal["port", "host", "path", "trust_domain", "text"]


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One `${NAME}` of the shipped templates: what it means and its default (None: required)."""

    name: str
    kind: Kind
    help: str

    @property
    def default(self) -> str | None:
        return DEFAULTS.get(self.name)


_DOCUMENTED = (
    Placeholder("LISTEN_ADDRESS", "host", "address Envoy's HTTPS listener binds to"),
    Placeholder("LISTEN_PORT", "port", "port of Envoy's HTTPS listener (clients connect here)"),
    Placeholder("ADMIN_PORT", "port", "port of Envoy's admin interface, bound to 127.0.0.1 only"),
    Placeholder(
        "CERT_DIR",
        "path",
        "directory with envoy.pem/envoy.key (Envoy's server certificate: a SPIFFE SVID "
        "with a DNS SAN for the host name clients connect to) and ca.pem (the trust "
        "bundle of TRUST_DOMAIN)",
    ),
    Placeholder("TRUST_DOMAIN", "trust_domain", "SPIFFE trust domain whose clients Envoy admits"),
    Placeholder("AUTHZ_HOST", "host", "host name or address of authz-server's Check listener"),
    Placeholder("AUTHZ_PORT", "port", "port of authz-server's Check listener (serve --listen)"),
    Placeholder("BACKEND_HOST", "host", "host name or address of the upstream (front proxy)"),
    Placeholder(
        "BACKEND_PORT",
        "port",
        "port of the upstream; the sidecar forwards to 127.0.0.1:BACKEND_PORT",
    ),
)
#: Every placeholder any shipped template uses, by name.
PLACEHOLDERS: Mapping[str, Placeholder] = {p.name: p for p in _DOCUMENTED}

# Values land in YAML flow mappings (`{address: X, port_value: Y}`): only characters that
# cannot end a scalar or start a structure there. No spaces, quotes, `,{}[]#&*!|>%` or
# newlines.
_SAFE = re.compile(r"[A-Za-z0-9._/@+~=-]+")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_TRUST_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")


def _check_port(value: str) -> str | None:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        return "must be a port number 1-65535"
    return None


def _check_host(value: str) -> str | None:
    return None if _HOST.fullmatch(value) else "must be a host name or IPv4 address"


def _check_trust_domain(value: str) -> str | None:
    if _TRUST_DOMAIN.fullmatch(value):
        return None
    return "must be a trust domain: lower-case letters, digits, '.', '-', '_'"


def _check_safe(value: str) -> str | None:
    if _SAFE.fullmatch(value):
        return None
    return "may only contain letters, digits and . _ / @ + ~ = - (no spaces or YAML syntax)"


_CHECKS: dict[Kind, Callable[[str], str | None]] = {
    "port": _check_port,
    "host": _check_host,
    "trust_domain": _check_trust_domain,
    "path": _check_safe,
    "text": _check_safe,
}


def _placeholder(name: str) -> Placeholder:
    """The documentation of `name`; a user's own template may use undocumented names."""
    return PLACEHOLDERS.get(name) or Placeholder(name, "text", "(not a shipped placeholder)")


def resolve_template(spec: str) -> Path:
    """A template file path, or the name of a shipped one (`front-proxy`, `sidecar.yaml`)."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = {p.stem: p for p in shipped_configs()}
    found = shipped.get(spec.removesuffix(".yaml"))
    if found is not None and "/" not in spec:
        return found
    names = ", ".join(sorted(shipped)) or "none: not a source checkout"
    raise ConfigError(f"template {spec!r}: no such file, nor a shipped template ({names})")


def template_placeholders(template: Path) -> list[str]:
    """The placeholder names `template` uses, in order of first use."""
    try:
        text = template.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read template {str(template)!r}: {exc}") from exc
    parsed = string.Template(text)
    if not parsed.is_valid():
        raise ConfigError(
            f"template {str(template)!r} has a '$' that is not ${{NAME}} (write '$$' for '$')"
        )
    return list(dict.fromkeys(parsed.get_identifiers()))


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """`NAME=VALUE` strings as a mapping; a malformed or repeated one is an error."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r} must be NAME=VALUE")
        if name in values:
            raise ConfigError(f"--set {name} given twice")
        values[name] = value.strip()
    return values


def fill_template(template: Path, values: Mapping[str, str]) -> str:
    """The rendered config; ConfigError naming any unknown, missing or unsafe value."""
    names = template_placeholders(template)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"{template.name} has no placeholder {', '.join(unknown)} (it uses: {', '.join(names)})"
        )
    missing = [n for n in names if n not in values and _placeholder(n).default is None]
    if missing:
        sets = " ".join(f"--set {n}=..." for n in missing)
        raise ConfigError(f"{template.name} needs a value for {', '.join(missing)}: {sets}")
    for name, value in values.items():
        problem = _CHECKS[_placeholder(name).kind](value)
        if problem is not None:
            raise ConfigError(f"--set {name}={value!r}: {name} {problem}")
    return render_envoy_config(template, **values)


def describe_placeholders(names: Sequence[str]) -> str:
    """One line per placeholder: name, default (or 'required') and meaning."""
    width = max((len(n) for n in names), default=0)
    lines = []
    for name in names:
        p = _placeholder(name)
        default = "required" if p.default is None else f"default {p.default}"
        lines.append(f"{name:<{width}}  {default:<18}  {p.help}")
    return "\n".join(lines)


def _render(args: argparse.Namespace) -> int:
    template = resolve_template(args.template)
    if args.list:
        print(describe_placeholders(template_placeholders(template)))
        return 0
    config = fill_template(template, parse_assignments(args.set))
    if args.out is None:
        sys.stdout.write(config)
        return 0
    try:
        Path(args.out).write_text(config, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--out {args.out!r}: {exc.strerror or exc}") from exc
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


_EPILOG = f"""\
placeholders of the shipped templates (envoy/front-proxy.yaml, envoy/sidecar.yaml):
{describe_placeholders(list(PLACEHOLDERS))}

Values are checked before they are pasted into the YAML (ports are numbers, hosts host
names or IPv4 addresses, paths without spaces). Check the result with
`authz-server lint-envoy FILE --policy POLICY` and `envoy --mode validate -c FILE`.
"""


def add_commands(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Register `render-envoy` on the CLI's subparsers."""
    parser = commands.add_parser(
        "render-envoy",
        help="fill an Envoy template's ${NAME} placeholders",
        description="Render an Envoy config template (a file, or the shipped 'front-proxy' "
        "or 'sidecar') to stdout or --out. Unknown names and missing required values are "
        "errors; the rest take their defaults.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("template", metavar="TEMPLATE", help="template file or shipped name")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a placeholder's value (repeatable)",
    )
    parser.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--list", action="store_true", help="list the template's placeholders and defaults"
    )
    return {"render-envoy": _render}
