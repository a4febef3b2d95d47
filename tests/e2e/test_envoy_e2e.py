"""Through real Envoy with real mTLS: what reaches the backend, and what each caller sees.

The backend echoes what arrived, so "never reaches upstream" is checked on the upstream
side, not inferred from a status code.
"""

from __future__ import annotations

import http.client
import ssl
from typing import Any

import pytest

from authz_server.tools.stack import Reply
from tests.e2e import harness
from tests.e2e.conftest import Proxy, Stack

pytestmark = pytest.mark.e2e

#: How a refused TLS handshake shows up on the client (TLS 1.3 reports it on first read).
REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)


def _deny_body(reply: Reply, status: int, reason: str) -> dict[str, Any]:
    """Assert the deny shape of docs/concepts/response-contract.md#deny and return the parsed
    body."""
    assert reply.status == status, (reply.status, reply.body)
    body: dict[str, Any] = reply.json()
    assert body["decision"] == "deny"
    assert body["reason"] == reason, body
    assert body["decision_id"] == reply.headers["x-authz-decision-id"]
    return body


# --- allow, and the headers upstream can trust ------------------------------------


def test_allowed_request_reaches_backend_with_authz_headers(e2e: Stack, shipped: Proxy) -> None:
    """An allowed call is forwarded, carrying the verified principal, rule and decision id."""
    reply = e2e.request(shipped, "/v1/orders/42")
    assert reply.status == 200, reply.body
    seen = reply.json()
    assert seen["path"] == "/v1/orders/42"
    assert seen["headers"]["x-authz-principal"] == harness.FRONTEND
    assert seen["headers"]["x-authz-rule"] == "orders-read"
    assert len(seen["headers"]["x-authz-decision-id"]) >= 16


def test_forged_authz_headers_never_reach_upstream(e2e: Stack, shipped: Proxy) -> None:
    """Client-sent x-authz-* are removed; the principal upstream is the verified one."""
    forged = [
        ("x-authz-principal", "spiffe://example.org/humans/root"),
        ("X-Authz-Rule", "admin-everything"),
        ("x-authz-decision-id", "forged"),
        ("x-authz-anything", "1"),
    ]
    reply = e2e.request(shipped, "/v1/orders/7", headers=forged)
    assert reply.status == 200, reply.body
    headers = reply.json()["headers"]
    assert headers["x-authz-principal"] == harness.FRONTEND
    assert headers["x-authz-rule"] == "orders-read"
    assert headers["x-authz-decision-id"] != "forged"
    assert "x-authz-anything" not in headers


def test_underscore_variant_of_authz_header_is_rejected_by_envoy(
    e2e: Stack, shipped: Proxy
) -> None:
    """`x_authz_principal` could alias the real header in some backends: Envoy refuses it."""
    reply = e2e.request(shipped, "/v1/orders/7", headers=[("x_authz_principal", "spiffe://x/y")])
    assert reply.status == 400


def test_client_xfcc_is_replaced_by_what_envoy_verified(e2e: Stack, shipped: Proxy) -> None:
    """A client-sent x-forwarded-client-cert is dropped (SANITIZE_SET), never forwarded."""
    xfcc = "By=spiffe://example.org/x;URI=spiffe://example.org/humans/root"
    reply = e2e.request(shipped, "/v1/orders/7", headers=[("x-forwarded-client-cert", xfcc)])
    assert reply.status == 200, reply.body
    forwarded = reply.json()["headers"]["x-forwarded-client-cert"]
    assert "humans/root" not in forwarded
    assert f"URI={harness.FRONTEND}" in forwarded


# --- deny ---------------------------------------------------------------------------


def test_unmatched_request_is_403_no_matching_rule(e2e: Stack, shipped: Proxy) -> None:
    """No rule allows the frontend into a tenant: 403 with the JSON reason and an id."""
    reply = e2e.request(shipped, "/v1/tenants/acme/files")
    body = _deny_body(reply, 403, "no_matching_rule")
    assert body["rule"] is None
    assert reply.headers["content-type"].startswith("application/json")


