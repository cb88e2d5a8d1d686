"""Prometheus metrics of one app: a per-app :class:`CollectorRegistry` (never the global one,
so several apps in one test process do not clash) with the HTTP request metrics every daemon
has; daemons add their own collectors to :attr:`AppMetrics.registry`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "AppMetrics"]

# The classic text format the contract names; every Prometheus version scrapes it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Local APIs answer in well under a millisecond to a few seconds (a turn start).
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WS"})


class AppMetrics:
    """HTTP metrics ``<prefix>_http_requests_total`` and ``<prefix>_http_request_duration_seconds``
    labelled by route template, method and status."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            f"{prefix}_http_requests", "HTTP requests answered (websockets: method WS)",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            f"{prefix}_http_request_duration_seconds",
            "Time from request start to the end of the answer (websockets: the connection)",
            ["route", "method", "status"], registry=self.registry, buckets=_LATENCY_BUCKETS,
        )

        self.websocket_overflows = Counter(
            f"{prefix}_websocket_overflows",
            "Websockets closed because the consumer was too slow (close code 1013)",
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        # Any local process may send any method: a label value per made-up method would be a
        # new series for the life of the daemon.
        if method not in _METHODS:
            method = "other"
        code = str(status)
        self.requests.labels(route, method, code).inc()
        self.latency.labels(route, method, code).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
