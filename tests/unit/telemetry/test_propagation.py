"""The parent of a Check's span: W3C then B3, gRPC metadata then HTTP headers; anything
malformed, oversized or forged is no parent, and nothing raises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import pytest
from opentelemetry import trace

from authz_server.telemetry.propagation import (
    extract_parent,
    metadata_carrier,
    parent_context,
    parse_tracestate,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
OTHER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_SPAN = "00f067aa0ba902b7"
TP = f"00-{TRACE}-{SPAN}-01"
TP_OTHER = f"00-{OTHER_TRACE}-{OTHER_SPAN}-01"

#: (trace id, span id, sampled) of the parent found, or None.
Found = tuple[str, str, bool] | None


def _found(metadata: Any = None, headers: Mapping[str, str] | None = None) -> Found:
    context = extract_parent(metadata, headers)
    if context is None:
        return None
    assert context.is_remote and context.is_valid
    return (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        context.trace_flags.sampled,
    )


W3C_CASES = [
    pytest.param(TP, (TRACE, SPAN, True), id="sampled"),
    pytest.param(f"00-{TRACE}-{SPAN}-00", (TRACE, SPAN, False), id="not-sampled"),
    pytest.param(f"00-{TRACE}-{SPAN}-03", (TRACE, SPAN, True), id="other-flag-bits"),
    pytest.param(f" \t{TP} ", (TRACE, SPAN, True), id="surrounding-whitespace"),
    pytest.param(f"01-{TRACE}-{SPAN}-01-future", (TRACE, SPAN, True), id="later-version-fields"),
    pytest.param(f"{TP}-extra", None, id="version-00-extra-field"),
    pytest.param(f"ff-{TRACE}-{SPAN}-01", None, id="version-ff"),
    pytest.param(f"00-{TRACE.upper()}-{SPAN}-01", None, id="upper-case"),
    pytest.param(f"00-{'0' * 32}-{SPAN}-01", None, id="zero-trace-id"),
    pytest.param(f"00-{TRACE}-{'0' * 16}-01", None, id="zero-span-id"),
    pytest.param(f"00-{TRACE[1:]}-{SPAN}-01", None, id="short-trace-id"),
    pytest.param(f"00-{TRACE}-{SPAN}0-01", None, id="long-span-id"),
    pytest.param(f"00-{TRACE[:-1]}g-{SPAN}-01", None, id="not-hex"),
    pytest.param(f"00-{TRACE}-{SPAN}", None, id="no-flags"),
    pytest.param(f"{TP},{TP_OTHER}", None, id="two-joined"),
    pytest.param(f"01-{TRACE}-{SPAN}-01-{'x' * 600}", None, id="oversized"),
    pytest.param("", None, id="empty"),
    pytest.param("00-\u0660af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01", None, id="unicode"),
]


@pytest.mark.parametrize(("value", "expected"), W3C_CASES)
def test_traceparent(value: str, expected: Found) -> None:
    assert _found(headers={"traceparent": value}) == expected
    assert _found([("traceparent", value)]) == expected


B3_SINGLE_CASES = [
    pytest.param(f"{TRACE}-{SPAN}-1", (TRACE, SPAN, True), id="sampled"),
    pytest.param(f"{TRACE}-{SPAN}-0", (TRACE, SPAN, False), id="not-sampled"),
    pytest.param(f"{TRACE}-{SPAN}-d", (TRACE, SPAN, True), id="debug"),
    pytest.param(f"{TRACE}-{SPAN}", (TRACE, SPAN, False), id="deferred"),
    pytest.param(f"{TRACE}-{SPAN}-1-{OTHER_SPAN}", (TRACE, SPAN, True), id="with-parent"),
    pytest.param(f"{OTHER_SPAN}-{SPAN}-1", ("0" * 16 + OTHER_SPAN, SPAN, True), id="64-bit"),
    pytest.param(f"{TRACE}-{SPAN}-1-xyz", None, id="bad-parent"),
    pytest.param(f"{TRACE}-{SPAN}-", None, id="empty-state"),
    pytest.param(f"{TRACE}-{SPAN}-yes", None, id="bad-state"),
    pytest.param(f"{TRACE}-{SPAN}-1-{OTHER_SPAN}-x", None, id="five-fields"),
    pytest.param(f"{TRACE.upper()}-{SPAN}-1", None, id="upper-case"),
    pytest.param(f"{'0' * 32}-{SPAN}-1", None, id="zero-trace-id"),
    pytest.param(f"{TRACE}-{'0' * 16}-1", None, id="zero-span-id"),
    pytest.param(f"{TRACE[:20]}-{SPAN}-1", None, id="trace-id-neither-64-nor-128-bit"),
    pytest.param("1", None, id="sampling-state-alone"),
    pytest.param("0", None, id="deny-alone"),
    pytest.param("", None, id="empty"),
]


@pytest.mark.parametrize(("value", "expected"), B3_SINGLE_CASES)
def test_b3_single(value: str, expected: Found) -> None:
    assert _found(headers={"b3": value}) == expected
    assert _found([("b3", value)]) == expected


B3_MULTI_CASES = [
    pytest.param({"x-b3-sampled": "1"}, (TRACE, SPAN, True), id="sampled"),
    pytest.param({"x-b3-sampled": "true"}, (TRACE, SPAN, True), id="sampled-true"),
    pytest.param({"x-b3-sampled": "0"}, (TRACE, SPAN, False), id="not-sampled"),
    pytest.param({"x-b3-sampled": "false"}, (TRACE, SPAN, False), id="not-sampled-false"),
    pytest.param({"x-b3-flags": "1"}, (TRACE, SPAN, True), id="debug"),
    pytest.param({"x-b3-sampled": "0", "x-b3-flags": "1"}, (TRACE, SPAN, True), id="debug-wins"),
    pytest.param({}, (TRACE, SPAN, False), id="deferred"),
    pytest.param({"x-b3-parentspanid": OTHER_SPAN}, (TRACE, SPAN, False), id="parent-ignored"),
    pytest.param({"x-b3-sampled": "yes"}, None, id="bad-sampled"),
    pytest.param({"x-b3-flags": "2"}, None, id="bad-flags"),
    pytest.param({"x-b3-spanid": "nothex0123456789"}, None, id="bad-span-id"),
    pytest.param({"x-b3-traceid": OTHER_SPAN}, ("0" * 16 + OTHER_SPAN, SPAN, False), id="64-bit"),
]


@pytest.mark.parametrize(("extra", "expected"), B3_MULTI_CASES)
def test_b3_multi(extra: dict[str, str], expected: Found) -> None:
    headers = {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, **extra}
    assert _found(headers=headers) == expected
    assert _found(list(headers.items())) == expected


def test_b3_multi_needs_both_ids() -> None:
    assert _found(headers={"x-b3-traceid": TRACE, "x-b3-sampled": "1"}) is None
    assert _found(headers={"x-b3-spanid": SPAN, "x-b3-sampled": "1"}) is None


PRECEDENCE = [
    pytest.param(
        [("traceparent", TP)], {"traceparent": TP_OTHER}, TRACE, id="metadata-before-headers"
    ),
    pytest.param(
        [("traceparent", "garbage")], {"traceparent": TP_OTHER}, OTHER_TRACE,
        id="bad-metadata-then-headers",
    ),
    pytest.param(
        [("b3", f"{OTHER_TRACE}-{OTHER_SPAN}-1")], {"traceparent": TP}, OTHER_TRACE,
        id="metadata-b3-before-header-w3c",
    ),
    pytest.param(
        None, {"traceparent": TP, "b3": f"{OTHER_TRACE}-{OTHER_SPAN}-1"}, TRACE,
        id="w3c-before-b3-single",
    ),
    pytest.param(
        None, {"traceparent": TP, "x-b3-traceid": OTHER_TRACE, "x-b3-spanid": OTHER_SPAN},
        TRACE, id="w3c-before-b3-multi",
    ),
    pytest.param(
        None, {"traceparent": "00-bad", "b3": f"{OTHER_TRACE}-{OTHER_SPAN}-1"}, OTHER_TRACE,
        id="bad-w3c-then-b3",
    ),
    pytest.param(
        None, {"b3": f"{TRACE}-{SPAN}-1", "x-b3-traceid": OTHER_TRACE, "x-b3-spanid": SPAN},
        TRACE, id="b3-single-before-multi",
    ),
    pytest.param(
        None, {"b3": "0", "x-b3-traceid": OTHER_TRACE, "x-b3-spanid": SPAN}, OTHER_TRACE,
        id="lone-b3-state-then-multi",
    ),
    pytest.param(
        [("traceparent", TP), ("traceparent", TP_OTHER)], {"b3": f"{OTHER_TRACE}-{SPAN}"},
        OTHER_TRACE, id="repeated-metadata-dropped",
    ),
    pytest.param(
        [("traceparent", TP), ("traceparent", TP)], None, TRACE, id="repeated-identical",
    ),
    pytest.param([("Traceparent", TP)], None, TRACE, id="metadata-key-case"),
    pytest.param(
        [("traceparent-bin", b"\x00" * 29), ("traceparent", TP)], None, TRACE,
        id="binary-metadata-skipped",
    ),
    pytest.param(grpc.aio.Metadata(("traceparent", TP)), None, TRACE, id="grpc-aio-metadata"),
    pytest.param([("x",), 7, None], {"traceparent": TP}, TRACE, id="broken-metadata-then-headers"),
    pytest.param(
        [("traceparent", TP)], {"traceparent": 7}, TRACE, id="broken-headers-after-metadata",
    ),
    pytest.param(None, {"traceparent": 7}, None, id="broken-headers"),
    pytest.param(None, None, None, id="nothing"),
]  # fmt: skip


@pytest.mark.parametrize(("metadata", "headers", "trace_id"), PRECEDENCE)
def test_precedence(metadata: Any, headers: Any, trace_id: str | None) -> None:
    found = _found(metadata, headers)
    assert (found[0] if found else None) == trace_id


TRACESTATE_CASES = [
    pytest.param("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
                 [("congo", "t61rcWkgMzE"), ("rojo", "00f067aa0ba902b7")], id="two"),
    pytest.param(" congo=1 ,, \t rojo=2", [("congo", "1"), ("rojo", "2")], id="whitespace-empty"),
    pytest.param("tenant@vendor=x", [("tenant@vendor", "x")], id="multi-tenant-key"),
    pytest.param("congo=1,bad", [], id="member-without-value"),
    pytest.param("Congo=1", [], id="upper-case-key"),
    pytest.param("congo=1,congo=2", [], id="duplicate-key"),
    pytest.param("congo=a,b", [], id="comma-in-value"),
    pytest.param("congo=va=lue", [], id="equals-in-value"),
    pytest.param(",".join(f"k{i}=v" for i in range(33)), [], id="33-members"),
    pytest.param("k=" + "v" * 300, [], id="long-value"),
    pytest.param("k=v," * 3000, [], id="oversized"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "expected"), TRACESTATE_CASES)
def test_tracestate(value: str, expected: list[tuple[str, str]]) -> None:
    assert list(parse_tracestate(value).items()) == expected


def test_tracestate_travels_with_its_traceparent() -> None:
    context = extract_parent(None, {"traceparent": TP, "tracestate": "congo=1"})
    assert context is not None and context.trace_state.get("congo") == "1"
    # A bad tracestate costs the state, not the parent.
    context = extract_parent(None, {"traceparent": TP, "tracestate": "Bad=1"})
    assert context is not None and len(context.trace_state) == 0


def test_repeated_tracestate_metadata_joins() -> None:
    carrier = metadata_carrier([("tracestate", "a=1"), ("tracestate", "b=2")])
    assert carrier == {"tracestate": "a=1,b=2"}


def test_malformed_values_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A client cannot flood the log through its trace headers."""
    for value in ("x" * 10_000, f"00-{TRACE}-{SPAN}-01,junk"):
        extract_parent([("traceparent", value)], {"tracestate": value, "traceparent": value})
        extract_parent(None, {"traceparent": TP, "tracestate": "Bad,=,x" * 50})
    assert caplog.records == []


def test_parent_context_holds_the_remote_span() -> None:
    context = parent_context([("traceparent", TP)])
    assert context is not None
    span_context = trace.get_current_span(context).get_span_context()
    assert format(span_context.trace_id, "032x") == TRACE and span_context.is_remote
    assert parent_context(None, {"traceparent": "nope"}) is None
