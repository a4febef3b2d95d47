"""The Check phases in order: path, identity, rules, decision (docs/concepts/request-phases.md,
docs/concepts/identity.md#verification, docs/policy/reference.md#evaluation)."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

import asyncio
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.clock import FixedClock
from authz_server.core.decision import Reason
from authz_server.core.request import RequestView, view_from_check_request
from authz_server.identity.bundles import load_pem_bundles
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.tools import devcerts
from tests.conftest import make_check_request

POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
  require_certificate: {require}
  deny: ["spiffe://example.org/compromised/**"]
defaults:
  decision: {default}
rules:
  - id: open
    paths: ["/open/**"]
    effect: allow
  - id: health
    paths: ["/healthz"]
    unauthenticated: true
    effect: allow
"""

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ALICE = "spiffe://example.org/ops/alice"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out: Path = tmp_path_factory.mktemp("pki")
    # The CA, like the leaves, is valid around the pinned NOW, never around the real time.
    ca = devcerts.mint_ca(
        "example.org", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=365)
    )
    (out / "ca.pem").write_bytes(devcerts.pem(ca.certificate))
    bundles = load_pem_bundles({"example.org": out / "ca.pem"})

    def cert(spiffe_id: str, **kwargs: object) -> str:
        leaf, _ = devcerts.mint_svid(
            ca,
            spiffe_id,
            not_before=NOW - timedelta(hours=1),
            not_after=NOW + timedelta(hours=1),
            **kwargs,  # type: ignore[arg-type]
        )
        return urllib.parse.quote(devcerts.pem(leaf).decode(), safe="")

    return {"bundles": bundles, "cert": cert}


def _decide(
    pki: dict[str, object], view: RequestView, *, require: bool = True, default: str = "deny"
):  # type: ignore[no-untyped-def]
    policy = load_policy_text(POLICY.format(require=str(require).lower(), default=default))
    snapshot = Snapshot(policy, pki["bundles"])  # type: ignore[arg-type]
    return asyncio.run(Pipeline(MemoryStore(), clock=FixedClock(NOW)).evaluate(view, snapshot))


def _view(path: str = "/open/x", principal: str = "", certificate: str = "") -> RequestView:
    return RequestView(
        method="GET", host="h", path=path, principal=principal, certificate=certificate
    )


def test_verified_caller_allowed(pki: dict[str, object]) -> None:
    """A caller with a valid SVID matching its principal is allowed by a rule."""
    decision = _decide(pki, _view(principal=ALICE, certificate=pki["cert"](ALICE)))  # type: ignore[operator]
    assert decision.allowed and decision.rule == "open" and decision.principal == ALICE
    assert decision.identity_source == "peer"


@pytest.mark.parametrize(
    ("principal", "use_cert_of", "path", "require", "reason"),
    [
        pytest.param(ALICE, ALICE, "/open/../x", True, Reason.NON_CANONICAL_PATH, id="path-before-identity"),
        pytest.param("SPIFFE://example.org/ops/alice", None, "/open/x", False, Reason.INVALID_SPIFFE_ID, id="upper-scheme"),
        pytest.param("spiffe://example.org/ops/alice\n", None, "/open/x", False, Reason.INVALID_SPIFFE_ID, id="trailing-newline"),
        pytest.param("orders.internal", None, "/open/x", False, Reason.INVALID_SPIFFE_ID, id="dns-san-principal"),
        pytest.param("spiffe://partner.org/ops/alice", None, "/open/x", False, Reason.UNTRUSTED_TRUST_DOMAIN, id="foreign-trust-domain"),
        pytest.param(ALICE, None, "/open/x", True, Reason.CERTIFICATE_REQUIRED, id="certificate-required"),
        pytest.param(ALICE, "spiffe://example.org/ops/bob", "/open/x", True, Reason.CERTIFICATE_MISMATCH, id="certificate-of-someone-else"),
        pytest.param("spiffe://example.org/compromised/x", "spiffe://example.org/compromised/x", "/open/x", True, Reason.REVOKED, id="revoked"),
        pytest.param("", None, "/open/x", True, Reason.NO_IDENTITY, id="no-identity"),
    ],
)  # fmt: skip
def test_identity_failures(
    pki: dict[str, object],
    principal: str,
    use_cert_of: str | None,
    path: str,
    require: bool,
    reason: Reason,
) -> None:
    """Each identity problem denies with its own reason code, before any rule applies."""
    certificate = pki["cert"](use_cert_of) if use_cert_of else ""  # type: ignore[operator]
    decision = _decide(pki, _view(path, principal, certificate), require=require)
    assert not decision.allowed
    assert decision.reason is reason


def test_two_uri_sans_refused(pki: dict[str, object]) -> None:
    """A certificate with two URI SANs is not an X509-SVID, whatever Envoy reported."""
    certificate = pki["cert"](ALICE, extra_uris=["spiffe://example.org/ops/bob"])  # type: ignore[operator]
    decision = _decide(pki, _view(principal=ALICE, certificate=certificate))
    assert decision.reason is Reason.CERTIFICATE_INVALID


