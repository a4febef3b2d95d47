"""Hypothesis strategies for the security properties: near-miss inputs, not just noise.

Random text rarely looks like a path or a SPIFFE ID, so each strategy mixes plain noise
with tokens that sit right at the edge of the grammar (`%2e`, `..`, `//`, upper case,
ports, trailing slashes, escapes of unreserved characters).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import yaml
from envoy.service.auth.v3 import external_auth_pb2
from hypothesis import strategies as st

from authz_server.core.request import RequestView

#: Text a protobuf string field can hold (no lone surrogates).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)

# --- paths ---------------------------------------------------------------------------------

_PATH_TOKENS = [
    "/", "/", "/", "a", "B9", "x.y", "...", ".", "..", "~", "-", "_", ":", "@", "!", "'",
    "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%41", "%7e", "%7E", "%5F", "%30", "%40",
    "%60", "%20", "%3F", "%25", "%C3%A9", "%", "%g1", "%4", ";", "\\", "#", " ", "\t",
    "\x00", "\x7f", "é", "{", "|", "?", "*",
]  # fmt: skip
PATHS = st.one_of(
    st.lists(st.sampled_from(_PATH_TOKENS), max_size=10).map(lambda t: "/" + "".join(t)),
    st.lists(st.sampled_from(_PATH_TOKENS), max_size=10).map("".join),
    st.text(max_size=20),
)

# --- SPIFFE IDs --------------------------------------------------------------------------------

_SCHEMES = ["spiffe://"] * 6 + ["SPIFFE://", "Spiffe://", "spiffe:/", "spiffe:", "spiffe:///"]
_SCHEMES += ["http://", "", " spiffe://"]
_ODD_SEGMENTS = [".", "..", "", "%41", "a b", "a\n", "é", "a?b", "a#b", "a;b", "a:b", "a@b", "A"]
ADVERSARIAL_IDS = st.builds(
    lambda scheme, td, segments, tail: scheme + td + "".join("/" + s for s in segments) + tail,
    st.sampled_from(_SCHEMES),
    st.one_of(
        st.from_regex(r"[a-z0-9._-]{1,12}", fullmatch=True),
        st.text(alphabet="abcXYZ019._-:@%/ \n\té", max_size=12),
    ),
    st.lists(
        st.one_of(
            st.from_regex(r"[a-zA-Z0-9._-]{1,8}", fullmatch=True), st.sampled_from(_ODD_SEGMENTS)
        ),
        max_size=4,
    ),
    st.sampled_from(["", "", "", "/", "\n", " ", "?q", "#f"]),
)

# --- random policies and requests for rule order -------------------------------------------------

_RULE = st.fixed_dictionaries(
    {"effect": st.sampled_from(["allow", "deny"])},
    optional={
        "hosts": st.sampled_from([["a.internal"], ["*.internal"], ["b.internal", "a.internal"]]),
        "methods": st.sampled_from([["GET"], ["GET", "POST"], ["DELETE"]]),
        "paths": st.lists(
            st.sampled_from(["/", "/a", "/a/{id}", "/a/**", "/b/*", "/**", "/a/{id}/c"]),
            min_size=1,
            max_size=2,
            unique=True,
        ),
        "principals": st.lists(
            st.sampled_from(
                [
                    "spiffe://example.org/ns/*",
                    "spiffe://example.org/ns/{id}",
                    "spiffe://example.org/**",
                    "spiffe://example.org/ns/x",
                ]
            ),
            min_size=1,
            max_size=2,
            unique=True,
        ),
        "not_principals": st.just(["spiffe://example.org/ns/y"]),
        "unauthenticated": st.booleans(),
        "mode": st.sampled_from(["enforce", "dry_run"]),
        "when": st.sampled_from(
            [
                {"headers": {"x-k": {"equals": "v"}}},
                {"schedule": {"timezone": "UTC", "days": ["wed"], "hours": "09:00-17:00"}},
                {"schedule": {"timezone": "UTC", "days": ["sat"], "hours": "09:00-17:00"}},
            ]
        ),
    },
)
#: 1 to 7 rules with ids r0, r1, ...: unique, and independent of position.
RULES = st.lists(_RULE, min_size=1, max_size=7).map(
    lambda rules: [{"id": f"r{i}", **rule} for i, rule in enumerate(rules)]
)
REQUESTS = st.builds(
    RequestView,
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    host=st.sampled_from(["a.internal", "b.internal", "c.other"]),
    path=st.sampled_from(["/", "/a", "/a/x", "/a/x/c", "/b/y", "/c"]),
    principal=st.sampled_from(
        [
            "",
            "spiffe://example.org/ns/x",
            "spiffe://example.org/ns/y",
            "spiffe://example.org/ns/x/z",
            "spiffe://other.org/x",
        ]
    ),
    headers=st.sampled_from([{}, {"x-k": "v"}, {"x-k": "w"}]),
)

# --- random YAML for the loader -------------------------------------------------------------------

_KEYS = [
    "version", "identity", "trust_domains", "sources", "require_certificate", "deny", "admin",
    "principals", "defaults", "decision", "mode", "rules", "id", "description", "hosts",
    "methods", "paths", "not_principals", "unauthenticated", "mcp_tools", "effect", "when",
    "schedule", "headers", "query", "body", "expr", "rate_limit", "approval", "timezone", "days",
    "hours", "equals", "in", "prefix", "regex", "present", "lte", "gte", "lt", "gt", "not_in",
    "requests", "per", "key", "approvers", "ttl", "non_http",
]  # fmt: skip
_VALUES = [
    "allow", "deny", "enforce", "dry_run", "/**", "/a/{id}", "/a/**/b", "spiffe://example.org/**",
    "*.internal", "GET", "peer", "xfcc", "1m", "0s", "09:00-17:00", "25:00-01:00", "Europe/Berlin",
    "Mars/Base", "mon", "request.body.x == 1", "request.body.", "a.b", "items[0].sku", "items[",
    "[", "{x}", "((", ".*", "(a+)+$", "\\1", "spiffe://EXAMPLE.org/x",
]  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 100_000),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.sampled_from(_VALUES),
)
_TREE = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), TEXT), children, max_size=5),
    ),
    max_leaves=25,
)
POLICY_TREES = st.one_of(
    _TREE,
    st.fixed_dictionaries(
        {
            "version": st.sampled_from([1, "1", 2, None, 1.0]),
            "rules": st.lists(
                st.dictionaries(st.sampled_from(_KEYS), _TREE, max_size=7), max_size=4
            ),
        },
        optional={"identity": _TREE, "defaults": _TREE, "admin": _TREE},
    ),
)


def _mutate(base: Any, rng: random.Random, value: Any) -> Any:
    """`base` with one randomly chosen node replaced by `value`."""
    tree = copy.deepcopy(base)
    node = tree
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return tree
        key = rng.choice(keys)
        child = node[key]
        if isinstance(child, dict | list) and child and rng.random() < 0.7:
            node = child
            continue
        node[key] = value
        return tree


def mutate_policy(text: str) -> st.SearchStrategy[Any]:
    """A valid policy with one node replaced by something random."""
    base = yaml.safe_load(text)
    return st.builds(_mutate, st.just(base), st.randoms(use_true_random=False), _TREE)


# --- random CheckRequests ----------------------------------------------------------------------

_HEADER_NAMES = [
    "content-type", "x-role", "x-envoy-auth-partial-body", ":authority", "x-request-id",
    "x-forwarded-client-cert", "authorization", "x-authz-principal", "host",
]  # fmt: skip
_CERTS = ["", "junk", "%ZZ", "-----BEGIN CERTIFICATE-----%0AAAAA%0A-----END CERTIFICATE-----%0A"]


@st.composite
def _check_request(draw: st.DrawFn) -> Any:
    """Mostly plausible requests, so that most reach identity and matching; some garbage."""
    request = external_auth_pb2.CheckRequest()
    shape = draw(st.integers(0, 19))
    if shape == 0:
        return request  # no attributes at all
    source = request.attributes.source
    source.principal = draw(
        st.one_of(ADVERSARIAL_IDS, st.sampled_from(["", "", "spiffe://example.org/humans/alice"]))
    )
    source.certificate = draw(st.one_of(st.just(""), st.sampled_from(_CERTS), TEXT))
    if shape == 1:
        return request  # no HTTP attributes (a network-filter check)
    http = request.attributes.request.http
    odd = shape == 2
    http.method = draw(TEXT if odd else st.sampled_from(["GET", "POST", "get", "DELETE"]))
    http.path = draw(
        st.one_of(
            TEXT if odd else PATHS,
            st.sampled_from(["/open/x", "/open/../x", "/open/%2e", "/open/a%2Fb", "/open/~a"]),
            st.lists(st.sampled_from(_PATH_TOKENS), max_size=6).map(
                lambda t: "/open/" + "".join(t)
            ),
        )
    )
    http.host = draw(st.one_of(st.sampled_from(["", "admin.internal", "A:1:2", "[::1]:80"]), TEXT))
    headers = draw(st.dictionaries(st.sampled_from(_HEADER_NAMES), TEXT, max_size=4))
    for name, value in headers.items():
        http.headers[name] = value
    raw = draw(
        st.lists(st.tuples(st.sampled_from(_HEADER_NAMES), st.binary(max_size=8)), max_size=3)
    )
    for name, value in raw:
        entry = http.header_map.headers.add()
        entry.key, entry.raw_value = name, value
    bodies = st.one_of(
        st.binary(max_size=40), st.sampled_from([b'{"amount": 1}', b'{"a":1,"a":2}'])
    )
    choice = draw(st.integers(0, 2))
    if choice == 1:
        http.raw_body = draw(bodies)
    elif choice == 2:
        http.body = draw(TEXT)
    return request


CHECK_REQUESTS = _check_request()