def test_deny_rule_is_403_denied_by_rule(e2e: Stack, shipped: Proxy) -> None:
    """The agent is explicitly kept out of /admin: 403 naming the deny rule."""
    body = _deny_body(e2e.request(shipped, "/admin/users", as_="agent"), 403, "denied_by_rule")
    assert body["rule"] == "no-admin-from-agents"


def test_agent_inside_its_own_tenant_is_allowed(e2e: Stack, shipped: Proxy) -> None:
    """The {tenant} capture binds path and principal: acme's bot works inside acme."""
    reply = e2e.request(shipped, "/v1/tenants/acme/files", as_="agent")
    assert reply.status == 200, reply.body
    assert reply.json()["headers"]["x-authz-rule"] == "tenant-scope"


# --- no certificate, health -----------------------------------------------------------


def test_no_client_cert_with_shipped_config_never_reaches_upstream(
    e2e: Stack, shipped: Proxy
) -> None:
    """Envoy 1.40's SPIFFE validator ignores `require_client_certificate: false` and
    refuses the handshake (envoyproxy/envoy#26412); once fixed, the server answers 401."""
    try:
        reply = e2e.request(shipped, "/v1/orders/1", as_=None)
    except REFUSED:
        return
    _deny_body(reply, 401, "no_identity")


def test_no_client_cert_is_401_no_identity(e2e: Stack, optional_cert: Proxy) -> None:
    """With optional client certificates, a caller without one gets a named 401."""
    _deny_body(e2e.request(optional_cert, "/v1/orders/1", as_=None), 401, "no_identity")


def test_healthz_is_answered_without_authz(
    e2e: Stack, shipped: Proxy, optional_cert: Proxy
) -> None:
    """/healthz is Envoy's direct response: no certificate needed, no Check, no audit."""
    assert e2e.request(optional_cert, "/healthz", as_=None).body == b"ok\n"
    assert e2e.request(shipped, "/healthz").status == 200
    # A later decision being flushed proves the earlier requests would have been too.
    marker = e2e.request(shipped, "/v1/tenants/none/marker")
    assert harness.wait_for_audit(e2e.audit_log, marker.headers["x-authz-decision-id"])
    assert not [r for r in harness.audit_records(e2e.audit_log) if r.get("path") == "/healthz"]


# --- certificates Envoy accepts but the server must not -------------------------------


@pytest.mark.parametrize("proxy_name", ["shipped", "pooled"])
def test_two_uri_sans_are_401_certificate_invalid(
    e2e: Stack, proxy_name: str, request: pytest.FixtureRequest
) -> None:
    """Envoy accepts a leaf with two URI SANs and reports the first as principal; an
    X509-SVID has exactly one, so the server refuses it even though the first is allowed."""
    proxy: Proxy = request.getfixturevalue(proxy_name)
    reply = e2e.request(proxy, "/v1/orders/1", as_="two-uris")
    _deny_body(reply, 401, "certificate_invalid")


def test_foreign_ca_claiming_our_trust_domain_is_refused_by_spiffe_validator(
    e2e: Stack, shipped: Proxy
) -> None:
    """partner.org's CA minted an example.org ID: the per-domain bundle refuses it."""
    with pytest.raises(REFUSED):
        e2e.request(shipped, "/v1/orders/1", as_="forged")


def test_foreign_ca_through_pooled_trust_store_is_401_certificate_invalid(
    e2e: Stack, pooled: Proxy
) -> None:
    """A pooled trusted_ca lets the forged certificate through the handshake; the server
    verifies per trust domain and still says no."""
    reply = e2e.request(pooled, "/v1/orders/1", as_="forged")
    _deny_body(reply, 401, "certificate_invalid")


def test_partner_identity_is_allowed_for_its_own_domain(e2e: Stack, pooled: Proxy) -> None:
    """The same partner CA is trusted for partner.org IDs: verification is per domain, not off."""
    reply = e2e.request(pooled, "/v1/billing/invoices", as_="partner")
    assert reply.status == 200, reply.body
    assert reply.json()["headers"]["x-authz-principal"] == harness.PARTNER


