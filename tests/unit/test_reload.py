"""Reload building blocks: fingerprints, bundle composition, readiness."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authz_server.identity.bundles import DomainBundle, TrustBundles
from authz_server.policy.load import load_policy_text
from authz_server.runtime.reload import compose_bundles, fingerprint, readiness_problem
from authz_server.tools.devcerts import mint_ca

OURS, PARTNER = mint_ca("example.org"), mint_ca("partner.org")


def _configmap(root: Path, text: str, version: str) -> None:
    (root / version).mkdir()
    (root / version / "policy.yaml").write_text(text)
    (root / "..tmp").symlink_to(version)
    os.replace(root / "..tmp", root / "..data")
    if not (root / "policy.yaml").is_symlink():
        (root / "policy.yaml").symlink_to("..data/policy.yaml")


def _rename_over(root: Path) -> None:
    (root / ".new").write_text("a: 1\n")  # same size and content, new inode
    os.replace(root / ".new", root / "policy.yaml")


CHANGES: list[object] = [
    pytest.param(lambda r: (r / "policy.yaml").write_text("a: 22\n"), "file", id="content-edit"),
    pytest.param(_rename_over, "file", id="renamed-over-same-content"),
    pytest.param(lambda r: (r / "policy.yaml").unlink(), "file", id="deleted"),
    pytest.param(lambda r: (r / "extra.yml").write_text("b: 2\n"), "dir", id="file-added-to-dir"),
    pytest.param(lambda r: _configmap(r, "a: 1\n", "..v2"), "dir", id="configmap-swap-dir"),
    pytest.param(lambda r: _configmap(r, "a: 1\n", "..v2"), "link", id="configmap-swap-file"),
]


@pytest.mark.parametrize(("change", "watched"), CHANGES)
def test_fingerprint_sees_every_kind_of_change(
    tmp_path: Path, change: Callable[[Path], None], watched: str
) -> None:
    """Edits, renames, deletions, new files and `..data` swaps (same bytes) all change it."""
    if watched == "file":
        (tmp_path / "policy.yaml").write_text("a: 1\n")
    else:
        _configmap(tmp_path, "a: 1\n", "..v1")
    target = (
        str(tmp_path / "policy.yaml")
        if watched == "link"
        else str(tmp_path if watched == "dir" else tmp_path / "policy.yaml")
    )
    before = fingerprint(target)
    assert fingerprint(target) == before  # stable when nothing changes
    change(tmp_path)
    assert fingerprint(target) != before


def test_fingerprint_ignores_hidden_and_other_files(tmp_path: Path) -> None:
    """Files the loader never reads (hidden, not *.yaml) do not trigger a reload."""
    (tmp_path / "policy.yaml").write_text("a: 1\n")
    before = fingerprint(str(tmp_path))
    (tmp_path / ".swp").write_text("x")
    (tmp_path / "README.md").write_text("x")
    assert fingerprint(str(tmp_path)) == before


def test_files_win_over_the_workload_api() -> None:
    """A `--trust-bundle` file decides its domain; other Workload API domains are kept."""
    other = mint_ca("example.org")
    bundles = compose_bundles(
        {"example.org": DomainBundle((OURS.certificate,))},
        {"example.org": (other.certificate,), "partner.org": (PARTNER.certificate,)},
    )
    assert bundles.authorities["example.org"] == (OURS.certificate,)
    assert bundles.authorities["partner.org"] == (PARTNER.certificate,)


K_FILE, K_WAPI, K_PARTNER = (ec.generate_private_key(ec.SECP256R1()).public_key() for _ in "abc")


@pytest.mark.parametrize(
    ("files", "workload_jwt", "expected"),
    [
        pytest.param({}, {"example.org": {"w": K_WAPI}}, {"example.org": {"w"}}, id="wapi-only"),
        pytest.param(
            {"example.org": DomainBundle((), {"f": K_FILE})},
            {"example.org": {"w": K_WAPI}, "partner.org": {"p": K_PARTNER}},
            {"example.org": {"f"}, "partner.org": {"p"}},
            id="file-wins-for-its-domain",
        ),
        pytest.param(
            {"example.org": DomainBundle((OURS.certificate,))},
            {"example.org": {"w": K_WAPI}},
            {},
            id="pem-file-leaves-no-jwt-keys",
        ),
        pytest.param({}, {"example.org": {}}, {}, id="empty-set-distrusts"),
        pytest.param({}, None, {}, id="nothing-yet"),
    ],
)
def test_jwt_keys_compose_like_x509(
    files: dict[str, DomainBundle],
    workload_jwt: dict[str, dict[str, object]] | None,
    expected: dict[str, set[str]],
) -> None:
    """JWT keys from the Workload API count per trust domain unless a `--trust-bundle` file
    names that domain; the file then decides, even when it holds no JWT keys."""
    bundles = compose_bundles(files, None, workload_jwt)  # type: ignore[arg-type]
    assert {td: set(keys) for td, keys in bundles.jwt_authorities.items()} == expected


POLICY = """\
version: 1
identity: {trust_domains: [example.org, partner.org], require_certificate: %s}
rules: []
"""


@pytest.mark.parametrize(
    ("require", "authorities", "options", "problem"),
    [
        pytest.param("true", {}, {}, "no trust bundle for any trust domain", id="none"),
        pytest.param("true", {"example.org": ()}, {}, "no trust bundle", id="only-distrusted"),
        pytest.param("true", {"partner.org": (PARTNER.certificate,)}, {}, None, id="one-of-two"),
        pytest.param("false", {}, {}, None, id="certificates-not-required"),
        pytest.param(
            "false", {}, {"needs_bundles": True}, "no trust bundle", id="workload-api-configured"
        ),
        pytest.param(
            "false", {}, {"waiting": True}, "waiting for the first Workload API", id="waiting"
        ),
    ],
)
def test_readiness(
    require: str,
    authorities: dict[str, tuple[object, ...]],
    options: dict[str, bool],
    problem: str | None,
) -> None:
    """Not ready without any usable bundle for the policy when bundles are needed; a
    single distrusted partner does not make the server unready."""
    policy = load_policy_text(POLICY % require)
    result = readiness_problem(policy, TrustBundles(authorities), **options)  # type: ignore[arg-type]
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result
