"""Decision → CheckResponse (docs/concepts/response-contract.md): the one place that builds Envoy's
response protobuf.

`render_check_response` builds the message. The Check path uses `render_response_bytes`,
which serves the same bytes from a template: every decision with the same (allowed,
reason, rule, principal, dry run, enforced rule) renders the same response but for its decision id,
which is always 32 hex characters, so the template is the serialized response of a
placeholder id, and rendering copies it with the id written over the placeholder's
places (the lengths, and so every protobuf length prefix, stay the same). Building and
serializing the message costs ~10 µs per Check; the copy ~1 µs. Decisions the template
does not cover (an approval id, a retry-after, forged `x-authz-*` headers to remove, an
id of another shape) are built afresh. The template table is bounded: a principal is
caller-chosen on some denies, so it is cleared when full rather than grown.

A traced Check's ids (`trace_id`, `span_id`) join the dynamic metadata by appending a
serialized response that holds only them: protobuf merges a message field that occurs
twice, so the template serves traced Checks too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import struct_pb2

from authz_server.core.decision import Decision, Reason
from authz_server.telemetry.attributes import TraceIds

HEADER_PRINCIPAL = "x-authz-principal"
HEADER_RULE = "x-authz-rule"
HEADER_DECISION_ID = "x-authz-decision-id"
HEADER_APPROVAL_ID = "x-authz-approval-id"
OWN_HEADER_PREFIX = "x-authz-"
METADATA_NAMESPACE = "authz_server"

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


def deny_body(decision: Decision) -> str:
    """The JSON body a denied client sees: stable keys, no internals."""
    body: dict[str, str | None] = {
        "decision": "deny",
        "reason": decision.reason.value,
        "rule": decision.rule,
        "decision_id": decision.decision_id,
    }
    if decision.approval_id:
        body["approval_id"] = decision.approval_id
    return json.dumps(body, separators=(",", ":"))


def render_check_response(
    decision: Decision, client_headers: Iterable[str] = (), trace: TraceIds | None = None
) -> Any:
    """Render `decision`; on allow, strip every `x-authz-*` header the client sent.

    Allow and deny carry the same dynamic metadata, which Envoy's ext_authz filter sets
    for both under its own name (`envoy.filters.http.ext_authz`) for the access log:
    principal, rule, decision_id, reason, dry_run, and with `trace` trace_id and span_id.
    """
    if decision.enforced_allow:
        response = _ok_response(decision, client_headers)
    else:
        response = _denied_response(decision)
    if trace is not None:
        response.dynamic_metadata.update(trace.fields())
    return response


def _ok_response(decision: Decision, client_headers: Iterable[str]) -> Any:
    # Ours are overwritten, not appended: a forged value never survives next to ours;
    # one we have no value for is removed instead. In dry run the upstream learns the
    # rule that grants, never the would-be deny's (that is for the audit and metrics).
    rule = decision.enforced_rule if decision.dry_run else decision.rule
    values = {
        HEADER_DECISION_ID: decision.decision_id,
        HEADER_PRINCIPAL: decision.principal,
        HEADER_RULE: rule,
    }
    headers = [_header(name, value) for name, value in values.items() if value]
    ours = {name for name, value in values.items() if value}
    to_remove = sorted(
        name for name in client_headers if name.startswith(OWN_HEADER_PREFIX) and name not in ours
    )
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "principal": decision.principal or "",
            "rule": rule or "",
            "decision_id": decision.decision_id,
            "reason": decision.reason.value,
            "dry_run": decision.dry_run,
        }
    )
    return external_auth_pb2.CheckResponse(
        status={"code": 0},
        ok_response=external_auth_pb2.OkHttpResponse(headers=headers, headers_to_remove=to_remove),
        dynamic_metadata=metadata,
    )


def _denied_response(decision: Decision) -> Any:
    headers = [
        _header("content-type", "application/json"),
        _header(HEADER_DECISION_ID, decision.decision_id),
    ]
    if decision.retry_after is not None:
        headers.append(_header("retry-after", str(decision.retry_after)))
    if decision.approval_id:
        headers.append(_header(HEADER_APPROVAL_ID, decision.approval_id))
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "principal": decision.principal or "",
            "rule": decision.rule or "",
            "decision_id": decision.decision_id,
            "reason": decision.reason.value,
            "dry_run": decision.dry_run,
        }
    )
    return external_auth_pb2.CheckResponse(
        status={"code": decision.grpc_code, "message": decision.reason.value},
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status={"code": decision.http_status},
            headers=headers,
            body=deny_body(decision),
        ),
        dynamic_metadata=metadata,
    )


# --- templates ------------------------------------------------------------------------

#: Decision ids are `os.urandom(16).hex()`: 32 characters, JSON- and header-safe.
_ID_LENGTH = 32
#: Rendered in place of the id; a decision whose text contains it is never templated.
_PLACEHOLDER = "~" * _ID_LENGTH
#: Templates kept; cleared when full (a caller can vary the principal of its denies).
MAX_TEMPLATES = 4096

_TemplateKey = tuple[bool, Reason, str | None, str | None, bool, str | None]


class _Template:
    """A serialized response cut at each place the decision id goes."""

    __slots__ = ("_parts",)

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts

    def render(self, decision_id: bytes) -> bytes:
        return decision_id.join(self._parts)


_templates: dict[_TemplateKey, _Template | None] = {}


def render_response_bytes(
    decision: Decision, client_headers: Iterable[str] = (), trace: TraceIds | None = None
) -> bytes:
    """`render_check_response(decision, client_headers, trace)`, serialized; from a
    template when the decision allows one (see the module docstring)."""
    data = _untraced_bytes(decision, client_headers)
    if trace is not None:
        data += _trace_metadata(trace)
    return data


def _trace_metadata(trace: TraceIds) -> bytes:
    """A serialized CheckResponse with only `trace`'s ids as dynamic metadata: appended to
    another, it is parsed as that response with the two ids added to its metadata."""
    metadata = struct_pb2.Struct()
    metadata.update(trace.fields())
    data: bytes = external_auth_pb2.CheckResponse(dynamic_metadata=metadata).SerializeToString()
    return data


def _untraced_bytes(decision: Decision, client_headers: Iterable[str]) -> bytes:
    decision_id = decision.decision_id
    if (
        decision.approval_id is None
        and decision.retry_after is None
        and len(decision_id) == _ID_LENGTH
        and decision_id.isascii()
        and decision_id.isalnum()
        and not (decision.enforced_allow and _forged(client_headers))
    ):
        key = (
            decision.allowed,
            decision.reason,
            decision.rule,
            decision.principal,
            decision.dry_run,
            decision.enforced_rule,
        )
        template = _templates.get(key, _MISSING)
        if template is _MISSING:
            template = _templates[key] = _template(decision)
            if len(_templates) > MAX_TEMPLATES:
                _templates.clear()
        if template is not None:
            return template.render(decision_id.encode("ascii"))
    data: bytes = render_check_response(decision, client_headers).SerializeToString()
    return data


_MISSING = _Template([])


def _forged(client_headers: Iterable[str]) -> bool:
    """Did the client send any `x-authz-*` header (an allow must then remove some)?

    One search over the joined names, twice as fast as testing each name; a name with a
    newline inside can only cause a false alarm, which renders afresh (still correct).
    """
    return ("\n" + "\n".join(client_headers)).find(_FORGED_MARK) != -1


_FORGED_MARK = "\n" + OWN_HEADER_PREFIX


def _template(decision: Decision) -> _Template | None:
    """The template of `decision`, or None when its text contains the placeholder."""
    data = render_check_response(
        dataclasses.replace(decision, decision_id=_PLACEHOLDER)
    ).SerializeToString()
    parts = data.split(_PLACEHOLDER.encode("ascii"))
    # The id is in a header, the metadata and (denies) the body: any other count means
    # the placeholder also came from the decision's own text.
    expected = 3 if decision.enforced_allow else 4
    return _Template(parts) if len(parts) == expected else None