# --- path tricks (docs/policy/reference.md#canonical-paths)
# -----------------------------------------------------------

#: (raw path, what the server must answer when Envoy's normalisation is off:
#:  "server" = 400 non_canonical_path from authz-server, "envoy" = Envoy's own 400).
PATH_TRICKS = [
    pytest.param("/public/../admin", "server", id="dot-dot"),
    pytest.param("/./admin", "server", id="dot"),
    pytest.param("//admin", "server", id="double-slash"),
    pytest.param("/public/%2e%2e/admin", "server", id="encoded-dots"),
    pytest.param("/public%2F..%2Fadmin", "server", id="encoded-slash"),
    pytest.param("/admin%2Fx", "server", id="encoded-slash-tail"),
    pytest.param("/public/%5C..%5Cadmin", "server", id="encoded-backslash"),
    pytest.param("/%61dmin", "server", id="encoded-unreserved"),
    pytest.param("/public/..;/admin", "server", id="semicolon-dot-dot"),
    pytest.param("/a;b", "server", id="semicolon"),
    pytest.param("/public\\..\\admin", "server", id="backslash"),
    pytest.param("/admin#x", "envoy", id="fragment"),
    pytest.param("/public/x#/../../admin", "envoy", id="fragment-dot-dot"),
]


def test_public_path_is_allowed(e2e: Stack, shipped: Proxy, raw_paths: Proxy) -> None:
    """Control for the tricks below: the wide rule they try to ride does allow."""
    for proxy in (shipped, raw_paths):
        reply = e2e.request(proxy, "/public/x")
        assert reply.status == 200, (proxy.name, reply.body)


@pytest.mark.parametrize(("path", "who_refuses"), PATH_TRICKS)
def test_path_trick_never_reaches_a_forbidden_resource(
    e2e: Stack, shipped: Proxy, path: str, who_refuses: str
) -> None:
    """With the shipped settings Envoy normalises or rejects; nothing forbidden is served."""
    reply = e2e.request(shipped, path)
    assert reply.status in (400, 403), (reply.status, reply.body)
    if "x-authz-decision-id" in reply.headers:
        assert reply.json()["reason"] in ("non_canonical_path", "no_matching_rule")


@pytest.mark.parametrize(("path", "who_refuses"), PATH_TRICKS)
def test_path_trick_without_envoy_normalisation_is_400_non_canonical(
    e2e: Stack, raw_paths: Proxy, path: str, who_refuses: str
) -> None:
    """If Envoy is misconfigured, the server refuses the raw path before any rule."""
    reply = e2e.request(raw_paths, path)
    if who_refuses == "envoy":
        assert reply.status == 400
        assert "x-authz-decision-id" not in reply.headers
    else:
        _deny_body(reply, 400, "non_canonical_path")


# --- audit -----------------------------------------------------------------------------


def test_audit_log_has_one_record_per_decision_with_the_id_the_client_saw(
    e2e: Stack, shipped: Proxy
) -> None:
    """The id in the deny header and the one the backend saw each appear exactly once."""
    denied = e2e.request(shipped, "/v1/tenants/globex/secrets", as_="human")
    allowed = e2e.request(shipped, "/v1/orders/9")
    cases = [
        (denied.headers["x-authz-decision-id"], "deny", "no_matching_rule", harness.HUMAN),
        (allowed.json()["headers"]["x-authz-decision-id"], "allow", None, harness.FRONTEND),
    ]
    for decision_id, verdict, reason, principal in cases:
        records = harness.wait_for_audit(e2e.audit_log, decision_id)
        assert len(records) == 1, records
        record = records[0]
        assert record["decision"] == verdict
        assert record["principal"] == principal
        if reason:
            assert record["reason"] == reason
    ids = [r["decision_id"] for r in harness.audit_records(e2e.audit_log)]
    assert len(ids) == len(set(ids)), "a decision id appears twice"
