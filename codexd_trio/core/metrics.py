"""codexd's Prometheus metrics (documented in docs/metrics.md).

Counters that follow events (turns, events appended) are fed by :meth:`CodexdMetrics.on_event`
from :meth:`Daemon.publish`, the one funnel every event goes through; gauges of state (child,
websocket subscribers, pending approvals) are read at scrape time by a collector, so nothing
has to remember to update them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from codexd_trio.base.contracts import Event
from codexd_trio.base.errors import NotFound
from codexd_trio.base.metrics import AppMetrics

if TYPE_CHECKING:
    from codexd_trio.core.service import Daemon

__all__ = ["TURN_END_TYPES", "CodexdMetrics"]

_TURN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
_SYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0, 5.0)
# Event types that end a turn (a turn/completed folded, or a turn failed without one).
TURN_END_TYPES = frozenset({"app-server.turn.completed", "turn.failed"})


class CodexdMetrics:
    """The HTTP metrics (:attr:`http`) plus codexd's own, in one per-daemon registry."""

    def __init__(self, daemon: Daemon) -> None:
        self.http = AppMetrics("codexd")
        registry = self.http.registry
        self._daemon = daemon
        self.turns = Counter("codexd_turns", "Turns that ended, by final status",
                             ["status"], registry=registry)
        self.turn_duration = Histogram(
            "codexd_turn_duration_seconds", "Turn start to end, by final status", ["status"],
            registry=registry, buckets=_TURN_BUCKETS,
        )
        self.events = Counter("codexd_events_appended", "Events appended to the event log",
                              ["level"], registry=registry)
        self.log_sync = Histogram(
            "codexd_event_log_sync_seconds", "One group commit of the event log (write + fsync)",
            registry=registry, buckets=_SYNC_BUCKETS,
        )
        # Turn ids already counted: a turn can end with more than one event (a missing
        # turn/completed is followed by turn.failed).
        self._counted: deque[str] = deque(maxlen=256)
        registry.register(_StateCollector(daemon))
        daemon.log.on_commit = self.log_sync.observe

    def on_event(self, event: Event) -> None:
        self.events.labels(event.level).inc()
        if event.type not in TURN_END_TYPES or not event.turnId or event.turnId in self._counted:
            return
        self._counted.append(event.turnId)
        status = "failed" if event.type == "turn.failed" else "completed"
        started: str | None = None
        ended: str | None = event.at
        if event.sessionId is not None:
            try:
                session = self._daemon.book.get(event.sessionId)
            except NotFound:
                session = None
            if session is not None and session.lastTurnId == event.turnId:
                status = session.lastTurnStatus or status
                started = session.lastTurnStartedAt
                ended = session.lastTurnCompletedAt or ended
        self.turns.labels(status).inc()
        duration = _seconds_between(started, ended)
        if duration is not None:
            self.turn_duration.labels(status).observe(duration)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


class _StateCollector(Collector):
    """Gauges read from the daemon at scrape time."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def collect(self) -> Iterator[Metric]:
        daemon = self._daemon
        child = daemon.child
        restarts = CounterMetricFamily(
            "codexd_child_restarts", "Restarts of the codex app-server child since codexd started"
        )
        restarts.add_metric([], child.restarts)
        yield restarts
        up = GaugeMetricFamily("codexd_child_up", "1 while the child is running and initialized")
        up.add_metric([], 1.0 if child.status == "running" else 0.0)
        yield up
        subscribers = GaugeMetricFamily(
            "codexd_websocket_subscribers", "Open event-stream websockets"
        )
        subscribers.add_metric([], daemon.open_streams)
        yield subscribers
        pending = GaugeMetricFamily("codexd_approvals_pending", "Approvals waiting for a decision")
        pending.add_metric([], len(daemon.approvals("pending")))
        yield pending
        sessions = GaugeMetricFamily("codexd_sessions", "Sessions by status", labels=["status"])
        active = daemon.book.active_count
        sessions.add_metric(["active"], active)
        sessions.add_metric(["closed"], daemon.book.count - active)
        yield sessions
        waiting = GaugeMetricFamily("codexd_events_unsynced", "Events appended but not yet fsynced")
        waiting.add_metric([], daemon.log.waiting)
        yield waiting
        queue = daemon.queue_status()
        queued = GaugeMetricFamily("codexd_queued_turns", "Turns waiting in the session queues")
        queued.add_metric([], queue.entries)
        yield queued
        stopped = GaugeMetricFamily("codexd_queues_stopped",
                                    "Session queues stopped by a failed start (a person acts)")
        stopped.add_metric([], queue.stoppedSessions)
        yield stopped
        held = GaugeMetricFamily("codexd_queues_held",
                                 "1 while the node holds the queues (paused or draining)")
        held.add_metric([], 1.0 if queue.held else 0.0)
        yield held
