"""The conductor's and the status-api's Prometheus metrics (documented in docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from codexd_trio.base.metrics import AppMetrics

if TYPE_CHECKING:
    from conductor_trio.service import Conductor

__all__ = ["ConductorMetrics"]

_PROXY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0)


class ConductorMetrics:
    """HTTP metrics (:attr:`http`), codexd call latency, lease and mode."""

    def __init__(self, conductor: Conductor) -> None:
        self.http = AppMetrics("conductor")
        self.codexd_latency = Histogram(
            "conductor_codexd_request_duration_seconds",
            "Requests to codexd (proxied and the conductor's own probes), until the answer's "
            "headers", ["method", "status"], registry=self.http.registry, buckets=_PROXY_BUCKETS,
        )
        self.http.registry.register(_StateCollector(conductor))
        conductor.client.observe_responses(self._observe_codexd)
        if conductor.upstream is not None:
            conductor.upstream.observe = self._observe_proxied

    def _observe_codexd(self, response: httpx.Response, seconds: float) -> None:
        self.codexd_latency.labels(response.request.method, str(response.status_code)).observe(
            seconds
        )

    def _observe_proxied(self, method: str, status: int, seconds: float) -> None:
        # Proxied requests (the UpstreamPool): until the whole answer is read.
        self.codexd_latency.labels(method, str(status)).observe(seconds)


class _StateCollector(Collector):
    def __init__(self, conductor: Conductor) -> None:
        self._conductor = conductor

    def collect(self) -> Iterator[Metric]:
        conductor = self._conductor
        keeper = conductor.lease
        role = GaugeMetricFamily("conductor_lease_role", "1 for this conductor's current role",
                                 labels=["role"])
        for name in ("leader", "standby", "degraded"):
            role.add_metric([name], 1.0 if keeper.role == name else 0.0)
        yield role
        term = GaugeMetricFamily("conductor_lease_term", "Term of the lease last seen (0: none)")
        # The term is the fencing token: the file lease's counter, or etcd's create revision.
        value = keeper.snapshot().get("term")
        term.add_metric([], float(value) if isinstance(value, int) else 0.0)
        yield term
        holder = GaugeMetricFamily("conductor_lease_is_holder", "1 while this conductor holds "
                                   "the lease")
        holder.add_metric([], 1.0 if keeper.holds_lease else 0.0)
        yield holder
        mode = GaugeMetricFamily("conductor_mode", "1 for the system mode in force",
                                 labels=["mode"])
        current = conductor.modes.current.mode
        for name in ("running", "paused", "draining"):
            mode.add_metric([name], 1.0 if current == name else 0.0)
        yield mode
        reachable = GaugeMetricFamily("conductor_codexd_reachable",
                                      "1 if the last probe of codexd got an answer")
        reachable.add_metric([], 1.0 if conductor.probe.reachable else 0.0)
        yield reachable
        yield from _notification_metrics(conductor)


def _notification_metrics(conductor: Conductor) -> Iterator[Metric]:
    """Issue 25: per sink, notifications sent, failed tries, retries, dropped; the outbox."""
    notifier = conductor.notifier
    families = {
        name: CounterMetricFamily(f"conductor_notifications_{name}", text, labels=["sink"])
        for name, text in (
            ("sent", "Notifications a sink accepted"),
            ("failed", "Tries to send a notification that failed"),
            ("retried", "Notifications tried again after a failure"),
            ("dropped", "Notifications dropped unsent by the outbox's bound (oldest first)"),
        )
    }
    for sink in notifier.sinks:
        stats = notifier.stats[sink.id]
        families["sent"].add_metric([sink.id], stats.sent)
        families["failed"].add_metric([sink.id], stats.failed)
        families["retried"].add_metric([sink.id], stats.retried)
        families["dropped"].add_metric([sink.id], notifier.outbox.dropped_by_sink.get(sink.id, 0))
    yield from families.values()
    pending = GaugeMetricFamily("conductor_notifications_pending",
                                "Notifications in the outbox not yet accepted by their sink")
    pending.add_metric([], float(len(notifier.outbox.pending)))
    yield pending
