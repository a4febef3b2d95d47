"""The one table of `lint-envoy` finding codes: severity, why it matters, how to fix it.

error    a request can reach the upstream without the server's decision, or the server
         decides on facts the upstream does not see (bypass, spoofable identity)
warning  the server still fails closed, but legitimate requests are refused or Envoy
         answers unlike SPEC promises (e.g. 403 instead of 503 when the server is down)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]

EXT_AUTHZ_TYPE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
# Exact paths on which skipping ext_authz is accepted: probes carry no identity.
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/health", "/ready"})


@dataclass(frozen=True, slots=True)
class Rule:
    """What one finding code means: how bad, why it matters, how to fix it."""

    severity: Severity
    why: str
    fix: str


_HEALTH = ", ".join(sorted(HEALTH_PATHS))
# The one table of codes; each check only says what it found.
CODES: dict[str, Rule] = {
    "no_http_connection_manager": Rule(
        "error",
        "nothing in this file sends requests to authz-server",
        "lint the config of the Envoy that fronts the workload: it needs an inbound listener "
        "with an inline HttpConnectionManager (LDS-delivered listeners cannot be checked).",
    ),
    "normalize_path": Rule(
        "warning",
        "Envoy routes `/a/../b` as sent, so route matching sees another path than the upstream, "
        "and authz-server refuses it (400 non_canonical_path) instead of Envoy resolving it",
        "set normalize_path: true on the HttpConnectionManager.",
    ),
    "merge_slashes": Rule(
        "warning",
        "`//a` reaches routing unmerged and authz-server refuses it (400 non_canonical_path)",
        "set merge_slashes: true on the HttpConnectionManager.",
    ),
    "escaped_slashes_action": Rule(
        "warning",
        "KEEP_UNCHANGED routes `%2F` undecoded while upstreams may decode it (path confusion; "
        "authz-server refuses it with 400); UNESCAPE_AND_FORWARD silently turns one segment "
        "`a%2Fb` into two, a different resource than the client named",
        "set path_with_escaped_slashes_action: REJECT_REQUEST (or UNESCAPE_AND_REDIRECT, which "
        "makes the client resend the decoded path) on the HttpConnectionManager.",
    ),
    "xfcc_not_sanitised": Rule(
        "error",
        "a client's own x-forwarded-client-cert header travels on, so it can claim another "
        "workload's identity to the upstream and to policies that read XFCC",
        "set forward_client_cert_details: SANITIZE_SET (or SANITIZE, the default); forward "
        "XFCC only behind a proxy that sets it, and lint with --behind-trusted-proxy.",
    ),
    "ext_authz_missing": Rule(
        "error",
        "requests reach the upstream without asking authz-server",
        f"add an envoy.filters.http.ext_authz filter ({EXT_AUTHZ_TYPE}) with grpc_service "
        "pointing at authz-server, before envoy.filters.http.router.",
    ),
    "ext_authz_after_router": Rule(
        "error",
        "the router has forwarded the request before ext_authz runs",
        "move the ext_authz filter before the router filter.",
    ),
    "ext_authz_disabled": Rule(
        "error",
        "requests for which the filter is off reach the upstream unjudged",
        "remove disabled / filter_enabled / filter_enabled_metadata from the ext_authz filter, "
        "or set deny_at_disable: {default_value: true} so that a skipped check denies.",
    ),
    "ext_authz_not_grpc": Rule(
        "error",
        "authz-server speaks only envoy.service.auth.v3.Authorization/Check over gRPC",
        "use grpc_service: {envoy_grpc: {cluster_name: <the authz-server cluster>}}.",
    ),
    "failure_mode_allow": Rule(
        "error",
        "when authz-server is down, slow or errs, Envoy forwards the request unjudged",
        "set failure_mode_allow: false (the default).",
    ),
    "include_peer_certificate": Rule(
        "error",
        "authz-server sees only the principal Envoy derived and cannot verify the certificate "
        "against the bundle of its own trust domain (a partner's CA could mint your IDs); "
        "policies with require_certificate deny every request",
        "set include_peer_certificate: true on the ext_authz filter.",
    ),
    "transport_api_version": Rule(
        "warning",
        "authz-server serves only envoy.service.auth.v3",
        "set transport_api_version: V3 on the ext_authz filter.",
    ),
    "grpc_timeout": Rule(
        "warning",
        "unset, Envoy's 200ms default applies unseen; zero, a hung check holds each request "
        "until the route times out",
        "set grpc_service.timeout, e.g. 0.5s: above the server's p99, below the route timeout.",
    ),
    "status_on_error": Rule(
        "warning",
        "when authz-server cannot be reached, clients get a 403 that looks like a policy "
        "denial; retries and alerts cannot tell an outage from a refusal",
        "set status_on_error: {code: ServiceUnavailable} on the ext_authz filter.",
    ),
    "body_limit": Rule(
        "warning",
        "body conditions need the whole body: a missing or cut body denies with "
        "body_unavailable instead of Envoy answering 413",
        "set with_request_body: {max_request_bytes: 65536, allow_partial_message: false} on "
        "the ext_authz filter, sized to the largest body your rules judge.",
    ),
    "body_not_sent_on_route": Rule(
        "warning",
        "every request of this rule on this route is denied body_unavailable: the server "
        "cannot judge a body Envoy never sends (fail closed, so legitimate calls are refused)",
        "send the body on this route: add a route for the rule's paths before it without "
        "check_settings.disable_request_body_buffering (the filter's with_request_body, "
        "max_request_bytes bounded and allow_partial_message: false, then applies), or drop "
        "that setting from this route.",
    ),
    "ext_authz_disabled_on_route": Rule(
        "error",
        "this route forwards to an upstream without asking authz-server",
        "disable ext_authz only on routes that answer themselves (direct_response, redirect) "
        f"or that match an exact health path ({_HEALTH}).",
    ),
}
