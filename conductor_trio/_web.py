"""Shared web plumbing of the conductor and the status-api: the envelope, JSON error handlers,
and serving a Quart-Trio app with Hypercorn as a ``nursery.start`` target."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

log = logging.getLogger("conductor_trio")

_encoder = msgspec.json.Encoder()


def ok(data: Any, status: int = 200) -> Response:
    """A success envelope ``{"ok": true, "data": ...}``."""
    return Response(
        _encoder.encode({"ok": True, "data": data}), status=status, content_type="application/json"
    )


def error(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    """An error envelope ``{"ok": false, "error": {code, message, details}}``."""
    body = {"ok": False, "error": {"code": code, "message": message, "details": details or {}}}
    return Response(_encoder.encode(body), status=status, content_type="application/json")


def is_loopback(address: str | None) -> bool:
    """Whether a peer address (``request.remote_addr``) is a loopback address."""
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return address == "localhost"


_HTTP_CODES = {
    400: ("invalid_request", "The request is not valid."),
    404: ("not_found", "No such route."),
    405: ("method_not_allowed", "This route does not accept that method."),
    413: ("payload_too_large", "The request body is larger than the configured limit."),
}


def install_json_errors(app: QuartTrio) -> None:
    """Answer every HTTP error and unhandled exception with the JSON envelope, never HTML."""

    @app.after_request
    async def _drain(response: Response) -> Response:
        # Hypercorn (h11) can reuse a keep-alive connection only once the request body has been
        # consumed; a handler that answers early (401, 423) has not read it.
        if request.method in ("POST", "PUT", "PATCH") and response.status_code != 413:
            with contextlib.suppress(HTTPException):
                await request.get_data()
        return response

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status != 413:
            with contextlib.suppress(HTTPException):
                await request.get_data()
        code, message = _HTTP_CODES.get(status, (f"http_{status}", exc.description or ""))
        details: dict[str, Any] = {}
        if status == 404:
            details = {"path": request.path}
            message = f"No such route: {request.path}."
        elif status == 405:
            details = {"method": request.method, "path": request.path}
            message = f"{request.path} does not accept {request.method}."
        response = error(status, code, message, details)
        if status == 413:
            # The rest of the body was never read: the connection cannot be reused.
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def _internal(exc: Exception) -> Response:
        correlation = uuid.uuid4().hex[:12]
        log.error("internal error %s", correlation, exc_info=exc)
        return error(
            500,
            "internal_error",
            "An internal error happened; it was logged.",
            {"correlationId": correlation},
        )


def hypercorn_config(host: str, port: int, *, graceful_timeout: float = 5.0) -> HypercornConfig:
    """A quiet Hypercorn config bound to one address."""
    config = HypercornConfig()
    bind_host = f"[{host}]" if ":" in host else host
    config.bind = [f"{bind_host}:{port}"]
    config.accesslog = None
    config.errorlog = log
    config.loglevel = "WARNING"
    config.graceful_timeout = graceful_timeout
    return config


async def serve_app(
    app: QuartTrio,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled or ``shutdown_trigger`` returns.

    Calls ``task_status.started(url)`` with the bound base URL (``http://host:port``) once the
    socket listens, so port 0 works.

    **Cancellation:** a cancel closes the listener and the open connections at once; the
    ``shutdown_trigger`` path lets in-flight requests finish within ``graceful_timeout``.
    """
    config = hypercorn_config(host, port, graceful_timeout=graceful_timeout)
    await serve(
        app,
        config,
        shutdown_trigger=shutdown_trigger,
        task_status=_FirstBind(task_status),
    )


class _FirstBind:
    """Adapts Hypercorn's ``started(binds)`` to ``started(url)`` of the first bind."""

    def __init__(self, task_status: trio.TaskStatus[str]) -> None:
        self._task_status = task_status

    def started(self, binds: list[str] | None = None) -> None:
        self._task_status.started((binds or [""])[0])
