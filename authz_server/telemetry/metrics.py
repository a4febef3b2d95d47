"""Prometheus metrics (docs/operations/metrics.md#metrics), on a registry of their own so that two
servers in one process (the tests) never share counters.

The Check path calls `Metrics.observe` once per decision. As measured
(docs/performance.md#stack-costs), every 10 µs of Python per request costs 10-15 % throughput, so
decisions and latency are plain integers turned into families at scrape time
(`check_counts.py`), and an identity failure's counter is bound once per reason.

    authz_decisions_total{decision,reason,rule,dry_run}   what the policy decided
    authz_check_duration_seconds                          Check latency (histogram)
    authz_identity_failures_total{reason}                 identity verification failures
    authz_policy_info{version} 1, authz_policy_rules, authz_policy_loaded_timestamp_seconds
    authz_reloads_total{source,result}                    policy/bundles/tls reloads
    authz_reload_failing{source}                          1 while its last reload was rejected
    authz_reload_last_error_timestamp_seconds{source}     when a reload was last rejected
    authz_trust_domains{state}                            trusted / unusable / distrusted
    authz_caller_rejections_total{reason}                 Check listener callers refused
    authz_workload_api_updates_total, authz_workload_api_restarts_total
    authz_tls_certificate_expiry_timestamp_seconds        the serving certificate's notAfter
    authz_store_errors_total{operation}                   incremented by the store
    authz_notifications_total{endpoint,outcome}           approval notifications (notify/)
    authz_audit_records_total, authz_audit_write_errors_total
    authz_audit_healthy, authz_audit_pending_records      can decisions be recorded now
    authz_approvals{status}, authz_revocations            what the store holds (sampled)
    authz_ready                                           1 when ready to decide

The last four families are always declared and carry values once their source is
attached (`watch_audit(..., health=)`, `set_store_state`): no value rather than a made-up 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from authz_server.core.decision import Decision, Reason
from authz_server.telemetry.check_counts import CheckCounts

__all__ = ["NULL_OBSERVER", "DecisionObserver", "Metrics"]

#: Reasons decided by the identity phase (docs/concepts/identity.md#verification).
IDENTITY_FAILURES = frozenset(
    {
        Reason.INVALID_SPIFFE_ID,
        Reason.UNTRUSTED_TRUST_DOMAIN,
        Reason.CERTIFICATE_INVALID,
        Reason.CERTIFICATE_MISMATCH,
        Reason.CERTIFICATE_REQUIRED,
        Reason.REVOKED,
    }
)

# Unloaded Checks take ~0.4 ms end to end (docs/performance.md#stack-costs), of which the
# server's own part is ~0.1 ms; bursts a few ms; anything past 1 s is broken.
#: Fine below a millisecond, where a healthy Check lives: a p50 of 100-150 us and a p99
#: under 1 ms must be readable from the histogram, not only from the audit log.
LATENCY_BUCKETS = (
    0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.00025, 0.0003, 0.0005, 0.00075,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class DecisionObserver(Protocol):
    """What the Check path reports each decision to."""

    def observe(self, decision: Decision, latency_s: float) -> None: ...


class _NullObserver:
    def observe(self, decision: Decision, latency_s: float) -> None:
        pass


NULL_OBSERVER: DecisionObserver = _NullObserver()


class _AuditCollector(Collector):
    """Reads the audit log's own counters at scrape time (no hook in the write path)."""

    def __init__(self, stats: Callable[[], tuple[int, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        records, errors = self._stats()
        yield CounterMetricFamily(
            "authz_audit_records", "Audit records written or buffered", value=records
        )
        yield CounterMetricFamily(
            "authz_audit_write_errors", "Failed audit log writes (records kept)", value=errors
        )


class _SampledCollector(Collector):
    """State kept elsewhere, read at scrape time: families always, values once known."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        approvals = GaugeMetricFamily(
            "authz_approvals", "Live approval records in the store by status", labels=["status"]
        )
        revocations = GaugeMetricFamily("authz_revocations", "Revocations in force in the store")
        state = self._metrics.store_state
        if state is not None:
            for status, count in sorted(state[0].items()):
                approvals.add_metric([status], count)
            revocations.add_metric([], state[1])
        healthy = GaugeMetricFamily(
            "authz_audit_healthy",
            "1 while decisions can be recorded; 0: the sink failed too long, every Check denied",
        )
        pending = GaugeMetricFamily(
            "authz_audit_pending_records", "Audit records waiting for a failing sink"
        )
        health = self._metrics.audit_health
        if health is not None:
            ok, waiting = health()
            healthy.add_metric([], 1 if ok else 0)
            pending.add_metric([], waiting)
        yield from (approvals, revocations, healthy, pending)


class Metrics:
    """Every metric of the server, and the cheap per-decision hook."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `*_created` series double the output and tell an operator nothing here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        #: authz_decisions_total and authz_check_duration_seconds, off prometheus_client's
        #: locks (`check_counts.py`).
        self.checks = CheckCounts(LATENCY_BUCKETS)
        r.register(self.checks)
        self.identity_failures = Counter(
            "authz_identity_failures", "Identity verification failures", ["reason"], registry=r
        )
        self.policy_info = Gauge(
            "authz_policy_info", "The policy in force (value 1)", ["version"], registry=r
        )
        self.policy_rules = Gauge("authz_policy_rules", "Rules in the policy in force", registry=r)
        self.policy_loaded = Gauge(
            "authz_policy_loaded_timestamp_seconds",
            "When the policy in force was loaded",
            registry=r,
        )
        self.reloads = Counter(
            "authz_reloads",
            "Reload attempts by source and result",
            ["source", "result"],
            registry=r,
        )
        self.trust_domains = Gauge(
            "authz_trust_domains",
            "Trust domains in the bundle set (unusable: no CA can sign certificates; "
            "distrusted: listed with no authority)",
            ["state"],
            registry=r,
        )
        self.caller_rejections = Counter(
            "authz_caller_rejections",
            "Calls refused on the Check listener (TLS caller not allowed)",
            ["reason"],
            registry=r,
        )
        self.workload_api_updates = Counter(
            "authz_workload_api_updates", "X.509 updates received from the Workload API", registry=r
        )
        self.workload_api_restarts = Counter(
            "authz_workload_api_restarts",
            "Workload API sources that failed and were recreated",
            registry=r,
        )
        self.tls_expiry = Gauge(
            "authz_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate the Check listener serves",
            registry=r,
        )
        self.store_errors = Counter(
            "authz_store_errors", "Store operations that failed", ["operation"], registry=r
        )
        self.notifications = Counter(
            "authz_notifications",
            "Approval notifications by endpoint and outcome (sent, retry, failed, queue_full, "
            "duplicate, no_secret)",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.ready = Gauge("authz_ready", "1 when a policy and bundles are in force", registry=r)
        self.reload_failing = Gauge(
            "authz_reload_failing",
            "1 while the last reload of this source was rejected (the last good one is in force)",
            ["source"],
            registry=r,
        )
        self.reload_last_error = Gauge(
            "authz_reload_last_error_timestamp_seconds",
            "When a reload of this source was last rejected",
            ["source"],
            registry=r,
        )
        #: (live approvals by status, revocations), set by a sampler of the store.
        self.store_state: tuple[dict[str, int], int] | None = None
        #: () → (healthy, records waiting) of the audit log.
        self.audit_health: Callable[[], tuple[bool, int]] | None = None
        r.register(_SampledCollector(self))
        self._observe_check = self.checks.observe
        #: reason → its identity-failure counter, or None: not an identity failure.
        self._identity_bound: dict[Reason, Counter | None] = {}
        self._policy_version: str | None = None

    # --- the Check path -------------------------------------------------------------

    def observe(self, decision: Decision, latency_s: float) -> None:
        """Count one decision and its latency; never raises on any Decision."""
        self._observe_check(decision, latency_s)
        if not decision.allowed:
            reason = decision.reason
            try:
                failures = self._identity_bound[reason]
            except KeyError:
                failures = self._identity_bound[reason] = (
                    self.identity_failures.labels(reason.value)
                    if reason in IDENTITY_FAILURES
                    else None
                )
            if failures is not None:
                failures.inc()
        if decision.identity_note is not None:  # e.g. xfcc_spoofing (identity/xfcc.py)
            self.identity_failure(decision.identity_note)

    # --- everything else, called rarely -------------------------------------------------

    def identity_failure(self, reason: str) -> None:
        """An identity failure seen outside a decision (e.g. an XFCC spoofing attempt)."""
        self.identity_failures.labels(reason).inc()

    def store_error(self, operation: str) -> None:
        """A store operation failed (the rule needing it fails closed)."""
        self.store_errors.labels(operation).inc()

    def notification(self, endpoint: str, outcome: str) -> None:
        """One approval notification's fate at one endpoint (`notify/`)."""
        self.notifications.labels(endpoint, outcome).inc()

    def reload(self, source: str, result: str) -> None:
        """`source` policy|bundles|tls, `result` ok|error|unchanged."""
        self.reloads.labels(source, result).inc()
        self.reload_failing.labels(source).set(1 if result == "error" else 0)
        if result == "error":
            self.reload_last_error.labels(source).set(time.time())

    def set_store_state(self, approvals: Mapping[str, int], revocations: int) -> None:
        """What the store holds now: live approvals by status, revocations in force."""
        self.store_state = (dict(approvals), revocations)

    def forget_store_state(self) -> None:
        """The store could not be read: show no values rather than stale ones."""
        self.store_state = None

    def set_policy(self, version: str, rules: int, loaded_at: float) -> None:
        if self._policy_version is not None and self._policy_version != version:
            self.policy_info.remove(self._policy_version)
        self._policy_version = version
        self.policy_info.labels(version).set(1)
        self.policy_rules.set(rules)
        self.policy_loaded.set(loaded_at)

    def set_trust_domains(self, trusted: int, distrusted: int, unusable: int = 0) -> None:
        """Domains by state, each counted once: `trusted` (a CA that can sign), `unusable`
        (CAs, none with keyCertSign: every caller fails), `distrusted` (no CA)."""
        self.trust_domains.labels("trusted").set(trusted)
        self.trust_domains.labels("unusable").set(unusable)
        self.trust_domains.labels("distrusted").set(distrusted)

    def watch_audit(
        self,
        stats: Callable[[], tuple[int, int]],
        health: Callable[[], tuple[bool, int]] | None = None,
    ) -> None:
        """Expose (records, write errors) of the audit log, and with `health` (healthy,
        records waiting) as `authz_audit_healthy` / `_pending_records`, read at scrape time."""
        self.registry.register(_AuditCollector(stats))
        if health is not None:
            self.audit_health = health
