"""The registry of identity sources: every row parses its section and resolves, and the
loader and the resolver know exactly the registered sources."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from authz_server.core.decision import Reason
from authz_server.core.errors import PolicyError
from authz_server.core.request import RequestView
from authz_server.identity.model import IdentityConfig
from authz_server.identity.registry import SOURCES
from authz_server.identity.resolve import IdentityFailure, IdentityResolver
from authz_server.identity.x509 import CertificateVerifier
from authz_server.policy.load import load_policy_text
from tests.unit.identity.sources_support import (
    FRONTEND,
    GATEWAY,
    NOW,
    World,
    jwt,
    svid,
    url_pem,
    xfcc,
)

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org, partner.org]\n"  # lines 1-3

#: A valid `identity.<name>` section for each source that takes one.
SECTIONS = {
    "xfcc": "{trusted_proxies: ['spiffe://example.org/gateway/*']}",
    "jwt_svid": "{audiences: [orders]}",
}

Headers = Callable[[World], dict[str, str]]

#: For each source, the headers of a request from GATEWAY (with its certificate) carrying
#: that source's credential, and the SPIFFE ID the source finds in it.
CREDENTIALS: dict[str, tuple[Headers, str]] = {
    "peer": (lambda w: {}, GATEWAY),
    "xfcc": (lambda w: {"x-forwarded-client-cert": xfcc(FRONTEND)}, FRONTEND),
    "jwt_svid": (lambda w: {"authorization": f"Bearer {jwt(w.keys.ours['ours-es256'])}"}, FRONTEND),
}


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _policy(name: str) -> str:
    text = HEADER + f"  sources: [{name}]\n"
    if name in SECTIONS:
        text += f"  {name}: {SECTIONS[name]}\n"
    return text


def _view(world: World, headers: dict[str, str]) -> RequestView:
    certificate = url_pem(svid(world.ours, GATEWAY))
    return RequestView(
        method="GET",
        host="orders.internal",
        path="/",
        headers=headers,
        principal=GATEWAY,
        certificate=certificate,
    )


def test_the_tables_here_cover_the_registry() -> None:
    """A new source comes with a section sample and a credential here, or this fails."""
    with_section = {name for name, kind in SOURCES.items() if kind.section is not None}
    assert set(SECTIONS) == with_section
    assert set(CREDENTIALS) == set(SOURCES)
    assert all(kind.name == name for name, kind in SOURCES.items())


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_source_parses_its_section_and_resolves(world: World, name: str) -> None:
    """Listed alone, each registered source loads from its section and identifies a caller."""
    identity = load_policy_text(_policy(name), "p.yaml").identity
    assert identity.sources == (name,)
    assert (name in identity.settings) is (SOURCES[name].section is not None)
    headers, expected = CREDENTIALS[name]
    resolution = IdentityResolver(CertificateVerifier()).resolve(
        _view(world, headers(world)), identity, world.bundles, NOW
    )
    assert resolution.identity is not None
    assert (resolution.identity.source, str(resolution.identity.spiffe_id)) == (name, expected)


@pytest.mark.parametrize("name", [n for n, kind in SOURCES.items() if kind.section is not None])
def test_a_listed_source_without_its_section_is_located(name: str) -> None:
    """The loader names the setting the source requires, at the list item."""
    with pytest.raises(PolicyError) as raised:
        load_policy_text(HEADER + f"  sources: [{name}]\n", "p.yaml")
    section = SOURCES[name].section
    assert section is not None
    assert [(i.file, i.line, i.field, i.message) for i in raised.value.issues] == [
        (
            "p.yaml",
            4,
            "identity.sources[0]",
            f"source {name!r} needs identity.{name}.{section.requires}",
        )
    ]


def test_an_unknown_source_is_a_located_error_listing_the_known_ones() -> None:
    """`identity.sources: [mtls]` fails at its line, naming every registered source."""
    with pytest.raises(PolicyError) as raised:
        load_policy_text(HEADER + "  sources: [peer, mtls]\n", "p.yaml")
    known = ", ".join(SOURCES)
    assert known == "peer, xfcc, jwt_svid"
    message = f"unknown source 'mtls' (expected one of: {known})"
    assert [(i.line, i.field, i.message) for i in raised.value.issues] == [
        (4, "identity.sources[1]", message)
    ]
    assert f"p.yaml:4: identity.sources[1]: {message}" in str(raised.value)


def test_a_source_without_settings_takes_no_section() -> None:
    """`identity.peer` is no key of the identity section: only sources with settings add one."""
    with pytest.raises(PolicyError) as raised:
        load_policy_text(HEADER + "  peer: {}\n", "p.yaml")
    (issue,) = raised.value.issues
    assert (issue.line, issue.field) == (4, "identity.peer")
    assert issue.message.startswith("unknown key 'peer' (expected one of: deny, jwt_svid,")


BROKEN: list[Any] = [
    pytest.param(IdentityConfig(frozenset({"example.org"}), ("mtls",)), id="unregistered-source"),
    pytest.param(IdentityConfig(frozenset({"example.org"}), ("xfcc",)), id="source-without-settings"),
]  # fmt: skip


@pytest.mark.parametrize("config", BROKEN)
def test_the_resolver_fails_closed_on_a_config_the_loader_would_refuse(
    world: World, config: IdentityConfig
) -> None:
    """Built by hand past the loader, such a config denies every request, never crashes."""
    view = _view(world, {"x-forwarded-client-cert": xfcc(FRONTEND)})
    with pytest.raises(IdentityFailure) as raised:
        IdentityResolver(CertificateVerifier()).resolve(view, config, world.bundles, NOW)
    assert raised.value.reason is Reason.NO_IDENTITY
    assert raised.value.source == config.sources[0]
