"""Store revocations in the identity phase: the caller, and the proxy that vouches for it."""

from __future__ import annotations

import pytest

from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.clock import FixedClock
from authz_server.core.decision import Reason
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.policy.load import load_policy_text
from authz_server.state import open_store
from tests.unit.identity.sources_support import (
    ADMIN,
    FRONTEND,
    GATEWAY,
    NOW,
    ca,
    svid,
    url_pem,
    xfcc,
)

POLICY = f"""\
version: 1
identity:
  trust_domains: [example.org]
  sources: [xfcc, peer]
  xfcc: {{trusted_proxies: ["{GATEWAY}"]}}
rules:
  - id: open
    paths: ["/open"]
    effect: allow
"""


AUTHORITY = ca("example.org")
BUNDLES = TrustBundles({"example.org": (AUTHORITY.certificate,)})


def _view(peer: str, forwarded: str | None = None) -> RequestView:
    """A request whose mTLS peer is `peer` (with its certificate), maybe forwarding XFCC."""
    headers = {"x-forwarded-client-cert": xfcc(forwarded)} if forwarded else {}
    certificate = url_pem(svid(AUTHORITY, peer))
    return RequestView(
        method="GET",
        host="h",
        path="/open",
        headers=headers,
        principal=peer,
        certificate=certificate,
    )


@pytest.mark.parametrize(
    ("revoked", "view", "reason", "principal"),
    [
        pytest.param(None, _view(GATEWAY, FRONTEND), Reason.ALLOWED_BY_RULE, FRONTEND, id="nothing-revoked"),
        pytest.param(FRONTEND, _view(GATEWAY, FRONTEND), Reason.REVOKED, FRONTEND, id="forwarded-caller-revoked"),
        pytest.param(GATEWAY, _view(GATEWAY, FRONTEND), Reason.REVOKED, GATEWAY, id="vouching-proxy-revoked"),
        pytest.param(GATEWAY, _view(ADMIN), Reason.ALLOWED_BY_RULE, ADMIN, id="other-callers-unaffected"),
    ],
)  # fmt: skip
async def test_revocations(
    revoked: str | None, view: RequestView, reason: Reason, principal: str
) -> None:
    """A revoked caller is refused, and so is anyone a revoked trusted proxy vouches for."""
    store = open_store("memory", clock=FixedClock(NOW))
    if revoked:
        await store.revoke(revoked, 600, "incident", ADMIN)
    pipeline = Pipeline(clock=FixedClock(NOW), store=store)
    snapshot = Snapshot(load_policy_text(POLICY), BUNDLES)
    decision = await pipeline.evaluate(view, snapshot)
    assert (decision.reason, decision.principal) == (reason, principal)
