"""The compiled route index: what matches, in which order, and at what cost."""

from __future__ import annotations

import random

import pytest

from authz_server.policy import index as index_module
from authz_server.policy.index import CompiledRouteIndex
from authz_server.policy.model import Effect, Rule


def _rule(
    rule_id: str,
    hosts: tuple[str, ...] = (),
    methods: tuple[str, ...] = (),
    paths: tuple[str, ...] = (),
) -> Rule:
    return Rule(
        id=rule_id, effect=Effect.ALLOW, principals=None, hosts=hosts, methods=methods, paths=paths
    )


RULES = [
    _rule("orders", ("orders.internal",), ("GET", "head"), ("/v1/orders", "/v1/orders/{id}")),
    _rule("internal-v1", ("*.internal",), (), ("/v1/**",)),
    _rule("create-order", (), ("POST",), ("/v1/orders",)),
    _rule("health", (), ("GET",), ("/healthz",)),
    _rule("items", (), (), ("/t/{tenant}/items/{item}", "/t/{tenant}/**")),
    _rule("everything", ("catch.all",)),
    _rule("slash", ("slash.test",), (), ("/a", "/a/", "/b/**")),
]
INDEX = CompiledRouteIndex.from_rules(RULES)


@pytest.mark.parametrize(
    ("method", "host", "path", "expected"),
    [
        pytest.param("GET", "orders.internal", "/v1/orders/42",
                     [("internal-v1", {}), ("orders", {"id": "42"})], id="exact-and-wildcard"),
        pytest.param("HEAD", "orders.internal", "/v1/orders",
                     [("internal-v1", {}), ("orders", {})], id="lower-case-method-in-rule"),
        pytest.param("DELETE", "orders.internal", "/v1/orders",
                     [("internal-v1", {})], id="method-not-listed"),
        pytest.param("POST", "orders.internal", "/v1/orders",
                     [("create-order", {}), ("internal-v1", {})], id="any-host-rule"),
        pytest.param("GET", "orders.internal.", "/v1/orders",
                     [("internal-v1", {}), ("orders", {})], id="trailing-dot-host"),
        pytest.param("GET", "internal", "/v1/orders", [], id="wildcard-never-matches-apex"),
        pytest.param("GET", "a.b.internal", "/v1/x", [("internal-v1", {})],
                     id="wildcard-many-labels"),
        pytest.param("GET", "orders.internal.evil", "/v1/orders", [], id="host-suffix-is-not-ours"),
        pytest.param("GET", "orders.internal", "/v1", [("internal-v1", {})], id="rest-zero"),
        pytest.param("GET", "orders.internal", "/v1/", [("internal-v1", {})], id="rest-slash"),
        pytest.param("GET", "orders.internal", "/v1/orders/", [("internal-v1", {})],
                     id="no-empty-capture"),
        pytest.param("GET", "orders.internal", "/v2/orders", [], id="nothing"),
        pytest.param("GET", "", "/healthz", [("health", {})], id="no-host"),
        pytest.param("GET", "x", "/t/acme/items/7",
                     [("items", {"tenant": "acme"}), ("items", {"item": "7", "tenant": "acme"})],
                     id="one-entry-per-template"),
        pytest.param("PATCH", "catch.all", "/", [("everything", {})], id="rule-without-paths-root"),
        pytest.param("PATCH", "catch.all", "/x/y/", [("everything", {})],
                     id="rule-without-paths-deep"),
        pytest.param("GET", "slash.test", "/a", [("slash", {})], id="no-trailing-slash"),
        pytest.param("GET", "slash.test", "/a/", [("slash", {})], id="trailing-slash-template"),
        pytest.param("GET", "slash.test", "/b", [("slash", {})], id="rest-absorbs-nothing"),
        pytest.param("GET", "slash.test", "/a/b", [], id="literal-no-prefix"),
    ],
)  # fmt: skip
def test_candidates(
    method: str, host: str, path: str, expected: list[tuple[str, dict[str, str]]]
) -> None:
    """Host, method and path all have to match; captures come from the template."""
    found = [(m.rule.id, dict(m.params)) for m in INDEX.candidates(method, host, path)]
    assert found == expected


