"""The parent of a Check's span: W3C trace context or B3, from two carriers.

Envoy with tracing on propagates its ext_authz span in the gRPC call's initial metadata;
without it, the client's own headers (in the CheckRequest) may still carry a context.
Carriers are tried in that order, and in each W3C (`traceparent`, `tracestate`) before B3
(the `b3` single header, then the `x-b3-*` headers). The first valid context wins.

Every value here comes from the network, so parsing is strict and silent: a malformed,
oversized, all-zero, upper-case, repeated or otherwise forged value is ignored (never
logged: a client could flood the log) and the next carrier is tried. Nothing raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

__all__ = [
    "Carrier",
    "extract_parent",
    "parent_context",
    "parse_b3_multi",
    "parse_b3_single",
    "parse_traceparent",
    "parse_tracestate",
]

#: A carrier: header name (lower case) → value.
Carrier = Mapping[str, str]

_KEYS = frozenset(
    {
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-b3-flags",
    }
)
#: Longer values are not a context anyone sent in good faith.
_MAX_TRACEPARENT = 512
_MAX_TRACESTATE = 8192
_MAX_TRACESTATE_MEMBERS = 32
_OWS = " \t"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# W3C tracestate: simple keys, or tenant@system multi-tenant keys; printable values.
_TS_KEY = re.compile(
    r"[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}"
)
_TS_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX16_OR_32 = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


def parse_traceparent(value: str, tracestate: str | None = None) -> SpanContext | None:
    """A remote SpanContext from a W3C `traceparent` (and `tracestate`), or None."""
    if len(value) > _MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(_OWS))
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    # Version ff is forbidden; version 00 has exactly four fields. A later version may
    # append fields, which this version of the format does not read.
    if version == "ff" or (version == "00" and rest is not None):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    flags = TraceFlags(int(flags_hex, 16) & TraceFlags.SAMPLED)
    state = parse_tracestate(tracestate) if tracestate else TraceState()
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags, trace_state=state)


def parse_tracestate(value: str) -> TraceState:
    """A W3C `tracestate`; empty when any member is invalid (the spec says drop it whole)."""
    if len(value) > _MAX_TRACESTATE:
        return TraceState()
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for member in value.split(","):
        member = member.strip(_OWS)
        if not member:
            continue
        key, eq, val = member.partition("=")
        if (
            not eq
            or key in seen
            or _TS_KEY.fullmatch(key) is None
            or _TS_VALUE.fullmatch(val) is None
            or len(pairs) == _MAX_TRACESTATE_MEMBERS
        ):
            return TraceState()
        seen.add(key)
        pairs.append((key, val))
    return TraceState(pairs)


def parse_b3_single(value: str) -> SpanContext | None:
    """`b3: {trace id}-{span id}[-{sampling state}[-{parent span id}]]`, or None.

    A lone sampling state (`b3: 0`) carries no trace to join, so it is no parent.
    """
    parts = value.strip(_OWS).split("-")
    if not 2 <= len(parts) <= 4:
        return None
    trace_hex, span_hex = parts[0], parts[1]
    state = parts[2] if len(parts) > 2 else "0"
    if state not in ("0", "1", "d"):
        return None
    if len(parts) == 4 and _HEX16.fullmatch(parts[3]) is None:
        return None
    return _b3_context(trace_hex, span_hex, state != "0")


def parse_b3_multi(carrier: Carrier) -> SpanContext | None:
    """`x-b3-traceid` and `x-b3-spanid` (with `x-b3-sampled`/`x-b3-flags`), or None.

    Without an explicit sampled ("1", "true") or debug flag the parent is not sampled.
    """
    trace_hex, span_hex = carrier.get("x-b3-traceid"), carrier.get("x-b3-spanid")
    if trace_hex is None or span_hex is None:
        return None
    sampled = carrier.get("x-b3-sampled", "").strip(_OWS)
    flags = carrier.get("x-b3-flags", "").strip(_OWS)
    if sampled not in ("", "0", "1", "true", "false") or flags not in ("", "0", "1"):
        return None
    return _b3_context(
        trace_hex.strip(_OWS), span_hex.strip(_OWS), "1" in (sampled, flags) or sampled == "true"
    )


def _b3_context(trace_hex: str, span_hex: str, sampled: bool) -> SpanContext | None:
    if _HEX16_OR_32.fullmatch(trace_hex) is None or _HEX16.fullmatch(span_hex) is None:
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)  # 64-bit ids: zero-padded
    if trace_id == 0 or span_id == 0:
        return None
    flags = _SAMPLED if sampled else _NOT_SAMPLED
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


def _from_carrier(carrier: Carrier) -> SpanContext | None:
    traceparent = carrier.get("traceparent")
    if traceparent is not None:
        found = parse_traceparent(traceparent, carrier.get("tracestate"))
        if found is not None:
            return found
    b3 = carrier.get("b3")
    if b3 is not None:
        found = parse_b3_single(b3)
        if found is not None:
            return found
    return parse_b3_multi(carrier)


def metadata_carrier(metadata: Iterable[Any]) -> dict[str, str]:
    """The trace keys of gRPC invocation metadata (pairs, or grpc's `_Metadatum`).

    A key sent twice with different values is dropped (which parent would be meant?),
    except `tracestate`, whose repeats join like HTTP header lines.
    """
    carrier: dict[str, str] = {}
    conflicting: set[str] = set()
    for item in metadata:
        key, value = item[0], item[1]
        if not isinstance(key, str) or not isinstance(value, str):
            continue  # binary (-bin) metadata carries no text context
        key = key.lower()
        if key not in _KEYS:
            continue
        if key in carrier and carrier[key] != value:
            if key == "tracestate":
                carrier[key] = f"{carrier[key]},{value}"
                continue
            conflicting.add(key)
        carrier.setdefault(key, value)
    for key in conflicting:
        del carrier[key]
    return carrier


def extract_parent(
    metadata: Iterable[Any] | None = None, headers: Carrier | None = None
) -> SpanContext | None:
    """The first valid remote SpanContext: gRPC metadata first, then HTTP headers."""
    found = None
    if metadata:
        try:
            found = _from_carrier(metadata_carrier(metadata))
        except Exception:  # a carrier of an unexpected shape is no parent, never an error
            found = None
    if found is None and headers:
        try:
            found = _from_carrier(headers)
        except Exception:
            found = None
    return found


def parent_context(
    metadata: Iterable[Any] | None = None, headers: Carrier | None = None
) -> Context | None:
    """`extract_parent` as an OpenTelemetry Context to start a span in, or None."""
    found = extract_parent(metadata, headers)
    return None if found is None else set_span_in_context(NonRecordingSpan(found))
