"""`admin.approvals`: who is told about approval requests, and where humans decide them.

    admin:
      approvals:
        console_url: https://authz.example.org/console     # links <console_url>/approvals/<id>
        notify:
          - url: https://hooks.example.org/authz
            secret_file: /run/secrets/authz-notify          # HMAC key (`notify.signing`)
            format: json                                    # json (default) | slack
            events: [pending, approved, rejected, expired]  # default: all four
            name: ops-hook                                  # metric label; default host[:port]

`secret_file` is required for `json` (receivers must be able to reject forgeries) and
optional for `slack` (an incoming-webhook URL is its own secret). It must be an absolute
path; the file is read when an event is sent, not here, so `authz-server check` runs
without the secret and a rotated secret is used from the next event on. Names label the
`authz_notifications_total` metric and must be unique; the default never contains the
URL's path, which for Slack holds the webhook's secret. Part of `load.py`'s schema.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from authz_server.core.errors import quote
from authz_server.core.yaml_source import Fields, Map, Seq, Value
from authz_server.state.events import EventType

__all__ = ["ApprovalsSettings", "NotifyEndpoint", "compile_approvals"]

FORMATS = ("json", "slack")
EVENT_TYPES = tuple(t.value for t in EventType)
MAX_ENDPOINTS = 16
_APPROVALS = frozenset({"console_url", "notify"})
_ENDPOINT = frozenset({"url", "secret_file", "format", "events", "name"})


@dataclass(frozen=True, slots=True)
class NotifyEndpoint:
    name: str
    url: str
    format: str = "json"
    secret_file: str | None = None
    events: frozenset[str] = frozenset(EVENT_TYPES)


@dataclass(frozen=True, slots=True)
class ApprovalsSettings:
    #: Base URL of the approval console, without a trailing slash; None: no links.
    console_url: str | None = None
    notify: tuple[NotifyEndpoint, ...] = ()


def _http_url(text: str, what: str) -> str:
    """`text` if it is an absolute http(s) URL with a host and no fragment or user info."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {quote(text)} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} {quote(text, 40)} must not carry credentials")
    if parts.fragment:
        raise ValueError(f"{what} {quote(text)} must not have a #fragment")
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        raise ValueError(f"{what} {quote(text)}: the port is not a number") from None
    return text


def default_name(url: str) -> str:
    """host[:port] of `url`, never its path (Slack webhook paths are secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        ipaddress.IPv6Address(host)
        host = f"[{host}]"
    except ValueError:
        pass
    return host if parts.port is None else f"{host}:{parts.port}"


def compile_approvals(fields: Fields, value: Value) -> ApprovalsSettings | None:
    """`admin.approvals`; None after recording its issues."""
    node = fields.mapping(value, "admin.approvals", _APPROVALS)
    if node is None:
        return None
    before = len(fields.issues)
    console_url = None
    if "console_url" in node.entries:
        path = "admin.approvals.console_url"
        text = fields.string(node.entries["console_url"], path)
        if text is not None:
            try:
                console_url = _http_url(text, "console_url").rstrip("/")
            except ValueError as error:
                fields.issue(node.entries["console_url"].line, path, str(error))
            else:
                if urlsplit(text).query:
                    fields.issue(node.entries["console_url"].line, path, "no ?query please")
    endpoints: list[NotifyEndpoint] = []
    if "notify" in node.entries:
        endpoints = _endpoints(fields, node.entries["notify"])
    if len(fields.issues) != before:
        return None
    return ApprovalsSettings(console_url, tuple(endpoints))


def _endpoints(fields: Fields, value: Value) -> list[NotifyEndpoint]:
    path = "admin.approvals.notify"
    if not isinstance(value, Seq):
        fields.wrong_type(value, path, "a list of endpoints")
        return []
    if len(value.items) > MAX_ENDPOINTS:
        fields.issue(value.line, path, f"at most {MAX_ENDPOINTS} endpoints")
        return []
    endpoints: list[NotifyEndpoint] = []
    names: dict[str, int] = {}
    for index, item in enumerate(value.items):
        where = f"{path}[{index}]"
        endpoint = _endpoint(fields, item, where)
        if endpoint is None:
            continue
        if endpoint.name in names:
            fields.issue(
                item.line,
                f"{where}.name",
                f"name {quote(endpoint.name)} is already used by endpoint {names[endpoint.name]}"
                " (give each endpoint its own name)",
            )
            continue
        names[endpoint.name] = index
        endpoints.append(endpoint)
    return endpoints


def _endpoint(fields: Fields, value: Value, where: str) -> NotifyEndpoint | None:
    node = fields.mapping(value, where, _ENDPOINT)
    if node is None:
        return None
    before = len(fields.issues)
    entries = node.entries
    url = None
    if "url" not in entries:
        fields.issue(node.line, f"{where}.url", "required")
    elif (text := fields.string(entries["url"], f"{where}.url")) is not None:
        try:
            url = _http_url(text, "url")
        except ValueError as error:
            fields.issue(entries["url"].line, f"{where}.url", str(error))
    format_ = "json"
    if "format" in entries:
        format_ = fields.choice(entries["format"], f"{where}.format", FORMATS) or "json"
    secret_file = _secret_file(fields, node, where, format_)
    events = frozenset(EVENT_TYPES)
    if "events" in entries:
        listed = fields.compiled_list(
            entries["events"], f"{where}.events", _event_type, empty="name at least one event"
        )
        events = frozenset(event for _, event in listed or ())
    name = None
    if "name" in entries and (text := fields.string(entries["name"], f"{where}.name")) is not None:
        if not (0 < len(text) <= 64 and text.isprintable()):
            fields.issue(entries["name"].line, f"{where}.name", "1 to 64 printable characters")
        name = text
    if url is None or len(fields.issues) != before:
        return None
    return NotifyEndpoint(name or default_name(url), url, format_, secret_file, events)


def _secret_file(fields: Fields, node: Map, where: str, format_: str) -> str | None:
    entries = node.entries
    if "secret_file" not in entries:
        if format_ == "json":
            fields.issue(
                node.line,
                f"{where}.secret_file",
                "required for format json (receivers verify the signature with it)",
            )
        return None
    text = fields.string(entries["secret_file"], f"{where}.secret_file")
    if text is not None and not text.startswith("/"):
        fields.issue(
            entries["secret_file"].line, f"{where}.secret_file", "must be an absolute path"
        )
        return None
    return text


def _event_type(text: str) -> str:
    if text not in EVENT_TYPES:
        raise ValueError(f"unknown event {quote(text)} (expected one of: {', '.join(EVENT_TYPES)})")
    return text
