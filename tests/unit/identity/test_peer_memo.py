"""The resolver reuses a verified peer identity only while everything it rested on holds:
the same identity settings and bundles, the certificate's validity window, a cache."""

from __future__ import annotations

from datetime import timedelta

import pytest

from authz_server.core.decision import Reason
from authz_server.core.request import RequestView
from authz_server.identity import resolve as resolve_module
from authz_server.identity.resolve import IdentityFailure, IdentityResolver
from authz_server.identity.x509 import CertificateVerifier
from tests.unit.identity.sources_support import (
    FRONTEND,
    HOUR,
    NOW,
    World,
    identity_config,
    svid,
    url_pem,
)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _view(world: World, principal: str = FRONTEND, **kwargs: object) -> RequestView:
    return RequestView(
        method="GET",
        host="orders.internal",
        path="/v1/orders",
        principal=principal,
        certificate=url_pem(svid(world.ours, principal, **kwargs)),
    )


def _lookups(verifier: CertificateVerifier) -> int:
    info = verifier.cache_info()
    return info.hits + info.misses


def test_the_same_peer_is_verified_once(world: World) -> None:
    verifier = CertificateVerifier()
    resolver = IdentityResolver(verifier)
    view, config = _view(world), identity_config()
    first = resolver.resolve(view, config, world.bundles, NOW)
    again = resolver.resolve(view, config, world.bundles, NOW + HOUR / 2)
    assert again is first
    assert first.identity is not None and str(first.identity.spiffe_id) == FRONTEND
    assert _lookups(verifier) == 1


def test_not_past_the_certificate_window(world: World) -> None:
    """Kept within the window only: a second past not_after it is verified again, and fails."""
    resolver = IdentityResolver(CertificateVerifier())
    view, config = _view(world), identity_config()
    resolver.resolve(view, config, world.bundles, NOW)
    with pytest.raises(IdentityFailure) as failed:
        resolver.resolve(view, config, world.bundles, NOW + HOUR + timedelta(seconds=1))
    assert failed.value.reason is Reason.CERTIFICATE_INVALID


def test_not_before_the_certificate_window(world: World) -> None:
    resolver = IdentityResolver(CertificateVerifier())
    view, config = _view(world, not_before=NOW - HOUR / 2), identity_config()
    resolver.resolve(view, config, world.bundles, NOW)
    with pytest.raises(IdentityFailure):
        resolver.resolve(view, config, world.bundles, NOW - HOUR * 3 / 4)


def test_new_identity_settings_judge_again(world: World) -> None:
    """A reloaded policy that denies the caller is applied at once."""
    resolver = IdentityResolver(CertificateVerifier())
    view = _view(world)
    resolver.resolve(view, identity_config(), world.bundles, NOW)
    with pytest.raises(IdentityFailure) as failed:
        resolver.resolve(view, identity_config(deny=(FRONTEND,)), world.bundles, NOW)
    assert failed.value.reason is Reason.REVOKED


def test_new_bundles_verify_again(world: World) -> None:
    """Bundles that no longer hold the issuing CA refuse the caller at once."""
    resolver = IdentityResolver(CertificateVerifier())
    view, config = _view(world), identity_config()
    resolver.resolve(view, config, world.bundles, NOW)
    without_ours = world.keys.bundles({"example.org": (world.stranger.certificate,)})
    with pytest.raises(IdentityFailure) as failed:
        resolver.resolve(view, config, without_ours, NOW)
    assert failed.value.reason is Reason.CERTIFICATE_INVALID


def test_nothing_is_kept_without_a_certificate_cache(world: World) -> None:
    verifier = CertificateVerifier(cache_size=0)
    resolver = IdentityResolver(verifier)
    view, config = _view(world), identity_config()
    for _ in range(3):
        resolver.resolve(view, config, world.bundles, NOW)
    assert verifier.cache_info().misses == 3


def test_nothing_is_kept_unless_the_peer_comes_first(world: World) -> None:
    verifier = CertificateVerifier()
    resolver = IdentityResolver(verifier)
    view, config = _view(world), identity_config(sources=("xfcc", "peer"))
    for _ in range(3):
        resolver.resolve(view, config, world.bundles, NOW)
    assert _lookups(verifier) == 3


def test_a_failure_is_never_kept(world: World) -> None:
    """A certificate for another ID fails every time, however often it is sent."""
    resolver = IdentityResolver(CertificateVerifier())
    forged = RequestView(
        method="GET",
        host="h",
        path="/",
        principal=FRONTEND,
        certificate=url_pem(svid(world.ours, "spiffe://example.org/ns/shop/sa/other")),
    )
    for _ in range(2):
        with pytest.raises(IdentityFailure) as failed:
            resolver.resolve(forged, identity_config(), world.bundles, NOW)
        assert failed.value.reason is Reason.CERTIFICATE_MISMATCH


def test_the_memo_is_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Full, it is emptied at once: the next caller is verified afresh."""
    monkeypatch.setattr(resolve_module, "PEER_MEMO_SIZE", 2)
    verifier = CertificateVerifier()
    resolver = IdentityResolver(verifier)
    config = identity_config()
    views = [_view(world, f"spiffe://example.org/ns/shop/sa/app{i}") for i in range(3)]
    for view in views:
        resolver.resolve(view, config, world.bundles, NOW)
    assert _lookups(verifier) == 3
    resolver.resolve(views[2], config, world.bundles, NOW)  # kept after the clear
    assert _lookups(verifier) == 3
    resolver.resolve(views[0], config, world.bundles, NOW)  # forgotten by the clear
    assert _lookups(verifier) == 4
