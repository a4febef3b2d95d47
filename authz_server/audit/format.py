"""What an audit record says and how it is written: fields, canonical JSON, chain hash.

`audit.AuditLog` writes records in this format and `audit_verify` checks them; both take
it from here, so the writer and the verifier cannot disagree about what a hash covers.
A record's hash is sha256 over its canonical JSON without `hash` (`json.dumps` with sorted
keys, compact separators, ASCII only); the line written is that text with `hash`
appended last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from authz_server.core.decision import Decision, Reason
from authz_server.core.request import RequestView
from authz_server.state.fingerprint import body_digest
from authz_server.telemetry.attributes import TraceIds

__all__ = [
    "GENESIS",
    "MARKER",
    "audit_record",
    "canonical_bytes",
    "canonical_json",
    "chain_hash",
    "format_time",
]

#: The `prev` of a chain's first record.
GENESIS = "0" * 64
#: The `type` of chain markers (restart, rotate, gap).
MARKER = "chain"


def audit_record(
    decision: Decision,
    view: RequestView | None,
    *,
    policy_version: str,
    latency_us: int,
    api: str | None = None,
    trace: TraceIds | None = None,
) -> dict[str, Any]:
    """The fields of docs/operations/audit.md#records for one decision; never the body or
    credentials.

    `api` names the API that asked when it is not Envoy's Check (`"authzen"`); such a
    record also names the caller that vouched for the principal (`vouched_by`), which
    replay needs to decide it again. `trace` is the sampled span of the Check, so that the
    record can be found in the trace backend (`trace_id`, `span_id`).
    """
    record: dict[str, Any] = {
        "time": format_time(decision.at),
        "decision_id": decision.decision_id,
        "request_id": view.request_id if view else "",
        "principal": decision.principal,
        "identity_source": decision.identity_source,
        "method": view.method if view else None,
        "host": view.host if view else None,
        "path": view.path if view else None,
        "rule": decision.rule,
        "decision": "allow" if decision.allowed else "deny",
        "reason": _REASON_TEXT[decision.reason],
        "status": 200 if decision.allowed or decision.dry_run else decision.http_status,
        "dry_run": decision.dry_run,
        "policy_version": policy_version,
        "latency_us": latency_us,
        "body_digest": body_digest(view.body)
        if view is not None and view.body is not None
        else None,
        "approval_id": decision.approval_id,
        "approver": decision.approver,
    }
    # Only when the identity phase noted something (an ignored, forged XFCC header).
    if decision.identity_note:
        record["identity_note"] = decision.identity_note
    # In dry run the record is the would-be deny; name the rule that really granted.
    if decision.dry_run:
        record["enforced_rule"] = decision.enforced_rule
    if api:
        record["api"] = api
    if view is not None and view.vouched_by:
        record["vouched_by"] = view.vouched_by
    if trace is not None:
        record["trace_id"], record["span_id"] = trace.trace_id, trace.span_id
    return record


#: A reason's text: a dict lookup, where an enum's `.value` is a property call.
_REASON_TEXT: dict[Reason, str] = {reason: reason.value for reason in Reason}


def _no_default(value: object) -> object:
    raise TypeError(f"audit record value of type {type(value).__name__} is not JSON")


def _canonical_encoder() -> Callable[[dict[str, Any]], str]:
    """`json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`.

    The same text, from one encoder built once: `json.dumps` with arguments builds a new
    encoder on every call, and that was a third of an audit record's cost.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode
    encode = make(
        None,  # no cycle check: records are flat
        _no_default,
        json.encoder.encode_basestring_ascii,
        None,  # no indent
        ":",
        ",",
        True,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan, as json.dumps
    )
    return lambda record: "".join(encode(record, 0))


_json_canonical = _canonical_encoder()

#: Value types orjson writes exactly as `json.dumps` does when the result is ASCII. Floats
#: are not among them (orjson writes 1e16 where json writes 1e+16, null for NaN).
_ORJSON_SAFE = frozenset({str, int, bool, type(None)})
_SORTED = orjson.OPT_SORT_KEYS


def canonical_bytes(record: dict[str, Any]) -> bytes:
    """The canonical text of a record, ASCII-encoded: sorted keys, compact separators.

    Exactly `json.dumps(record, sort_keys=True, separators=(",", ":"))`, which defines it.
    A decision record is flat and ASCII almost always; orjson writes that in a fifth of the
    time, and anything else (non-ASCII text, DEL, lone surrogates, floats, nested values,
    integers past 64 bits) takes the `json` path.
    """
    if _ORJSON_SAFE.issuperset(map(type, record.values())):
        try:
            text = orjson.dumps(record, option=_SORTED)
        except orjson.JSONEncodeError:  # a lone surrogate, an integer past 64 bits
            pass
        else:
            if text.isascii() and b"\x7f" not in text:  # json escapes DEL, orjson does not
                return text
    return _json_canonical(record).encode("ascii")


def canonical_json(record: dict[str, Any]) -> str:
    """`canonical_bytes` as text."""
    return canonical_bytes(record).decode("ascii")


def chain_hash(record: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON; the caller leaves `hash` out."""
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def _time_format() -> Callable[[float], str]:
    """`datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")`, in a third of
    the time: the date and time of day are formatted once per second."""
    # The last second formatted and its text without the offset, swapped as one tuple so
    # that a thread never reads one second's number with another's text.
    last: list[tuple[int, str]] = [(-1, "")]

    def format_time(at: float) -> str:
        second = int(at)
        # Rounded as datetime rounds (half to even, carried into the second).
        micro = round((at - second) * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        formatted = last[0]
        if formatted[0] != second:
            text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:-6]
            last[0] = formatted = (second, text)
        return f"{formatted[1]}.{micro:06d}+00:00"

    return format_time


format_time = _time_format()
