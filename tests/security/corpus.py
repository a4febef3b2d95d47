"""The bypass corpus: one table of path, host, header, identity and body tricks.

Each row is a request some proxy, policy engine or backend has read differently from
another (sources: Envoy, Istio and OPA-Envoy advisories; parser-differential techniques),
aimed at a resource the policy below does not grant that caller. Every row is sent

- `direct`: straight to Check, as Envoy with normalisation off would send it;
- `shipped`: through real Envoy with the recommended settings (`envoy/front-proxy.yaml`);
- `lax`: through real Envoy with path normalisation off and every CA pooled in one
  trusted_ca (client certificates optional), so the tricks reach authz-server;

and must be refused everywhere, with the expected answer: a reason code from
authz-server, `ENVOY` (Envoy itself answers 4xx and the server never sees it) or
`REFUSED` (the TLS handshake fails). `ALLOW` rows are the controls: the same callers
*are* allowed their own resources, so a refusal is the trick's, not a broken stack's.
"""

from __future__ import annotations

from dataclasses import dataclass

ALLOW = "allow"
ENVOY = "envoy"
REFUSED = "refused"

POLICY = """\
version: 1
identity:
  trust_domains: [example.org, partner.org]
  sources: [peer]
  require_certificate: true
defaults: {decision: deny, mode: enforce}
rules:
  - id: public-read                  # wide on purpose: the tricks try to ride it
    methods: [GET]
    paths: ["/public/**"]
    effect: allow
  - id: admin-humans
    paths: ["/admin/**"]
    principals: ["spiffe://example.org/humans/*"]
    effect: allow
  - id: orders-read                  # host-scoped grant
    methods: [GET]
    hosts: [orders.internal]
    paths: ["/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
  - id: internal-host                # host-scoped deny: case and ports must not dodge it
    hosts: [admin.internal]
    paths: ["/**"]
    effect: deny
  - id: admin-role                   # a deny on a header value: repeats must not dodge it
    paths: ["/public/**"]
    effect: deny
    when:
      headers:
        x-role: {equals: admin}
  - id: transfers                    # a body limit: duplicate keys must not dodge it
    methods: [POST]
    paths: ["/v1/transfers"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow
    when:
      body:
        amount: {lte: 1000}
  - id: partner-billing
    paths: ["/v1/billing/**"]
    principals: ["spiffe://partner.org/**"]
    effect: allow
"""

_JSON = (("content-type", "application/json"),)


@dataclass(frozen=True)
class Trick:
    id: str
    #: Where the trick comes from (advisory, or the parser differential it exploits).
    source: str
    #: The expected answer per channel; None where the trick does not apply.
    direct: str | None
    shipped: str | None
    lax: str | None
    path: str = "/public/x"
    method: str = "GET"
    #: Client certificate presented (an `identities.LEAVES` name), None for none.
    caller: str | None = "frontend"
    host: str = "localhost"
    #: Extra request headers, repeats allowed (Envoy joins repeats with ",").
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    #: Through Envoy: the request-target when it is not `path` (absolute form).
    target: str | None = None
    #: Direct Check only: the principal Envoy would report, when not the caller's SAN.
    principal: str | None = None
    #: A known gap, not yet closed: the row is a strict xfail until the fix lands.
    gap: str | None = None


NC, NM, DR = "non_canonical_path", "no_matching_rule", "denied_by_rule"
_HEADER_GAP = (
    "a deny rule's `equals` compares the comma-joined value, so `x-role: user` + "
    "`x-role: admin` dodges it; a repeated value must make the condition UNKNOWN "
    "(deny applies) unless the whole value matches"
)
_CASE_GAP = (
    "keys differing only in case are read as distinct, while case-insensitive "
    "deserialisers take the last one; they must make the body unavailable"
)
BU, CF = "body_unavailable", "condition_failed"
CI, ISI, UTD = "certificate_invalid", "invalid_spiffe_id", "untrusted_trust_domain"

