"""Loading policy files: the valid shape, every rejection with its line, directories."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_server.core.errors import PolicyError
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.policy.load import load_policy_text
from authz_server.policy.model import Effect, Mode

POLICY = """\
version: 1
identity:
  trust_domains: [example.org, partner.net]
  sources: [peer]
  require_certificate: true
  deny: ["spiffe://example.org/compromised/*"]
admin:
  principals: ["spiffe://example.org/humans/*"]
defaults:
  decision: deny
  mode: enforce
  non_http: allow
rules:
  - id: orders-read
    description: Shop frontends read orders
    hosts: ["orders.internal"]
    methods: [GET, head]
    paths: ["/v1/orders", "/v1/orders/{id}"]
    principals: ["spiffe://example.org/ns/shop/sa/*"]
    effect: allow

  - id: tenant-scope
    paths: ["/v1/tenants/{tenant}/**"]
    principals: ["spiffe://example.org/agents/{tenant}/*"]
    effect: allow

  - id: releases-publish
    methods: [POST, PUT]
    paths: ["/v1/releases/**"]
    principals: ["spiffe://example.org/ci/release"]
    not_principals: ["spiffe://partner.net/ci/release"]
    effect: allow
    mode: dry_run

  - id: health
    methods: [GET]
    paths: [/healthz]
    unauthenticated: true
    principals: ["spiffe://example.org/probes/*"]
    effect: allow

  - id: no-admin-from-agents
    paths: ["/admin/**"]
    principals: ["spiffe://example.org/agents/**"]
    effect: deny
