"""Decision → CheckResponse (SPEC §7): the one place that builds Envoy's response protobuf."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import struct_pb2

from authz_server.decision import Decision

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


def render_check_response(decision: Decision, client_headers: Iterable[str] = ()) -> Any:
    """Render `decision`; on allow, strip every `x-authz-*` header the client sent."""
    if decision.enforced_allow:
        return _ok_response(decision, client_headers)
    return _denied_response(decision)


def _ok_response(decision: Decision, client_headers: Iterable[str]) -> Any:
    # Ours are overwritten, not appended: a forged value never survives next to ours;
    # one we have no value for is removed instead.
    values = {
        HEADER_DECISION_ID: decision.decision_id,
        HEADER_PRINCIPAL: decision.principal,
        HEADER_RULE: decision.rule,
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
            "rule": decision.rule or "",
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
