"""What the AuthZEN listener refuses to start with, the `authzen` policy section, and the
PDP metadata's addresses."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

from pathlib import Path

import pytest

from authz_server.authzen import AuthzenService, start_authzen
from authz_server.authzen.server import parse_listen
from authz_server.authzen.wellknown import check_public_url, configuration, request_base_url
from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import SnapshotHolder
from authz_server.core.errors import ConfigError, PolicyError
from authz_server.policy.load import load_policy, load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.transport.tls import TlsCredentials, placeholder_certificate
from tests.unit.authzen.support import make_rig

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org]\n"


@pytest.mark.parametrize(
    ("listen", "insecure_local", "tls", "message"),
    [
        pytest.param("0.0.0.0:0", True, False, "refusing plaintext AuthZEN on '0.0.0.0:0'", id="plaintext-any"),
        pytest.param("10.1.2.3:0", True, False, "refusing plaintext", id="plaintext-private"),
        pytest.param("localhost:0", True, False, "refusing plaintext", id="plaintext-name"),
        pytest.param("127.0.0.1:0", False, False, "needs TLS credentials", id="nothing"),
        pytest.param("127.0.0.1:0", True, True, "does not combine with TLS", id="both"),
        pytest.param("127.0.0.1", False, True, "must be HOST:PORT", id="no-port"),
        pytest.param("127.0.0.1:99999", False, True, "must be HOST:PORT", id="port-too-big"),
    ],
)  # fmt: skip
async def test_refused_before_binding(
    listen: str, insecure_local: bool, tls: bool, message: str
) -> None:
    service = AuthzenService(Pipeline(MemoryStore()), SnapshotHolder(), make_rig(HEADER).audit)
    credentials = TlsCredentials(placeholder_certificate()) if tls else None
    with pytest.raises(ConfigError, match=message):
        await start_authzen(listen, service, credentials=credentials, insecure_local=insecure_local)


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        pytest.param("127.0.0.1:8443", ("127.0.0.1", 8443), id="v4"),
        pytest.param("[::1]:0", ("::1", 0), id="v6"),
        pytest.param("0.0.0.0:9443", ("0.0.0.0", 9443), id="any"),
    ],
)  # fmt: skip
def test_parse_listen(listen: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize(
    ("url", "result"),
    [
        pytest.param("https://pdp.example.com", "https://pdp.example.com", id="plain"),
        pytest.param("https://PDP.example.com:8443/", "https://pdp.example.com:8443", id="port-slash"),
        pytest.param("http://pdp.example.com", None, id="http"),
        pytest.param("https://pdp.example.com/tenant1", None, id="path"),
        pytest.param("https://pdp.example.com?x=1", None, id="query"),
        pytest.param("https://pdp.example.com#f", None, id="fragment"),
        pytest.param("https://user@pdp.example.com", None, id="userinfo"),
        pytest.param("pdp.example.com", None, id="no-scheme"),
    ],
)  # fmt: skip
def test_public_url(url: str, result: str | None) -> None:
    if result is None:
        with pytest.raises(ConfigError, match="must be https://HOST"):
            check_public_url(url)
    else:
        assert check_public_url(url) == result


@pytest.mark.parametrize(
    ("secure", "host", "base"),
    [
        pytest.param(True, "pdp.example.com:8443", "https://pdp.example.com:8443", id="name"),
        pytest.param(True, "[::1]:8443", "https://[::1]:8443", id="v6"),
        pytest.param(False, "127.0.0.1:9000", "http://127.0.0.1:9000", id="plaintext"),
        pytest.param(True, None, None, id="no-host"),
        pytest.param(True, "evil.com/path", None, id="path-in-host"),
        pytest.param(True, "a b", None, id="space"),
        pytest.param(True, "x@y", None, id="userinfo"),
    ],
)  # fmt: skip
def test_base_url_from_the_request(secure: bool, host: str | None, base: str | None) -> None:
    assert request_base_url(secure, host) == base


def test_configuration_lists_the_evaluation_endpoints_only() -> None:
    assert configuration("https://pdp.example.com") == {
        "policy_decision_point": "https://pdp.example.com",
        "access_evaluation_endpoint": "https://pdp.example.com/access/v1/evaluation",
        "access_evaluations_endpoint": "https://pdp.example.com/access/v1/evaluations",
    }


def test_policy_section() -> None:
    policy = load_policy_text(
        HEADER + 'authzen:\n  trusted_peps: ["spiffe://example.org/gateways/*"]\n'
    )
    assert [p.text for p in policy.authzen.trusted_peps] == ["spiffe://example.org/gateways/*"]
    assert load_policy_text(HEADER).authzen.trusted_peps == ()
    assert load_policy_text(HEADER + "authzen: {trusted_peps: []}\n").authzen.trusted_peps == ()


@pytest.mark.parametrize(
    ("section", "issues"),
    [
        pytest.param("authzen: [x]\n", ["<string>:4: authzen: expected a mapping"], id="not-a-mapping"),
        pytest.param("authzen:\n  trusted_pep: []\n", ["<string>:5: authzen.trusted_pep: unknown key 'trusted_pep' (expected one of: trusted_peps)"], id="unknown-key"),
        pytest.param("authzen:\n  trusted_peps: spiffe://example.org/gw\n", ["<string>:5: authzen.trusted_peps: expected a list"], id="not-a-list"),
        pytest.param('authzen:\n  trusted_peps: ["spiffe://partner.org/gw"]\n', ["<string>:5: authzen.trusted_peps: principal pattern 'spiffe://partner.org/gw': trust domain 'partner.org' is not in identity.trust_domains"], id="foreign-trust-domain"),
        pytest.param('authzen:\n  trusted_peps: ["example.org/gw"]\n', ["<string>:5: authzen.trusted_peps"], id="not-a-pattern"),
    ],
)  # fmt: skip
def test_policy_section_errors_are_located(section: str, issues: list[str]) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(HEADER + section)
    text = str(caught.value).splitlines()
    assert len(text) == len(issues)
    for line, expected in zip(text, issues, strict=True):
        assert line.startswith(expected), line


def test_policy_section_in_one_file_only(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HEADER + "authzen: {trusted_peps: []}\n")
    (tmp_path / "b.yaml").write_text("version: 1\nauthzen: {trusted_peps: []}\n")
    with pytest.raises(PolicyError, match=r"b\.yaml:2: .*already defined at .*a\.yaml:4"):
        load_policy(tmp_path)