"""

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org]\n"  # lines 1-3


def _issues(text: str) -> list[tuple[int | None, str | None, str | None, str]]:
    with pytest.raises(PolicyError) as raised:
        load_policy_text(text, "p.yaml")
    assert all(issue.file == "p.yaml" for issue in raised.value.issues)
    return [(i.line, i.rule_id, i.field, i.message) for i in raised.value.issues]


def test_valid_policy_compiles_every_field() -> None:
    """The example of docs/policy/reference.md#example (without `when`) loads into the model the
    evaluator reads."""
    policy = load_policy_text(POLICY, "policy.yaml")
    assert policy.identity.trust_domains == frozenset({"example.org", "partner.net"})
    assert policy.identity.sources == ("peer",)
    assert policy.identity.require_certificate is True
    assert [p.text for p in policy.identity.deny] == ["spiffe://example.org/compromised/*"]
    assert [p.text for p in policy.admin_principals] == ["spiffe://example.org/humans/*"]
    assert (policy.default_effect, policy.default_mode, policy.allow_non_http) == (
        Effect.DENY,
        Mode.ENFORCE,
        True,
    )
    assert [r.id for r in policy.rules] == [
        "health",
        "no-admin-from-agents",
        "orders-read",
        "releases-publish",
        "tenant-scope",
    ]
    rules = {r.id: r for r in policy.rules}
    orders = rules["orders-read"]
    assert orders.effect is Effect.ALLOW and orders.mode is None
    assert orders.description == "Shop frontends read orders"
    assert orders.hosts == ("orders.internal",)
    assert orders.methods == ("GET", "head")
    assert orders.paths == ("/v1/orders", "/v1/orders/{id}")
    assert orders.principals is not None
    assert [p.text for p in orders.principals] == ["spiffe://example.org/ns/shop/sa/*"]
    assert orders.location == "policy.yaml:14"
    assert rules["tenant-scope"].hosts == () and rules["tenant-scope"].methods == ()
    assert rules["releases-publish"].mode is Mode.DRY_RUN
    assert [p.text for p in rules["releases-publish"].not_principals] == [
        "spiffe://partner.net/ci/release"
    ]
    assert rules["health"].unauthenticated is True
    assert rules["no-admin-from-agents"].effect is Effect.DENY
    assert policy.files == ("policy.yaml",)
    expected = hashlib.sha256(f"policy.yaml\0{len(POLICY)}\0{POLICY}".encode()).hexdigest()
    assert policy.version == expected


def test_loaded_index_and_principals_work_together() -> None:
    """The loaded index finds rules by route and the patterns match verified IDs."""
    policy = load_policy_text(POLICY)
    matches = policy.index.candidates("HEAD", "orders.internal", "/v1/orders/42")
    assert [(m.rule.id, dict(m.params)) for m in matches] == [("orders-read", {"id": "42"})]
    principals = matches[0].rule.principals
    assert principals is not None
    assert principals[0].match(parse_spiffe_id("spiffe://example.org/ns/shop/sa/web")) == {}
    revoked = policy.identity.deny[0].match(parse_spiffe_id("spiffe://example.org/compromised/x"))
    assert revoked == {}


def test_minimal_policy_defaults() -> None:
    """Only `version` and `identity.trust_domains` are required; everything else defaults."""
    policy = load_policy_text(HEADER)
    assert policy.rules == () and policy.admin_principals == ()
    assert policy.identity.sources == ("peer",) and policy.identity.require_certificate is False
    assert (policy.default_effect, policy.default_mode, policy.allow_non_http) == (
        Effect.DENY,
        Mode.ENFORCE,
        False,
    )


def test_shared_capture_name_in_paths_and_principals_is_allowed() -> None:
    """`{tenant}` in both paths and principals loads; the evaluator joins them."""
    policy = load_policy_text(
        HEADER + "rules:\n  - id: t\n    paths: ['/t/{tenant}/**']\n"
        "    principals: ['spiffe://example.org/a/{tenant}']\n    effect: allow\n"
    )
    assert [r.id for r in policy.rules] == ["t"]


RULE = HEADER + "rules:\n  - id: r\n    effect: allow\n"  # lines 5-6; more from line 7
KNOWN_RULE_KEYS = (
    "description, effect, hosts, id, mcp_tools, methods, mode, not_principals, paths, "
    "principals, unauthenticated, when"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("version: 1\nidentity: [\n", [
            (3, None, None, "YAML syntax error: while parsing a flow node "
             "expected the node content, but found '<stream end>'")], id="yaml-syntax"),
        pytest.param("version: 1\n\tidentity: {}\n", [
            (2, None, None, "YAML syntax error: while scanning for the next token "
             "found character '\\t' that cannot start any token")], id="yaml-tab"),
        pytest.param("", [(1, None, None, "file is empty (expected a mapping starting with "
                                          "'version: 1')")], id="empty-file"),
        pytest.param("just a string\n", [(1, None, None, "expected a mapping, got str "
                                                         "'just a string'")], id="scalar-file"),
        pytest.param("- a\n- b\n", [(1, None, None, "expected a mapping, got a list")],
                     id="list-file"),
        pytest.param("version: 1\n---\nversion: 1\n", [
            (2, None, None, "YAML syntax error: expected a single document in the stream "
             "but found another document")], id="two-documents"),
        pytest.param(HEADER + "version: 1\n", [
            (4, None, None, "duplicate key 'version' (first at line 1)")], id="duplicate-top-key"),
        pytest.param(HEADER + "  trust_domains: [evil.org]\n", [
            (4, None, None, "duplicate key 'trust_domains' (first at line 3)")],
            id="duplicate-nested-key"),
        pytest.param(RULE + "    effect: deny\n", [
            (7, None, None, "duplicate key 'effect' (first at line 6)")], id="duplicate-rule-key"),
        pytest.param(HEADER + "rule: []\n", [
            (4, None, "rule", "unknown key 'rule' (expected one of: admin, authzen, defaults, "
             "identity, rules, version)")], id="unknown-top-key"),
        pytest.param(HEADER + "  require_certficate: true\n", [
            (4, None, "identity.require_certficate", "unknown key 'require_certficate' "
             "(expected one of: deny, jwt_svid, require_certificate, sources, trust_domains, "
             "xfcc)")], id="unknown-identity-key"),
        pytest.param(RULE + "    principal: ['spiffe://example.org/a']\n", [
            (7, "r", "principal", f"unknown key 'principal' (expected one of: {KNOWN_RULE_KEYS})")],
            id="unknown-rule-key"),
        pytest.param(HEADER + "defaults: {decison: allow}\n", [
            (4, None, "defaults.decison", "unknown key 'decison' (expected one of: decision, "
             "mode, non_http)")], id="unknown-defaults-key"),
        pytest.param(HEADER + "admin: {principal: []}\n", [
            (4, None, "admin.principal", "unknown key 'principal' (expected one of: "
             "approvals, principals)")], id="unknown-admin-key"),
        pytest.param("identity: {trust_domains: [example.org]}\n", [
            (1, None, "version", "missing 'version' (expected 1)")], id="version-missing"),
        pytest.param("version: 2\nidentity: {trust_domains: [example.org]}\n", [
            (1, None, "version", "unsupported version '2' (expected 1)")], id="version-2"),
        pytest.param("version: '1'\nidentity: {trust_domains: [example.org]}\n", [
            (1, None, "version", "unsupported version '1' (expected 1)")], id="version-string"),
        pytest.param("version: true\nidentity: {trust_domains: [example.org]}\n", [
            (1, None, "version", "unsupported version 'True' (expected 1)")], id="version-bool"),
        pytest.param("version: 1\n", [
            (None, None, "identity", "no file defines 'identity' (identity.trust_domains is "
             "required)")], id="identity-missing"),
        pytest.param("version: 1\nidentity: {}\n", [
            (2, None, "identity.trust_domains", "required")], id="trust-domains-missing"),
        pytest.param("version: 1\nidentity: {trust_domains: []}\n", [
            (2, None, "identity.trust_domains", "at least one trust domain is required")],
            id="trust-domains-empty"),
        pytest.param("version: 1\nidentity: {trust_domains: [Example.org, 'a/b']}\n", [
            (2, None, "identity.trust_domains[0]", "invalid trust domain 'Example.org': trust "
             "domain may contain only [a-z0-9._-] (no port, userinfo, upper case)"),
            (2, None, "identity.trust_domains[1]", "invalid trust domain 'a/b': contains '/'")],
            id="trust-domain-invalid"),
        pytest.param("version: 1\nidentity: {trust_domains: example.org}\n", [
            (2, None, "identity.trust_domains", "expected a list, got str 'example.org'")],
            id="trust-domains-not-list"),
        pytest.param(HEADER + "  sources: [peer, xfcc]\n", [
            (4, None, "identity.sources[1]", "source 'xfcc' needs identity.xfcc.trusted_proxies")],
            id="source-xfcc-without-settings"),
        pytest.param(HEADER + "  sources: [jwt_svid]\n", [
            (4, None, "identity.sources[0]", "source 'jwt_svid' needs "
             "identity.jwt_svid.audiences")], id="source-jwt-svid-without-settings"),
        pytest.param(HEADER + "  sources: [header]\n", [
            (4, None, "identity.sources[0]", "unknown source 'header' (expected one of: peer, "
             "xfcc, jwt_svid)")], id="source-unknown"),
        pytest.param(HEADER + "  xfcc: {trusted_proxies: []}\n", [
            (4, None, "identity.xfcc", "set, but 'xfcc' is not in identity.sources (it would "
             "do nothing)"),
            (4, None, "identity.xfcc.trusted_proxies", "at least one proxy is required")],
            id="identity-xfcc-block-without-source"),
        pytest.param(HEADER + "  require_certificate: 'yes'\n", [
            (4, None, "identity.require_certificate", "expected true or false, got str 'yes'")],
            id="require-certificate-string"),
        pytest.param(HEADER + "  deny: ['spiffe://evil.org/x']\n", [
            (4, None, "identity.deny", "principal pattern 'spiffe://evil.org/x': trust domain "
             "'evil.org' is not in identity.trust_domains")], id="deny-foreign-trust-domain"),
        pytest.param(HEADER + "admin: {principals: ['spiffe://example.org/a/']}\n", [
            (4, None, "admin.principals[0]", "principal pattern 'spiffe://example.org/a/': "
             "empty path segment")], id="admin-invalid-pattern"),
        pytest.param(HEADER + "defaults: {decision: permit, mode: audit, non_http: yes}\n", [
            (4, None, "defaults.decision", "expected 'allow' or 'deny', got 'permit'"),
            (4, None, "defaults.mode", "expected 'enforce' or 'dry_run', got 'audit'"),
            (4, None, "defaults.non_http", "expected a string, got bool 'True'")],
            id="defaults-invalid"),
        pytest.param(HEADER + "rules: {id: r}\n", [
            (4, None, "rules", "expected a list of rules, got a mapping")], id="rules-not-list"),
        pytest.param(HEADER + "rules: [orders-read]\n", [
            (4, None, "rules[0]", "expected a mapping (one rule), got str 'orders-read'")],
            id="rule-not-mapping"),
        pytest.param(HEADER + "rules:\n  - effect: allow\n", [
            (5, None, "id", "missing rule 'id'")], id="id-missing"),
        pytest.param(HEADER + "rules:\n  - {id: Orders_Read, effect: allow}\n", [
            (5, "Orders_Read", "id", "invalid rule id 'Orders_Read' "
             "(expected [a-z0-9][a-z0-9._-]*)")], id="id-invalid"),
        pytest.param(HEADER + "rules:\n  - {id: 42, effect: allow}\n", [
            (5, None, "id", "expected a string, got int '42'")], id="id-not-string"),
        pytest.param(RULE + "  - id: r\n    effect: deny\n", [
            (7, "r", "id", "duplicate rule id 'r' (first defined at p.yaml:5)")],
            id="id-duplicate"),
        pytest.param(HEADER + "rules:\n  - id: r\n", [
            (5, "r", "effect", "missing 'effect' (allow or deny)")], id="effect-missing"),
        pytest.param(HEADER + "rules:\n  - id: r\n    effect: Allow\n", [
            (6, "r", "effect", "expected 'allow' or 'deny', got 'Allow'")], id="effect-invalid"),
        pytest.param(RULE + "    mode: dryrun\n", [
            (7, "r", "mode", "expected 'enforce' or 'dry_run', got 'dryrun'")], id="mode-invalid"),
        pytest.param(RULE + "    hosts: orders.internal\n", [
            (7, "r", "hosts", "expected a list, got str 'orders.internal'")], id="hosts-string"),
        pytest.param(RULE + "    hosts: []\n", [
            (7, "r", "hosts", "must not be empty (omit the field to match any)")],
            id="hosts-empty"),
        pytest.param(RULE + "    hosts: ['orders.internal:443']\n", [
            (7, "r", "hosts[0]", "host pattern 'orders.internal:443' must not carry a port "
             "(ports are ignored)")], id="host-port"),
        pytest.param(RULE + "    methods: [GET, 'G T', 7]\n", [
            (7, "r", "methods[1]", "method 'G T' is not an HTTP token"),
            (7, "r", "methods[2]", "expected a string, got int '7'")], id="methods-invalid"),
        pytest.param(RULE + "    paths: [/a/../b, 'v1/x', '/a/**/b']\n", [
            (7, "r", "paths[0]", "path template '/a/../b' is not canonical: dot segment '..'"),
            (7, "r", "paths[1]", "path template 'v1/x' must start with '/'"),
            (7, "r", "paths[2]", "path template '/a/**/b': '**' is allowed only as the last "
             "segment")], id="paths-invalid"),
        pytest.param(RULE + "    principals:\n      - spiffe://example.org/a\n"
                     "      - spiffe://evil.org/a\n", [
            (9, "r", "principals", "principal pattern 'spiffe://evil.org/a': trust domain "
             "'evil.org' is not in identity.trust_domains")], id="principal-foreign-td"),
        pytest.param(RULE + "    not_principals: ['spiffe://example.org/**/x']\n", [
            (7, "r", "not_principals[0]", "principal pattern 'spiffe://example.org/**/x': "
             "'/**' is allowed only at the end")], id="not-principal-invalid"),
        pytest.param(RULE + "    principals: []\n", [
            (7, "r", "principals", "must not be empty (omit the field to match any)")],
            id="principals-empty"),
        pytest.param(RULE + "    unauthenticated: 'true'\n", [
            (7, "r", "unauthenticated", "expected true or false, got str 'true'")],
            id="unauthenticated-string"),
        pytest.param(RULE + "    description: 5\n", [
            (7, "r", "description", "expected a string, got int '5'")], id="description-int"),
        pytest.param(HEADER + "x: &a [1]\ny: *a\n", [
            (5, None, None, "YAML syntax error: aliases (*name) are not allowed in policy "
             "files")], id="alias"),
        pytest.param(RULE + "    hosts: !!python/object:os.system [a]\n", [
            (7, None, None, "unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'")],
            id="python-tag"),
        pytest.param(RULE + "    hosts: [!custom a]\n", [
            (7, None, None, "unsupported YAML tag '!custom'")], id="custom-tag"),
        pytest.param(RULE + "    description: !!int abc\n", [
            (7, None, None, "invalid int 'abc'")], id="bad-explicit-int"),
        pytest.param(HEADER + "1: x\n[a]: y\n", [
            (4, None, None, "mapping key '1' is not a string"),
            (5, None, None, "mapping key '<collection>' is not a string")], id="non-string-keys"),
        pytest.param(HEADER + "rules: " + "[" * 40 + "]" * 40 + "\n", [
            (4, None, None, "nested deeper than 32 levels"),
            (4, None, "rules[0]", "expected a mapping (one rule), got a list")], id="deep-nesting"),
    ],
)  # fmt: skip
def test_rejections(
    text: str, expected: list[tuple[int | None, str | None, str | None, str]]
) -> None:
    """Each problem is one issue with its line, rule id, field and an exact message."""
    assert _issues(text) == expected


def test_all_errors_are_reported_at_once() -> None:
    """One load reports every problem of every rule, not just the first."""
    text = (
        "version: 1\nidentity:\n  trust_domains: [example.org]\n  sources: [xfcc]\n"
        "rules:\n"
        "  - id: a\n    effect: allow\n    hosts: ['h:1']\n    when: {}\n"
        "  - id: B\n    efect: allow\n"
    )
    assert [(line, rule, field) for line, rule, field, _ in _issues(text)] == [
        (4, None, "identity.sources[0]"),
        (8, "a", "hosts[0]"),
        (9, "a", "when"),
        (10, "B", "id"),
        (10, "B", "effect"),
        (11, "B", "efect"),
    ]


def test_foreign_trust_domain_is_reported_despite_other_identity_errors() -> None:
    """A bad `identity.sources` entry does not switch off the trust-domain check of rules."""
    text = (
        HEADER
        + "  sources: [xfcc]\nrules:\n  - id: r\n    effect: allow\n"
        + ("    principals: ['spiffe://evil.org/x']\n")
    )
    assert [(line, field) for line, _, field, _ in _issues(text)] == [
        (4, "identity.sources[0]"),
        (8, "principals"),
    ]


def test_binary_garbage_is_an_issue() -> None:
    """Bytes that are not UTF-8 are reported with their line, never raised raw."""
    with pytest.raises(PolicyError) as raised:
        load_policy_text("version: 1\n\udcff\n")
    assert [(i.line, i.message) for i in raised.value.issues] == [(2, "not valid UTF-8 (byte 11)")]


def test_control_characters_are_an_issue() -> None:
    """PyYAML's reader errors (non-printable characters) carry a line too."""
    assert _issues("version: 1\nidentity: \x07\n") == [
        (2, None, None, "YAML syntax error: unacceptable character #x0007: "
         "special characters are not allowed")
    ]  # fmt: skip


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises_anything_but_policy_error(text: str) -> None:
    """Any input either loads or raises PolicyError: garbage is an issue, not a crash."""
    try:
        load_policy_text(text)
    except PolicyError as e:
        assert e.issues


