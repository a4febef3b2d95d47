"""Properties that must hold for every input, not just the ones we thought of (Hypothesis).

- Neither rule order nor file order changes a decision, for random policies and requests.
- A path passes the canonical check exactly when RFC 3986 dot-segment removal, slash
  merging and decoding of what may not be encoded (unreserved characters, `/`, `\\`)
  leave it unchanged and it holds no forbidden character: everything else is refused.
  (Decoding *all* escapes would turn data such as `%3F` or `%25` into syntax, so only
  these are required to be fixed points.)
- The SPIFFE ID parser accepts exactly the standard's grammar, checked against an
  independent reference on adversarial near-misses.
- The policy loader and the Check handler never raise on arbitrary input: random YAML
  trees, mutated policies, random CheckRequests and random bytes.

The XFCC header parser's never-raises and round-trip properties live beside its unit
tests, in tests/unit/identity/test_xfcc.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import tempfile
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from envoy.service.auth.v3 import external_auth_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authz_server.audit.log import MemoryAudit
from authz_server.check.pipeline import Pipeline
from authz_server.check.service import CheckService
from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.core.clock import FixedClock
from authz_server.core.decision import STATUS_BY_REASON, Reason
from authz_server.core.errors import IdentityError, PolicyError
from authz_server.core.paths import canonical_path_problem
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.spiffe_id import parse_spiffe_id
from authz_server.policy.load import load_policy, load_policy_text
from authz_server.policy.model import Policy
from authz_server.state.memory import MemoryStore
from tests.security import corpus
from tests.security.properties_strategies import (
    ADVERSARIAL_IDS,
    CHECK_REQUESTS,
    PATHS,
    POLICY_TREES,
    REQUESTS,
    RULES,
    mutate_policy,
)

# --- rule order -----------------------------------------------------------------------------

HEADER: dict[str, Any] = {
    "version": 1,
    "identity": {"trust_domains": ["example.org"]},
    "defaults": {"decision": "deny"},
}
#: A Wednesday at 10:00 UTC: inside the generated `wed` schedule, outside the `sat` one.
AT = FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))


class _Dumper(yaml.SafeDumper):
    """Writes shared values out in full: policy files refuse YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def _header(mode: str) -> dict[str, Any]:
    return {**HEADER, "defaults": {**HEADER["defaults"], "mode": mode}}


def _policy_text(rules: list[dict[str, Any]], mode: str = "enforce") -> str:
    return _dump({**_header(mode), "rules": rules})


def _load_dir(files: list[list[dict[str, Any]]], mode: str) -> Policy | PolicyError:
    with tempfile.TemporaryDirectory() as folder:
        for i, rules in enumerate(files):
            first = {**_header(mode), "rules": rules}
            document = first if i == 0 else {"version": 1, "rules": rules}
            (Path(folder) / f"{i:02d}.yaml").write_text(_dump(document))
        try:
            return load_policy(folder)
        except PolicyError as error:
            return error


def _load(text: str) -> Policy | PolicyError:
    try:
        return load_policy_text(text)
    except PolicyError as error:
        return error


async def _decide_all(policy: Policy, requests: list[RequestView]) -> list[tuple[object, ...]]:
    pipeline = Pipeline(MemoryStore(AT), clock=AT)
    snapshot = Snapshot(policy, TrustBundles.empty())
    out: list[tuple[object, ...]] = []
    for view in requests:
        d = await pipeline.evaluate(view, snapshot)
        out.append((d.allowed, d.reason, d.rule, d.dry_run, d.enforced_rule))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    RULES,
    st.lists(REQUESTS, min_size=1, max_size=12),
    st.randoms(use_true_random=False),
    st.sampled_from(["enforce", "dry_run"]),
)
def test_rule_and_file_order_never_change_a_decision(
    rules: list[dict[str, Any]], requests: list[RequestView], rng: random.Random, mode: str
) -> None:
    """The same rules, shuffled or spread over files in another order, decide alike, under
    either `defaults.mode`."""
    reference = _load(_policy_text(rules, mode))
    shuffled_rules = rules[:]
    rng.shuffle(shuffled_rules)
    cut = rng.randrange(len(rules) + 1)
    variants = [
        _load(_policy_text(shuffled_rules, mode)),
        _load_dir([shuffled_rules[:cut], shuffled_rules[cut:]], mode),
    ]
    if isinstance(reference, PolicyError):
        # Whether a policy is valid does not depend on order either.
        assert all(isinstance(v, PolicyError) for v in variants)
        return
    expected = asyncio.run(_decide_all(reference, requests))
    for variant in variants:
        assert isinstance(variant, Policy), variant
        assert asyncio.run(_decide_all(variant, requests)) == expected


# --- canonical paths ----------------------------------------------------------------------------