# fmt: off
CORPUS: list[Trick] = [
    # --- controls ------------------------------------------------------------------------
    Trick("control-public", "control", ALLOW, ALLOW, ALLOW),
    Trick("control-admin-human", "control", ALLOW, ALLOW, ALLOW,
          path="/admin/users", caller="human"),
    Trick("control-orders-host", "control", ALLOW, ALLOW, ALLOW,
          path="/v1/orders/1", host="orders.internal"),
    Trick("control-transfer", "control", ALLOW, ALLOW, ALLOW, method="POST", path="/v1/transfers",
          headers=_JSON, body=b'{"amount": 5}'),
    # The shipped proxy trusts one trust domain (its SPIFFE validator lists example.org).
    Trick("control-partner", "control", ALLOW, REFUSED, ALLOW,
          path="/v1/billing/1", caller="partner"),
    # --- paths (SPEC 5.3) ------------------------------------------------------------------
    Trick("dot-dot", "Envoy CVE-2019-9901", NC, NM, NC, path="/public/../admin/users"),
    Trick("dot", "Envoy CVE-2019-9901", NC, NM, NC, path="/./admin/users"),
    Trick("dot-dot-deep", "Envoy CVE-2019-9901", NC, NM, NC, path="/public/a/../../admin/users"),
    Trick("encoded-dot-dot", "Envoy CVE-2019-9901", NC, NM, NC, path="/public/%2e%2e/admin/users"),
    Trick("encoded-dot-dot-upper", "Envoy CVE-2019-9901", NC, NM, NC,
          path="/public/%2E%2E/admin/users"),
    Trick("semicolon-dot-dot", "Tomcat/Spring `..;` path parameters", NC, NM, NC,
          path="/public/..;/admin/users"),
    Trick("semicolon-segment", "Tomcat/Spring `;` path parameters", NC, NM, NC,
          path="/public;/../admin/users"),
    Trick("encoded-slash", "Envoy CVE-2021-29492, Istio CVE-2021-31920", NC, ENVOY, NC,
          path="/public%2F..%2Fadmin/users"),
    Trick("encoded-slash-lower", "Envoy CVE-2021-29492, Istio CVE-2021-31920", NC, ENVOY, NC,
          path="/public%2f..%2fadmin/users"),
    Trick("encoded-backslash", "Envoy CVE-2021-29492, Istio CVE-2021-31920", NC, ENVOY, NC,
          path="/public/%5C..%5Cadmin/users"),
    Trick("backslash", "Istio path normalisation (BASE)", NC, NM, NC,
          path="/public\\..\\admin/users"),
    Trick("double-slash", "Istio ISTIO-SECURITY-2021-005", NC, NM, NC, path="//admin/users"),
    Trick("leading-authority", "OPA-Envoy GHSA-9f29-v6mm-pw6w", NC, NM, NC,
          path="//public/../admin/users"),
    Trick("encoded-unreserved", "percent-encoded letters", NC, NM, NC, path="/%61dmin/users"),
    Trick("fragment", "Envoy CVE-2021-32779, Istio CVE-2021-39156", NC, ENVOY, ENVOY,
          path="/admin/users#/public/x"),
    Trick("fragment-dot-dot", "Envoy CVE-2021-32779, Istio CVE-2021-39156", NC, ENVOY, ENVOY,
          path="/public/x#/../../admin/users"),
    # --- hosts -------------------------------------------------------------------------------
    Trick("host-upper", "Istio CVE-2021-39155", DR, DR, DR, host="ADMIN.INTERNAL"),
    Trick("host-port", "host with port", DR, DR, DR, host="admin.internal:8443"),
    Trick("host-trailing-dot", "fully qualified host", DR, DR, DR, host="admin.internal."),
    Trick("host-mixed", "Istio CVE-2021-39155", DR, DR, DR, host="Admin.Internal.:443"),
    Trick("host-suffix", "host suffix", NM, NM, NM,
          path="/v1/orders/1", host="orders.internal.evil.com"),
    Trick("host-userinfo", "authority userinfo", NM, NM, NM, path="/v1/orders/1",
          host="evil@orders.internal"),
    Trick("absolute-uri", "absolute-form request-target vs Host", None, DR, DR,
          target="https://admin.internal/public/x", host="public.internal"),
    # --- headers ----------------------------------------------------------------------------
    Trick("header-repeat", "Envoy CVE-2021-32777, Istio CVE-2026-26308", DR, DR, DR,
          headers=(("x-role", "user"), ("x-role", "admin"))),
    Trick("header-comma", "Istio CVE-2026-26308", DR, DR, DR, headers=(("x-role", "user, admin"),)),
    Trick("header-case", "header names are case-insensitive", DR, DR, DR,
          headers=(("X-ROLE", "admin"),)),
    Trick("forged-xfcc", "XFCC from an untrusted peer", "no_identity", REFUSED, "no_identity",
          path="/admin/users", caller=None,
          headers=(("x-forwarded-client-cert", "By=spiffe://example.org/x;URI=spiffe://example.org/humans/alice"),)),
    Trick("forged-xfcc-with-cert", "XFCC from an untrusted peer", NM, NM, NM, path="/admin/users",
          headers=(("x-forwarded-client-cert", "URI=spiffe://example.org/humans/alice"),
                   ("x-forwarded-client-cert", "URI=spiffe://example.org/humans/bob"))),
    Trick("forged-principal-header", "client-sent x-authz-*", NM, NM, NM, path="/admin/users",
          headers=(("x-authz-principal", "spiffe://example.org/humans/alice"),)),
    # --- identities (SPEC 4.2) -------------------------------------------------------------
    Trick("two-uri-sans", "Envoy reports the first URI SAN", CI, CI, CI, path="/admin/users",
          caller="two-uris"),
    Trick("foreign-ca", "pooled trust store", CI, REFUSED, CI,
          path="/admin/users", caller="forged"),
    Trick("suffix-trust-domain", "trust-domain prefix match", UTD, REFUSED, UTD,
          path="/admin/users",
          caller="suffix-td"),
    Trick("upper-trust-domain", "lenient SPIFFE parsers lower-case", ISI, REFUSED, ISI,
          path="/admin/users", caller="upper-td"),
    Trick("dot-segment-id", "lenient SPIFFE parsers normalise", ISI, ISI, ISI, path="/admin/users",
          caller="dot-segment"),
    Trick("trailing-slash-id", "lenient SPIFFE parsers", ISI, ISI, ISI, path="/admin/users",
          caller="trailing-slash"),
    Trick("encoded-id", "lenient SPIFFE parsers decode", ISI, ISI, ISI,
          path="/admin/users", caller="encoded"),
    Trick("port-id", "URI parsers accept a port", ISI, REFUSED, ISI,
          path="/admin/users", caller="port"),
    Trick("userinfo-id", "URI parsers accept userinfo", ISI, REFUSED, ISI, path="/admin/users",
          caller="userinfo"),
    Trick("principal-not-in-cert", "principal without matching certificate", "certificate_mismatch",
          None, None, path="/admin/users", principal="spiffe://example.org/humans/alice"),
    # --- JSON bodies (SPEC 7) -------------------------------------------------------------
    Trick("json-duplicate-key", "first-wins vs last-wins parsers", BU, BU, BU, method="POST",
          path="/v1/transfers", headers=_JSON, body=b'{"amount": 5, "amount": 100000}'),
    Trick("json-escaped-duplicate", "escaped key spelling", BU, BU, BU, method="POST",
          path="/v1/transfers", headers=_JSON, body=b'{"amount": 5, "\\u0061mount": 100000}'),
    Trick("json-nested-duplicate", "duplicate keys at depth", BU, BU, BU, method="POST",
          path="/v1/transfers", headers=_JSON, body=b'{"amount": 5, "meta": {"a": 1, "a": 2}}'),
    Trick("json-case-variant", "case-insensitive deserialisers (ASP.NET Core, Jackson option)",
          BU, BU, BU, method="POST", path="/v1/transfers", headers=_JSON,
          body=b'{"amount": 5, "Amount": 100000}'),
    Trick("json-trailing-document", "streaming parsers", BU, BU, BU, method="POST",
          path="/v1/transfers", headers=_JSON, body=b'{"amount": 5}{"amount": 100000}'),
    Trick("json-nan", "non-standard literals", BU, BU, BU, method="POST", path="/v1/transfers",
          headers=_JSON, body=b'{"amount": NaN}'),
    Trick("json-huge-exponent", "floats overflow to infinity", CF, CF, CF, method="POST",
          path="/v1/transfers", headers=_JSON, body=b'{"amount": 1e400}'),
    Trick("json-rounding", "floats round down", CF, CF, CF, method="POST", path="/v1/transfers",
          headers=_JSON, body=b'{"amount": 1000.0000000000000001}'),
    Trick("json-not-json-type", "content-type sniffing", BU, BU, BU, method="POST",
          path="/v1/transfers", headers=(("content-type", "text/plain"),), body=b'{"amount": 5}'),
]
# fmt: on
