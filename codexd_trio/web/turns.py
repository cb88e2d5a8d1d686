"""``POST /v1/codexd/turn``: how a turn request is answered, by Quart's route and by the fast
path in front of Quart (issue 27).

Starting a turn is the one request on a turn's critical path: until codexd has written
``turn/start`` to Codex's stdin, Codex cannot begin. Through Quart, a turn request cost about
0.65 ms from the ASGI app's entry to the handler (the request context, werkzeug's routing, the
hooks, reading the body) and about 0.57 ms from the handler's answer to the response, on the
2-core development machine (``docs/benchmarks.md``, "A turn's timeline").
:class:`TurnFastPath` sits between the :class:`~codexd_trio.web.callers.CallerGuard` (host,
origin, token, content type: already checked) and Quart and answers the *ordinary* turn request
itself — a body with a ``Content-Length`` within the limit and no ``Idempotency-Key`` — with
the same handler, :func:`answer_turn`, and the same error answers as the route. A keyed request
(its answer is recorded and replayed by :mod:`codexd_trio.store.idempotency`), a chunked or
oversized body, and every other path, method or websocket go on to Quart untouched.
"""

from __future__ import annotations

import logging

from quart import Response

from codexd_trio.base.context import CURRENT
from codexd_trio.base.contracts import TurnRequest
from codexd_trio.base.errors import ApiError
from codexd_trio.core.service import Daemon, TurnOutcome
from codexd_trio.protocol.appserver import AppServerError
from codexd_trio.store.documents import StoreError
from codexd_trio.web.app import internal_error_response
from codexd_trio.web.asgi import Headers, plain_length, read_body, send_response
from codexd_trio.web.callers import ASGIApp, Receive, Scope, Send
from codexd_trio.web.envelope import api_error_response, decode_body, error_response
from codexd_trio.web.queue_routes import turn_outcome_answer

__all__ = [
    "TURN_PATH",
    "TurnFastPath",
    "answer_turn",
    "app_server_error_response",
    "store_error_response",
]

log = logging.getLogger("codexd.api")

TURN_PATH = "/v1/codexd/turn"

# JSON-RPC "invalid request" and "invalid params".
_JSONRPC_BAD_PARAMS = frozenset({-32600, -32602})
# App-server methods that carry a client's input items verbatim.
_INPUT_METHODS = frozenset({"turn/start", "turn/steer"})


async def answer_turn(daemon: Daemon, body: TurnRequest) -> Response:
    """Start the turn (or queue it, ``whenBusy: "queue"``): the 202 answer."""
    if body.whenBusy == "queue":  # issue 23: wait in the session's queue if busy
        return turn_outcome_answer(await daemon.turn_or_queue(body))
    session, turn_id = await daemon.start_turn(body)
    log.info("turn %s started on %s", turn_id, session.sessionId,
             extra={"sessionId": session.sessionId, "turnId": turn_id})
    return turn_outcome_answer(TurnOutcome(session, turn_id=turn_id))


def app_server_error_response(exc: AppServerError) -> Response:
    """Codexd's answer when Codex refused a request: 400 for the caller's turn input, else 502."""
    if exc.method in _INPUT_METHODS and exc.code in _JSONRPC_BAD_PARAMS:
        # The turn's input items go to the app-server as the caller wrote them: its refusal
        # of their shape is the caller's bad request, not a failing upstream.
        return error_response(
            "invalid_request",
            f"the app-server refused the turn input: {exc.message}",
            400,
            field="input",
            method=exc.method,
            jsonrpcCode=exc.code,
            jsonrpcMessage=exc.message,
        )
    return error_response(
        "app_server_error",
        f"the app-server refused {exc.method}: {exc.message}",
        502,
        method=exc.method,
        jsonrpcCode=exc.code,
        jsonrpcMessage=exc.message,
    )


def store_error_response(exc: StoreError) -> Response:
    """A state file the answer waits for cannot be written (a full disk): the change is kept
    and retried by its writer; the caller gets the documented 503, not a 500."""
    return error_response(
        "store_unavailable", f"a state file cannot be written yet: {exc}", 503,
        file=exc.path.name,
    )


class TurnFastPath:
    """ASGI middleware: answer the ordinary ``POST /v1/codexd/turn`` without Quart (see the
    module docstring); pass every other request, and every websocket, to ``app``."""

    def __init__(self, app: ASGIApp, daemon: Daemon, *, max_body_bytes: int) -> None:
        self.app = app
        self.daemon = daemon
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope.get("path") != TURN_PATH or scope.get("type") != "http"
                or scope.get("method") != "POST"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope.get("headers"))
        if headers.get("Idempotency-Key") is not None or not plain_length(
                headers, self.max_body_bytes):
            await self.app(scope, receive, send)
            return
        info = CURRENT.get()
        if info is not None:
            info.route = TURN_PATH
        data = await read_body(receive)
        if data is None:
            return  # the client went away before its request was whole: nothing started
        await send_response(send, await self._respond(data))

    async def _respond(self, data: bytes) -> Response:
        # The route's handler and error answers (routes.py registers the same functions).
        try:
            return await answer_turn(self.daemon, decode_body(data, TurnRequest))
        except ApiError as exc:
            return api_error_response(exc)
        except AppServerError as exc:
            return app_server_error_response(exc)
        except StoreError as exc:
            return store_error_response(exc)
        except Exception as exc:
            return internal_error_response("codexd", log, "POST", TURN_PATH, exc)