def test_anonymous_not_allowed_by_default_allow(pki: dict[str, object]) -> None:
    """`defaults.decision: allow` never admits a caller without identity."""
    decision = _decide(pki, _view(), require=False, default="allow")
    assert decision.reason is Reason.NO_IDENTITY


def test_anonymous_allowed_by_unauthenticated_rule(pki: dict[str, object]) -> None:
    """Only `unauthenticated: true` rules admit an anonymous caller."""
    decision = _decide(pki, _view("/healthz"))
    assert decision.allowed and decision.rule == "health" and decision.principal is None


WEEKDAY = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # a Thursday, 11:00 in Berlin
TRANSFER = b'{"amount": 10, "destination": {"country": "DE"}}'
BODY_POLICY = """\
version: 1
identity:
  trust_domains: [example.org]
rules:
  - id: transfers
    methods: [POST]
    paths: ["/v1/transfers"]
    effect: allow
    when:
      body: {amount: {lte: 1000}, destination.country: {in: [DE, FR]}}
      schedule: {timezone: Europe/Berlin, days: [mon, tue, wed, thu, fri], hours: "09:00-17:00"}
"""


def _body_request(field: str, body: bytes, headers: dict[str, str] | None = None) -> RequestView:
    request = make_check_request(
        method="POST",
        path="/v1/transfers",
        principal=ALICE,
        headers={"content-type": "application/json", **(headers or {})},
    )
    http = request.attributes.request.http
    if field == "raw_body":
        http.raw_body = body
    else:
        http.body = body.decode("utf-8")
    return view_from_check_request(request)


@pytest.mark.parametrize("field", ["raw_body", "body"])
@pytest.mark.parametrize(
    ("body", "headers", "at", "reason"),
    [
        pytest.param(TRANSFER, {}, WEEKDAY, Reason.ALLOWED_BY_RULE, id="allowed"),
        pytest.param(TRANSFER.replace(b"DE", b"US"), {}, WEEKDAY, Reason.CONDITION_FAILED,
                     id="wrong-country"),
        pytest.param(TRANSFER, {"x-envoy-auth-partial-body": "true"}, WEEKDAY,
                     Reason.BODY_UNAVAILABLE, id="partial"),
        pytest.param(TRANSFER.replace(b"{", b'{"amount": 99999, ', 1), {}, WEEKDAY,
                     Reason.BODY_UNAVAILABLE, id="duplicate-key"),
        pytest.param(TRANSFER, {"content-type": "text/plain"}, WEEKDAY, Reason.BODY_UNAVAILABLE,
                     id="not-json-type"),
        pytest.param(TRANSFER, {}, datetime(2026, 11, 29, 20, 0, tzinfo=UTC),
                     Reason.OUTSIDE_SCHEDULE, id="sunday-evening"),
    ],
)  # fmt: skip
def test_body_conditions_from_either_check_request_field(
    field: str, body: bytes, headers: dict[str, str], at: datetime, reason: Reason
) -> None:
    """Envoy's `raw_body` (pack_as_bytes) and `body` (UTF-8 string) are judged alike."""
    snapshot = Snapshot(load_policy_text(BODY_POLICY), load_pem_bundles({}))
    view = _body_request(field, body, headers)
    decision = asyncio.run(Pipeline(MemoryStore(), clock=FixedClock(at)).evaluate(view, snapshot))
    assert decision.reason is reason
    assert decision.rule == "transfers"


def test_the_pipeline_clock_is_the_schedule_clock() -> None:
    """Conditions see the pipeline's clock (docs/policy/conditions.md#schedule: server clock; `check
    --at` sets it)."""
    snapshot = Snapshot(load_policy_text(BODY_POLICY), load_pem_bundles({}))
    view = _body_request("raw_body", b'{"amount": 1, "destination": {"country": "FR"}}')
    thursday = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)  # 10:30 in Berlin
    decision = asyncio.run(
        Pipeline(MemoryStore(), clock=FixedClock(thursday)).evaluate(view, snapshot)
    )
    assert decision.allowed


DRY_RUN_POLICY = """\
version: 1
identity: {trust_domains: [example.org]}
rules:
  - id: open
    paths: ["/open/**"]
    effect: allow
  - id: freeze
    paths: ["/open/frozen"]
    effect: deny
    mode: dry_run
"""


def test_dry_run_decision_names_the_granting_rule_upstream(pki: dict[str, object]) -> None:
    """A dry-run deny over an enforced allow is recorded as the deny, and the upstream's
    x-authz-rule names the rule that grants the request."""
    from authz_server.check.response import render_check_response

    snapshot = Snapshot(load_policy_text(DRY_RUN_POLICY), pki["bundles"])  # type: ignore[arg-type]
    view = _view("/open/frozen", ALICE)
    decision = asyncio.run(Pipeline(MemoryStore(), clock=FixedClock(NOW)).evaluate(view, snapshot))
    assert (decision.verdict, decision.reason, decision.rule) == (
        "deny",
        Reason.DENIED_BY_RULE,
        "freeze",
    )
    assert (decision.dry_run, decision.enforced_allow, decision.enforced_rule) == (
        True,
        True,
        "open",
    )
    headers = render_check_response(decision).ok_response.headers
    assert {h.header.key: h.header.value for h in headers}["x-authz-rule"] == "open"