def test_candidates_are_sorted_by_rule_id_and_template() -> None:
    """Output order is (rule id, template), whatever the order of the rules."""
    rules = [
        _rule("b", (), (), ("/x/**",)),
        _rule("a", (), (), ("/x/{y}", "/x/*")),
        _rule("c", ("*.h",), (), ("/x/y",)),
    ]
    for seed in range(5):
        shuffled = rules[:]
        random.Random(seed).shuffle(shuffled)
        matches = CompiledRouteIndex.from_rules(shuffled).candidates("GET", "a.h", "/x/y")
        assert [(m.rule.id, m.rule.paths) for m in matches] == [
            ("a", ("/x/{y}", "/x/*")),
            ("a", ("/x/{y}", "/x/*")),
            ("b", ("/x/**",)),
            ("c", ("/x/y",)),
        ]
        assert [dict(m.params) for m in matches][:2] == [{}, {"y": "y"}]


def test_rule_listed_under_overlapping_hosts_appears_once() -> None:
    """An exact host and a wildcard covering it do not duplicate the rule."""
    index = CompiledRouteIndex.from_rules([_rule("r", ("a.example", "*.example"), (), ("/",))])
    assert [m.rule.id for m in index.candidates("GET", "a.example", "/")] == ["r"]


def test_literal_segments_match_any_spelling_of_the_same_key() -> None:
    """`:` and `%3A` are one segment to the index: a deny rule cannot be side-stepped."""
    index = CompiledRouteIndex.from_rules([_rule("deny-batch", (), (), ("/v1/things:batch",))])
    for path in ("/v1/things:batch", "/v1/things%3Abatch", "/v1/things%3abatch"):
        assert [m.rule.id for m in index.candidates("GET", "h", path)] == ["deny-batch"]


def test_invalid_route_fields_raise_value_error() -> None:
    """The index compiles route fields itself when built from plain rules."""
    with pytest.raises(ValueError, match="must not carry a port"):
        CompiledRouteIndex.from_rules([_rule("r", ("h:80",))])


def _base_rules() -> list[Rule]:
    return [
        _rule("orders-read", ("orders.internal",), ("GET",), ("/v1/orders/{id}",)),
        _rule("orders-list", ("orders.internal",), ("GET",), ("/v1/orders",)),
        _rule("orders-any", ("*.internal",), (), ("/v1/orders/**",)),
        _rule("orders-write", ("orders.internal",), ("PUT",), ("/v1/orders/{id}",)),
        _rule("health", (), ("GET",), ("/healthz",)),
        _rule("tenant", (), (), ("/v1/tenants/{tenant}/**",)),
        _rule("star", (), ("GET",), ("/v1/*/42",)),
        _rule("admin", (), (), ("/admin/**",)),
        _rule("root", (), ("GET",), ("/",)),
        _rule("deep", ("orders.internal",), (), ("/v1/orders/{id}/items/{item}",)),
    ]


def _unrelated_rules(count: int) -> list[Rule]:
    """Rules that cannot match the probe: other hosts, other literal paths, other methods."""
    rules = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            rules.append(_rule(f"x{i}", (f"h{i}.example.com",), (), ("/v1/orders/{id}",)))
        elif kind == 1:
            rules.append(_rule(f"x{i}", (f"*.s{i}.internal",), (), ("/**",)))
        elif kind == 2:
            rules.append(_rule(f"x{i}", (), (), (f"/other{i}/**", f"/v1/orders{i}")))
        else:
            rules.append(_rule(f"x{i}", ("orders.internal",), (f"M{i}",), ("/v1/orders/{id}",)))
    return rules