_UNRESERVED_OR_SEPARATOR = re.compile(r"[A-Za-z0-9\-._~/\\]")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, written out as the RFC does."""
    source, output = path, ""
    while source:
        if source.startswith("../"):
            source = source[3:]
        elif source.startswith("./"):
            source = source[2:]
        elif source.startswith("/./"):
            source = "/" + source[3:]
        elif source == "/.":
            source = "/"
        elif source.startswith("/../"):
            source = "/" + source[4:]
            output = output[: output.rfind("/")] if "/" in output else ""
        elif source == "/..":
            source = "/"
            output = output[: output.rfind("/")] if "/" in output else ""
        elif source in (".", ".."):
            source = ""
        else:
            start = 1 if source.startswith("/") else 0
            end = source.find("/", start)
            end = len(source) if end == -1 else end
            output, source = output + source[:end], source[end:]
    return output


def _decode_required(path: str) -> str:
    def one(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if _UNRESERVED_OR_SEPARATOR.fullmatch(char) else m.group(0)

    return re.sub(r"%([0-9A-Fa-f]{2})", one, path)


def _reference_canonical(path: str) -> bool:
    if not path.startswith("/"):
        return False
    if any(not ("!" <= c <= "~") or c in "\\;#" for c in path):
        return False  # whitespace, controls, non-ASCII, and what backends read as syntax
    if re.search(r"%(?![0-9A-Fa-f]{2})", path):
        return False
    normalized = re.sub("/{2,}", "/", _remove_dot_segments(_decode_required(path)))
    return normalized == path


@settings(max_examples=1500)
@given(PATHS)
@example("/a/%2e%2e/b")
@example("/a/b/..")
@example("/a/.../b")
@example("/%7Euser")
@example("/a%2Fb")
def test_canonical_check_accepts_exactly_the_normalised_paths(path: str) -> None:
    """Accepted ⟺ a fixed point of normalisation without forbidden characters."""
    assert (canonical_path_problem(path) is None) == _reference_canonical(path), path


# --- SPIFFE IDs --------------------------------------------------------------------------------

_REFERENCE_ID = re.compile(r"spiffe://([a-z0-9._-]+)((?:/[a-zA-Z0-9._-]+)*)")


def _reference_spiffe_id(text: str) -> bool:
    """The SPIFFE ID standard, section 2, as an independent check."""
    if len(text.encode("utf-8", "surrogatepass")) > 2048:
        return False
    match = _REFERENCE_ID.fullmatch(text)
    if match is None:
        return False
    trust_domain, path = match.groups()
    if len(trust_domain) > 255:
        return False
    return all(segment not in (".", "..") for segment in path.split("/")[1:])


@settings(max_examples=1500)
@given(st.one_of(ADVERSARIAL_IDS, st.text(max_size=60)))
@example("spiffe://" + "a" * 255)
@example("spiffe://" + "a" * 256)
@example("spiffe://example.org/" + "a" * (2048 - 21))
@example("spiffe://example.org/" + "a" * (2049 - 21))
@example("spiffe://example.org/a\n")
def test_spiffe_parser_accepts_exactly_the_standard_grammar(text: str) -> None:
    """parse_spiffe_id succeeds exactly on IDs the standard's grammar admits."""
    try:
        parsed = parse_spiffe_id(text)
    except IdentityError as error:
        assert error.reason is Reason.INVALID_SPIFFE_ID
        assert not _reference_spiffe_id(text), text
    else:
        assert _reference_spiffe_id(text), text
        assert str(parsed) == text


# --- never raises ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(POLICY_TREES, mutate_policy(corpus.POLICY)))
def test_policy_loader_never_raises_on_random_yaml(tree: Any) -> None:
    """Any YAML document loads or is refused with located issues, never a crash."""
    text = _dump(tree)
    try:
        policy = load_policy_text(text)
    except PolicyError as error:
        assert error.issues
        assert all(str(issue) for issue in error.issues)
    else:
        assert isinstance(policy, Policy)


#: The corpus policy plus an anonymous grant, so that random requests can be allowed.
OPEN_RULE = """\
  - id: open
    paths: ["/open/**"]
    unauthenticated: true
    effect: allow
"""


def _service() -> CheckService:
    policy = load_policy_text(corpus.POLICY + OPEN_RULE)
    holder = SnapshotHolder(Snapshot(policy, TrustBundles.empty()))
    return CheckService(Pipeline(MemoryStore()), holder, MemoryAudit())


_SERVICE = _service()


def _check(data: bytes) -> tuple[Any, dict[str, Any]]:
    audit: MemoryAudit = _SERVICE.audit  # type: ignore[assignment]
    before = len(audit.records)
    raw = asyncio.run(_SERVICE.check_bytes(data))
    response = external_auth_pb2.CheckResponse.FromString(raw)
    assert len(audit.records) == before + 1, "exactly one audit record per decision"
    return response, audit.records[-1]


@settings(max_examples=400, deadline=None)
@given(st.one_of(CHECK_REQUESTS.map(lambda r: r.SerializeToString()), st.binary(max_size=300)))
def test_check_never_raises_and_never_allows_a_non_canonical_path(data: bytes) -> None:
    """Any bytes get a well-formed CheckResponse, one audit record, and a coherent status."""
    response, record = _check(data)
    if response.status.code == 0:
        assert response.HasField("ok_response")
        assert record["decision"] == "allow"
        assert canonical_path_problem(record["path"]) is None
        return
    body = json.loads(response.denied_response.body)
    reason = Reason(body["reason"])
    assert (response.status.code, response.denied_response.status.code) == STATUS_BY_REASON[reason]
    assert record["reason"] == reason.value
    assert reason is not Reason.INTERNAL_ERROR, "an input crashed the pipeline"


def test_random_certificate_never_verifies() -> None:
    """Sanity for the strategy: junk certificates are refused, not taken as identity."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/public/x", "h"
    principal = "spiffe://example.org/humans/alice"
    request.attributes.source.principal = principal
    request.attributes.source.certificate = urllib.parse.quote("-----BEGIN CERTIFICATE-----\nAA\n")
    response, record = _check(request.SerializeToString())
    assert json.loads(response.denied_response.body)["reason"] == "certificate_invalid"
    assert record["principal"] == principal


def test_anonymous_grant_is_reachable() -> None:
    """Sanity for the never-raises property: the allow branch is exercised too."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/open/x", "h"
    response, record = _check(request.SerializeToString())
    assert response.status.code == 0
    assert record["rule"] == "open"
