"""The outermost ASGI middleware of every daemon: request id, metrics and the access log.

It wraps the :class:`~codexd_trio.web.callers.CallerGuard`, so refused requests are counted,
logged and carry ``X-Request-Id`` like any other answer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from codexd_trio.base.context import CURRENT, RequestInfo, accept_request_id
from codexd_trio.base.metrics import AppMetrics
from codexd_trio.web.callers import ASGIApp, Message, Receive, Scope, Send

__all__ = ["UNMATCHED", "Observe"]

# The route label of requests no route matched (404s, refusals before routing): one series,
# not one per path a scanner tries.
UNMATCHED = "unmatched"

# Routes that supervisors, peers and scrapers poll all day (the conductor asks codexd's status
# every 5 s: ~17 000 lines a day in a log nobody rotates under launchd). Their successful GETs
# are logged at DEBUG; a failing one is still an INFO line.
POLLED_ROUTES = frozenset({
    "/healthz", "/readyz", "/rolez", "/metrics", "/v1/codexd/status", "/v1/codex/metrics",
})


class Observe:
    """Give each HTTP request and websocket an id, time it, count it and log one access line.

    ``X-Request-Id`` is taken from the request when valid (see
    :func:`~codexd_trio.base.context.accept_request_id`), else generated, and set on the answer.
    """

    def __init__(
        self, app: ASGIApp, metrics: AppMetrics | None, access_log: logging.Logger
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw_id = None
        for name, value in scope.get("headers") or ():
            if name.lower() == b"x-request-id":
                raw_id = value
        request_id = accept_request_id(raw_id)
        id_header = (b"x-request-id", request_id.encode())
        method = scope.get("method", "GET") if kind == "http" else "WS"
        info = RequestInfo(request_id, method, scope.get("path", ""))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            mtype = message["type"]
            if mtype in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
                message = _with_header(message, id_header)
            elif mtype == "websocket.accept":
                status = 101
                message = _with_header(message, id_header)
            elif mtype == "websocket.close":
                if status == 0:
                    status = 403  # closed before accept: the server answers 403
                elif message.get("code") == 1013 and self.metrics is not None:
                    self.metrics.websocket_overflows.inc()
            await send(message)

        token = CURRENT.set(info)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            CURRENT.reset(token)
            route = info.route or UNMATCHED
            if self.metrics is not None:
                self.metrics.observe(route, method, status or 500, elapsed)
            polled = method == "GET" and 0 < status < 400 and route in POLLED_ROUTES
            self.access_log.log(
                logging.DEBUG if polled else logging.INFO,
                "%s %s %s %.1fms", method, info.path, status or "-", elapsed * 1000,
                extra={"requestId": request_id, "method": method, "path": info.path,
                       "route": route, "status": status or None,
                       "durationMs": round(elapsed * 1000, 3)},
            )


def _with_header(message: Message, header: tuple[bytes, bytes]) -> Message:
    headers: list[Any] = [h for h in message.get("headers") or () if h[0].lower() != header[0]]
    headers.append(header)
    return {**message, "headers": headers}
