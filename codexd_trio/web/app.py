"""Installing the shared web layer on a Quart-Trio app, and serving it with Hypercorn.

:func:`install` gives every daemon (codexd, conductor, status-api) the same plumbing:

* JSON error envelopes for 404/405/413/500 and for :class:`~codexd_trio.base.errors.ApiError`
  (details: 404 ``{method, path}``, 405 ``{method, path, allowed}``, 413 ``{limit}``,
  500 ``{correlationId}``, the id also in the log line);
* draining of unread request bodies, so a keep-alive connection stays usable after an early
  answer (h11 only reuses a connection whose body was consumed);
* ``GET /metrics`` (Prometheus) and ``GET /openapi.json``;
* the ASGI middlewares: :class:`~codexd_trio.web.observe.Observe` (request id, metrics,
  access log) around :class:`~codexd_trio.web.callers.CallerGuard` (CONTRACT.md "Who may call").
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, has_websocket_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from codexd_trio.base.context import CURRENT
from codexd_trio.base.errors import ApiError
from codexd_trio.base.metrics import CONTENT_TYPE, AppMetrics
from codexd_trio.web.callers import CallerPolicy, guard
from codexd_trio.web.envelope import api_error_response, error_response
from codexd_trio.web.observe import Observe

__all__ = [
    "WEBSOCKET_MAX_CLIENT_MESSAGE",
    "WebSetup",
    "hypercorn_config",
    "install",
    "install_errors",
    "internal_error_response",
    "quart_rule_path",
    "serve_app",
]

# The largest message a websocket client may send (bytes); see hypercorn_config.
WEBSOCKET_MAX_CLIENT_MESSAGE = 64 * 1024


@dataclass
class WebSetup:
    """What :func:`install` needs to know about one daemon.

    Args:
        name: the daemon's name for messages (``codexd``, ``conductor``, ``status-api``).
        policy: who may call it.
        log: where internal errors are logged (with their correlation id).
        metrics: its metrics (prefix ``codexd``, ``conductor``, ``status_api``).
        openapi: builds its OpenAPI document (called once, on the first request for it).
        max_body_bytes: the request body limit (413 beyond it).
    """

    name: str
    policy: CallerPolicy
    log: logging.Logger
    metrics: AppMetrics
    openapi: Callable[[], dict[str, Any]]
    max_body_bytes: int


def quart_rule_path(rule: str) -> str:
    """A Quart/werkzeug rule (``/a/<b>``, ``/a/<int:b>``) as an OpenAPI path (``/a/{b}``)."""
    out = []
    for part in rule.split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = "{" + part[1:-1].rsplit(":", 1)[-1] + "}"
        out.append(part)
    return "/".join(out)


def install(app: QuartTrio, setup: WebSetup) -> None:
    """Give ``app`` the shared plumbing (see the module docstring)."""
    install_errors(app, name=setup.name, log=setup.log, max_body_bytes=setup.max_body_bytes)
    document: list[bytes] = []

    def _record_route(rule: Any) -> None:
        info = CURRENT.get()
        if info is not None and rule is not None:
            info.route = quart_rule_path(rule.rule)

    @app.before_request
    async def _route_of_request() -> None:
        _record_route(request.url_rule)

    @app.before_websocket
    async def _route_of_websocket() -> None:
        _record_route(websocket.url_rule)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(setup.metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/openapi.json")
    async def openapi() -> Response:
        if not document:
            document.append(json.dumps(setup.openapi(), separators=(",", ":")).encode())
        return Response(document[0], content_type="application/json")

    guard(app, setup.policy)
    quart: Any = app  # the middleware slot; Quart types it with its own ASGI TypedDicts
    quart.asgi_app = Observe(
        quart.asgi_app, setup.metrics, logging.getLogger(f"{setup.log.name.split('.')[0]}.access")
    )


def install_errors(
    app: QuartTrio, *, name: str, log: logging.Logger, max_body_bytes: int
) -> None:
    """JSON envelopes for every error (404/405/413/500, ``ApiError``) and body draining."""
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False

    @app.after_request
    async def _drain(response: Response) -> Response:
        # A handler (or error handler) that answered before reading the body leaves it
        # unread; h11 can only reuse the connection once it is consumed. 413 is the
        # exception: that body is never read (its answer says Connection: close).
        if response.status_code != 413 and (
            request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "")
        ):
            with contextlib.suppress(HTTPException):
                await request.get_data(cache=False)
        return response

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return api_error_response(exc)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        method, path = _method_path()
        if status == 404:
            return error_response(
                "not_found", f"no route {method} {path}", 404, method=method, path=path,
            )
        if status == 405:
            allowed = getattr(exc, "valid_methods", None) or []
            return error_response(
                "method_not_allowed", f"{method} is not allowed on {path}", 405,
                method=method, path=path, allowed=sorted(allowed),
            )
        if status == 413:
            response = error_response(
                "payload_too_large",
                f"the request body is larger than {max_body_bytes} bytes", 413,
                limit=max_body_bytes,
            )
            # The rest of the body was never read: the connection cannot be reused.
            response.headers["Connection"] = "close"
            return response
        if status == 400:
            return error_response("invalid_request", exc.description or "bad request", 400)
        return error_response(f"http_{status}", exc.description or exc.name, status)

    @app.errorhandler(Exception)
    async def _internal(exc: Exception) -> Response:
        return internal_error_response(name, log, *_method_path(), exc)


def internal_error_response(name: str, log: logging.Logger, method: str, path: str,
                            exc: BaseException) -> Response:
    """The 500 of a bug: an envelope with a correlation id, the traceback in ``log`` under
    the same id."""
    correlation = f"err-{uuid.uuid4().hex[:12]}"
    log.error(
        "internal error %s on %s %s", correlation, method, path,
        exc_info=exc, extra={"correlationId": correlation},
    )
    return error_response(
        "internal_error", f"{name} hit an internal error; see its log", 500,
        correlationId=correlation,
    )


def _method_path() -> tuple[str, str]:
    # The error handlers serve websocket requests too, where there is no `request`.
    if has_websocket_context():
        return "WS", websocket.path
    return request.method, request.path


def hypercorn_config(
    host: str, port: int, *, graceful_timeout: float, errorlog: logging.Logger
) -> HypercornConfig:
    """A quiet Hypercorn config bound to one address (access lines come from ``Observe``)."""
    config = HypercornConfig()
    bind_host = f"[{host}]" if ":" in host else host
    config.bind = [f"{bind_host}:{port}"]
    config.accesslog = None
    # Through our logging setup (one line each), not Hypercorn's own stream handler.
    config.errorlog = errorlog
    config.loglevel = "WARNING"
    config.graceful_timeout = graceful_timeout
    config.include_server_header = False
    # Our websockets only send (event streams): what a client sends is read and dropped
    # (codexd_trio.web.websockets), so a big message is only a cost. Hypercorn closes with 1009
    # beyond this instead of buffering up to its 16 MiB default.
    config.websocket_max_message_size = WEBSOCKET_MAX_CLIENT_MESSAGE
    return config


async def serve_app(
    app: QuartTrio,
    host: str,
    port: int,
    *,
    errorlog: logging.Logger | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled or ``shutdown_trigger`` returns.

    Calls ``task_status.started(url)`` with the first bound base URL (``http://host:port``)
    once the socket listens, so port 0 works.

    **Cancellation:** a cancel closes the listener and the open connections at once; the
    ``shutdown_trigger`` path lets in-flight requests finish within ``graceful_timeout``.
    """
    config = hypercorn_config(
        host, port, graceful_timeout=graceful_timeout,
        errorlog=errorlog or logging.getLogger("baa.http"),
    )
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve, app, config, shutdown_trigger=shutdown_trigger)
        )
        task_status.started(binds[0])