WHEN_RULE = RULE + "    when:\n"  # conditions from line 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(RULE + "    when: {}\n", [
            (7, "r", "when", "must not be empty (omit 'when' for no conditions)")],
            id="when-empty"),
        pytest.param(RULE + "    when: [schedule]\n", [
            (7, "r", "when", "expected a mapping, got a list")], id="when-list"),
        pytest.param(WHEN_RULE + "      time: {}\n", [
            (8, "r", "when.time", "unknown key 'time' (expected one of: approval, body, expr, "
             "headers, query, rate_limit, schedule)")], id="when-unknown-key"),
        pytest.param(WHEN_RULE + "      rate_limit: {per: 1m}\n", [
            (8, "r", "when.rate_limit.requests", "required (how many requests per 'per')")],
            id="rate-limit-no-requests"),
        pytest.param(WHEN_RULE + "      rate_limit: {requests: 0, per: 1m}\n", [
            (8, "r", "when.rate_limit.requests", "expected a whole number from 1 to 100000, "
             "got '0'")], id="rate-limit-zero"),
        pytest.param(WHEN_RULE + "      rate_limit: {requests: true, per: 1m}\n", [
            (8, "r", "when.rate_limit.requests", "expected a whole number from 1 to 100000, "
             "got 'True'")], id="rate-limit-bool"),
        pytest.param(WHEN_RULE + "      rate_limit: {requests: 5, per: 60}\n", [
            (8, "r", "when.rate_limit.per", "expected a string, got int '60'")],
            id="rate-limit-bare-number"),
        pytest.param(WHEN_RULE + "      rate_limit: {requests: 5, per: 1.5m}\n", [
            (8, "r", "when.rate_limit.per", "duration '1.5m': use e.g. 90s, 15m, 1h30m or 7d")],
            id="rate-limit-bad-duration"),
        pytest.param(WHEN_RULE + "      rate_limit: {requests: 5, per: 1m, key: tenant}\n", [
            (8, "r", "when.rate_limit.key", "expected 'principal', 'rule' or 'header:NAME', "
             "got 'tenant'")], id="rate-limit-bad-key"),
        pytest.param(WHEN_RULE + "      rate_limit: {requests: 5, per: 1m, key: 'header:'}\n", [
            (8, "r", "when.rate_limit.key", "header key 'header:': expected header:NAME with a "
             "valid header name")], id="rate-limit-empty-header"),
        pytest.param(WHEN_RULE + "      approval: {ttl: 15m}\n", [
            (8, "r", "when.approval.approvers", "required (SPIFFE ID patterns of humans)")],
            id="approval-no-approvers"),
        pytest.param(WHEN_RULE + "      approval: {approvers: []}\n", [
            (8, "r", "when.approval.approvers", "needs an approver")], id="approval-empty"),
        pytest.param(WHEN_RULE + "      approval: {approvers: ['spiffe://other.org/h']}\n", [
            (8, "r", "when.approval.approvers", "approver pattern 'spiffe://other.org/h': trust "
             "domain 'other.org' is not in identity.trust_domains")], id="approver-foreign-domain"),
        pytest.param(WHEN_RULE + "      approval: {approvers: ['spiffe://example.org/h'], "
                     "ttl: 30d}\n", [
            (8, "r", "when.approval.ttl", "'30d' is longer than 7d")], id="approval-ttl-too-long"),
        pytest.param(WHEN_RULE + "      approval: {approvers: ['spiffe://example.org/h'], "
                     "ttl: 0s}\n", [
            (8, "r", "when.approval.ttl", "duration '0s' must be positive")],
            id="approval-ttl-zero"),
        pytest.param(HEADER + "rules:\n  - id: r\n    effect: deny\n    when:\n"
                     "      rate_limit: {requests: 1, per: 1m}\n", [
            (8, "r", "when.rate_limit", "rate_limit is for allow rules only")],
            id="rate-limit-on-deny-rule"),
        pytest.param(HEADER + "rules:\n  - id: r\n    effect: allow\n    unauthenticated: true\n"
                     "    when:\n      approval: {approvers: ['spiffe://example.org/h']}\n", [
            (9, "r", "when.approval", "approval needs an identified caller: not with "
             "unauthenticated: true")], id="approval-on-unauthenticated-rule"),
        pytest.param(RULE + "    mcp_tools: search\n", [
            (7, "r", "mcp_tools", "expected a list, got str 'search'")], id="mcp-tools-not-list"),
        pytest.param(WHEN_RULE + "      schedule: {timezone: Nowhere/City}\n"
                     "      expr: 'request.method =='\n", [
            (8, "r", "when.schedule.timezone", "unknown time zone 'Nowhere/City' (expected an IANA "
             "name, e.g. Europe/Berlin)"),
            (9, "r", "when.expr", "CEL compile error: <input>:1:18: Syntax error: mismatched input "
             "'<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, "
             "NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER} | request.method == | "
             ".................^")], id="every-condition-error"),
    ],
)  # fmt: skip
def test_when_rejections(
    text: str, expected: list[tuple[int | None, str | None, str | None, str]]
) -> None:
    """`when` and `mcp_tools` problems are located issues like any other field."""
    assert _issues(text) == expected


def test_when_compiles_into_the_rule() -> None:
    """Every `when` kind and `mcp_tools` compile once, at load, into the rule."""
    text = WHEN_RULE + (
        "      schedule: {timezone: Europe/Berlin, days: [mon], hours: '09:00-17:00'}\n"
        "      headers: {x-task: {present: true}}\n"
        "      query: {dry: {equals: 'true'}}\n"
        "      body: {amount: {lte: 1000}}\n"
        "      expr: 'request.body.currency == \"EUR\"'\n"
        "    mcp_tools: [transfer_funds]\n"
    )
    rule = load_policy_text(text).rules[0]
    assert [c.kind for c in rule.when.stateless] == ["schedule", "headers", "query", "body", "expr"]
    assert rule.when.needs_body
    assert rule.mcp_tools is not None and rule.mcp_tools.texts == ("transfer_funds",)