def test_lookup_work_does_not_grow_with_rules_that_cannot_match() -> None:
    """10 rules or 10 + 10,000 unrelated ones: same candidates, same buckets, same nodes."""
    small = CompiledRouteIndex.from_rules(_base_rules())
    large_rules = _base_rules() + _unrelated_rules(10_000)
    random.Random(7).shuffle(large_rules)
    large = CompiledRouteIndex.from_rules(large_rules)
    assert (small.size, large.size) == (10, 10_010)
    for method, host, path in [
        ("GET", "orders.internal", "/v1/orders/42"),
        ("PUT", "orders.internal", "/v1/orders/42/items/7"),
        ("GET", "api.orders.internal", "/v1/tenants/acme/x"),
        ("DELETE", "nowhere", "/admin/users"),
        ("GET", "orders.internal", "/"),
    ]:
        a, b = small.lookup(method, host, path), large.lookup(method, host, path)
        assert [(m.rule.id, dict(m.params)) for m in a.matches] == [
            (m.rule.id, dict(m.params)) for m in b.matches
        ]
        assert (a.buckets, a.nodes) == (b.buckets, b.nodes)
        assert a.matches or path == "/" or method == "PUT"


def test_lookup_counts_are_small_and_exact() -> None:
    """The counters are the real walk: exact host, one wildcard suffix and any-host buckets."""
    result = CompiledRouteIndex.from_rules(_base_rules()).lookup(
        "GET", "orders.internal", "/v1/orders/42"
    )
    assert [m.rule.id for m in result.matches] == ["orders-any", "orders-read", "star"]
    assert result.buckets == 3
    # exact bucket: root, v1, orders, {id} (4); wildcard bucket: root, v1, orders (3);
    # any-host bucket: root, v1, * (the `/v1/*/42` branch), 42, tenants not visited (4).
    assert result.nodes == 11


def _found(matches: object) -> list[tuple[str, dict[str, str]]]:
    return [(m.rule.id, dict(m.params)) for m in matches]  # type: ignore[attr-defined]


def test_a_kept_lookup_is_the_search_it_replaces() -> None:
    """Asked again, the same (method, host, path) gives what a fresh search gives."""
    index = CompiledRouteIndex.from_rules(RULES)
    requests = [
        ("GET", "orders.internal", "/v1/orders/42"),
        ("GET", "orders.internal", "/v1/orders/43"),
        ("HEAD", "orders.internal", "/v1/orders"),
        ("GET", "x", "/t/acme/items/7"),
        ("GET", "nowhere", "/nothing"),
    ]
    first = [_found(index.candidates(*r)) for r in requests]
    assert index.memo_size == len(requests)
    again = [_found(index.candidates(*r)) for r in requests]
    assert again == first == [_found(index.lookup(*r).matches) for r in requests]
    assert first[0] == [("internal-v1", {}), ("orders", {"id": "42"})]
    assert first[1] == [("internal-v1", {}), ("orders", {"id": "43"})]


def test_the_memo_is_bounded_and_skips_long_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full, it is emptied at once; a host or path over the limit is searched, never kept."""
    monkeypatch.setattr(index_module, "MEMO_SIZE", 3)
    index = CompiledRouteIndex.from_rules(RULES)
    for i in range(3):
        index.candidates("GET", "orders.internal", f"/v1/orders/{i}")
    assert index.memo_size == 3
    assert _found(index.candidates("GET", "orders.internal", "/v1/orders/9")) == [
        ("internal-v1", {}),
        ("orders", {"id": "9"}),
    ]
    assert index.memo_size == 1
    long_id = "7" * index_module.MEMO_KEY_MAX
    assert _found(index.candidates("GET", "orders.internal", f"/v1/orders/{long_id}")) == [
        ("internal-v1", {}),
        ("orders", {"id": long_id}),
    ]
    assert index.memo_size == 1
    long_host = "a" * index_module.MEMO_KEY_MAX + ".internal"
    assert _found(index.candidates("GET", long_host, "/v1/x")) == [("internal-v1", {})]
    assert index.memo_size == 1
