"""The per-decision metrics hook and the rarely changing gauges."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from authz_server.core.decision import Decision, Reason
from authz_server.telemetry.metrics import LATENCY_BUCKETS, Metrics


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.parametrize(
    ("decision", "labels", "identity"),
    [
        pytest.param(
            Decision(True, Reason.ALLOWED_BY_RULE, rule="r"),
            {"decision": "allow", "reason": "allowed_by_rule", "rule": "r", "dry_run": "false"},
            None,
            id="allow",
        ),
        pytest.param(
            Decision(False, Reason.DENIED_BY_RULE, rule="d", dry_run=True),
            {"decision": "deny", "reason": "denied_by_rule", "rule": "d", "dry_run": "true"},
            None,
            id="dry-run-deny",
        ),
        pytest.param(
            Decision(False, Reason.CERTIFICATE_MISMATCH),
            {"decision": "deny", "reason": "certificate_mismatch", "rule": "", "dry_run": "false"},
            "certificate_mismatch",
            id="identity-failure",
        ),
        pytest.param(
            Decision(False, Reason.NO_IDENTITY),
            {"decision": "deny", "reason": "no_identity", "rule": "", "dry_run": "false"},
            None,
            id="no-identity-is-not-a-failure",
        ),
    ],
)
def test_observe_counts_decisions(
    decision: Decision, labels: dict[str, str], identity: str | None
) -> None:
    """Each decision counts once under its labels, with its latency; identity-phase
    denials also count as identity failures."""
    metrics = Metrics()
    metrics.observe(decision, 0.0004)
    metrics.observe(decision, 0.002)
    assert _value(metrics, "authz_decisions_total", **labels) == 2
    assert _value(metrics, "authz_check_duration_seconds_count") == 2
    assert _value(metrics, "authz_check_duration_seconds_bucket", le="0.0005") == 1
    if identity is not None:
        assert _value(metrics, "authz_identity_failures_total", reason=identity) == 2


def test_policy_info_keeps_only_the_version_in_force() -> None:
    """A new policy version replaces the old one's info series."""
    metrics = Metrics()
    metrics.set_policy("v1", 3, 100.0)
    metrics.set_policy("v2", 5, 200.0)
    assert _value(metrics, "authz_policy_info", version="v1") is None
    assert _value(metrics, "authz_policy_info", version="v2") == 1
    assert _value(metrics, "authz_policy_rules") == 5


def test_counters_for_other_parts() -> None:
    """Store errors, reloads and audit counters are exposed under stable names."""
    metrics = Metrics()
    metrics.store_error("rate_limit")
    metrics.reload("policy", "error")
    metrics.watch_audit(lambda: (10, 2))
    assert _value(metrics, "authz_store_errors_total", operation="rate_limit") == 1
    assert _value(metrics, "authz_reloads_total", source="policy", result="error") == 1
    assert _value(metrics, "authz_audit_records_total") == 10
    assert _value(metrics, "authz_audit_write_errors_total") == 2


def test_two_instances_do_not_share_counters() -> None:
    """Each Metrics has its own registry."""
    first, second = Metrics(), Metrics()
    first.observe(Decision(False, Reason.INTERNAL_ERROR), 0.1)
    labels = {"decision": "deny", "reason": "internal_error", "rule": "", "dry_run": "false"}
    assert _value(second, "authz_decisions_total", **labels) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(LATENCY_BUCKETS)  # exactly on a bound: "less than or equal"
        | st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
        max_size=40,
    )
)
def test_latency_histogram_matches_prometheus_client(latencies: list[float]) -> None:
    """The lock-free histogram exposes what prometheus_client's own would, sample by sample."""
    metrics = Metrics()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "authz_check_duration_seconds",
        "reference",
        buckets=LATENCY_BUCKETS,
        registry=reference_registry,
    )
    for latency in latencies:
        metrics.observe(Decision(True, Reason.ALLOWED_BY_RULE, rule="r"), latency)
        reference.observe(latency)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in registry.collect()
            if family.name == "authz_check_duration_seconds"
            for s in family.samples
            if not s.name.endswith("_created")
        }

    ours, theirs = samples(metrics.registry), samples(reference_registry)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value), key
