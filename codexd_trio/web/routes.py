"""codexd's HTTP and WebSocket API: Quart-Trio routes over
:class:`~codexd_trio.core.service.Daemon`.

Bodies are decoded with msgspec into the request types of :mod:`codexd_trio.base.contracts`; every
answer is the JSON envelope of CONTRACT.md, including 404/405/413/500 (never an HTML page):
the shared plumbing (errors, caller rules, request ids, metrics, ``/openapi.json``) is
:mod:`codexd_trio.web.app`.
POST routes honour an ``Idempotency-Key`` header (see :mod:`codexd_trio.store.idempotency`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import msgspec
import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from codexd_trio import __version__
from codexd_trio.base.contracts import (
    CreateSessionRequest,
    DecisionRequest,
    HelloData,
    HelloFrame,
    InterruptRequest,
    OverflowData,
    OverflowFrame,
    Session,
    SteerRequest,
    TurnRequest,
)
from codexd_trio.base.errors import ApiError, InvalidRequest
from codexd_trio.core.service import Daemon
from codexd_trio.core.subscription import BATCH_MAX_EVENTS, Overflowed, Subscription
from codexd_trio.protocol.appserver import AppServerError
from codexd_trio.store.documents import StoreError
from codexd_trio.store.idempotency import Answer
from codexd_trio.web import CallerPolicy
from codexd_trio.web.api_doc import codexd_openapi, codexd_ops, codexd_websockets
from codexd_trio.web.app import WebSetup, install, serve_app
from codexd_trio.web.approval_rules import install_approval_rule_routes
from codexd_trio.web.conversation import install_conversation
from codexd_trio.web.envelope import (
    api_error_response,
    decode_body,
    decode_cursor,
    decode_key_cursor,
    encode_cursor,
    encode_key_cursor,
    envelope,
    error_response,
    int_arg,
)
from codexd_trio.web.openapi import described_routes
from codexd_trio.web.queue_routes import install_queue_routes
from codexd_trio.web.turns import (
    TurnFastPath,
    answer_turn,
    app_server_error_response,
    store_error_response,
)
from codexd_trio.web.websockets import discarding_client_frames

log = logging.getLogger("codexd.api")
_encoder = msgspec.json.Encoder()
T = TypeVar("T")
# The largest page a GET list route hands out (?limit=); more is a 400 naming it.
MAX_PAGE = 1000


def _turn_answer(session: Session, turn_id: str, status: int) -> Response:
    """The answer of the turn verbs: the turn id and the session as it is now."""
    return envelope(
        {
            "accepted": True,
            "sessionId": session.sessionId,
            "turnId": turn_id,
            "session": msgspec.to_builtins(session),
        },
        status,
    )


def create_app(daemon: Daemon) -> QuartTrio:
    """Build the Quart-Trio app for one daemon."""
    cfg = daemon.config
    app = QuartTrio("codexd")
    # The ordinary turn request skips Quart (issue 27); install() puts the caller guard and
    # Observe around it, so it sees only requests the guard let through.
    quart: Any = app  # the middleware slot; Quart types it with its own ASGI TypedDicts
    quart.asgi_app = TurnFastPath(quart.asgi_app, daemon, max_body_bytes=cfg.max_body_bytes)
    install(
        app,
        WebSetup(
            name="codexd",
            policy=CallerPolicy(
                daemon="codexd",
                listen_host=cfg.host,
                allowed_hosts=cfg.allowed_hosts,
                allowed_origins=cfg.allowed_origins,
                token=cfg.token,
                host_setting="--allowed-host (BAA_CODEXD_ALLOWED_HOSTS)",
            ),
            log=log,
            metrics=daemon.metrics.http,
            openapi=lambda: codexd_openapi(
                events_path=cfg.event_stream_path, token=cfg.token is not None
            ),
            max_body_bytes=cfg.max_body_bytes,
        ),
    )
    idem = daemon.idem
    stream_path = cfg.event_stream_path
    routes = described_routes(codexd_ops(events_path=stream_path), codexd_websockets(stream_path))

    @app.errorhandler(AppServerError)
    async def _app_server_error(exc: AppServerError) -> Response:
        return app_server_error_response(exc)

    @app.errorhandler(StoreError)
    async def _store_error(exc: StoreError) -> Response:
        return store_error_response(exc)

    async def _idempotent(route: str, run: Callable[[bytes], Awaitable[Response]]) -> Response:
        """Read the body and run ``run(body)``, through the Idempotency-Key store if keyed.

        A keyed request runs detached from this handler's task, recording included: a client
        that goes away and retries with the same key finds the outcome.
        """
        data = await request.get_data(cache=False, as_text=False)
        assert isinstance(data, bytes)
        key = request.headers.get("Idempotency-Key")
        if not key:
            return await run(data)

        async def answer() -> Answer:
            response = await run(data)
            body = await response.get_data(as_text=False)
            assert isinstance(body, bytes)
            return Answer(response.status_code, body, response.content_type or "application/json")

        got = await daemon.detached(partial(idem.run, key, route, data, answer))
        response = Response(got.body, status=got.status, content_type=got.content_type)
        if got.replayed:
            response.headers["Idempotency-Replayed"] = "true"
        return response

    async def _post(
        route: str, body_type: type[T], handler: Callable[[T], Awaitable[Response]]
    ) -> Response:
        async def run(data: bytes) -> Response:
            return await handler(decode_body(data, body_type))

        return await _idempotent(route, run)

    # ---------------------------------------------------------------- probes

    @app.get("/healthz")
    async def healthz() -> Response:
        uptime = trio.current_time() - daemon.started_monotonic
        return envelope({"status": "ok", "pid": os.getpid(), "uptimeS": round(uptime, 3)})

    @app.get("/readyz")
    async def readyz() -> Response:
        code, reason = daemon.readiness()
        if code is not None:
            return error_response(
                code, reason, 503, child=msgspec.to_builtins(daemon.child),
                eventsWaiting=daemon.log.waiting,
            )
        return envelope({"ready": True, "child": msgspec.to_builtins(daemon.child)})

    @app.get("/describe")
    async def describe() -> Response:
        return envelope(
            {
                "name": "codexd",
                "surface": "local-api",
                "version": __version__,
                "routes": routes,
                "eventStream": {
                    "path": stream_path,
                    "url": daemon.status().service.eventStreamUrl,
                },
                "errors": "every error is {ok:false, error:{code, message, details}}",
            }
        )

    @app.get("/v1/codexd/status")
    async def status() -> Response:
        return envelope(daemon.status())

    # ---------------------------------------------------------------- sessions

    @app.get("/v1/codexd/sessions")
    async def list_sessions() -> Response:
        limit = int_arg("limit", request.args.get("limit"), default=500, minimum=1,
                        maximum=MAX_PAGE) or 500
        status = request.args.get("status") or None
        if status not in (None, "active", "closed"):
            raise InvalidRequest("status must be active or closed", field="status")
        order = request.args.get("order") or "created"
        cursor = request.args.get("cursor")
        if order == "activity":
            # Newest activity first: what a console lists on top.
            page, key = daemon.book.page_by_activity(
                before=decode_key_cursor(cursor), limit=limit, status=status)
            return envelope({"sessions": page, "nextCursor": encode_key_cursor(key)})
        if order != "created":
            raise InvalidRequest("order must be created or activity", field="order")
        start = decode_cursor(cursor)
        page, following = daemon.book.page(start=start, limit=limit, status=status)
        return envelope({"sessions": page, "nextCursor": encode_cursor(following)})

    @app.post("/v1/codexd/sessions")
    async def create_session() -> Response:
        async def handle(body: CreateSessionRequest) -> Response:
            session = await daemon.create_session(body)
            log.info("session %s created", session.sessionId,
                     extra={"sessionId": session.sessionId, "threadId": session.threadId})
            return envelope({"session": msgspec.to_builtins(session)}, 201)

        return await _post("POST /v1/codexd/sessions", CreateSessionRequest, handle)

    @app.get("/v1/codexd/sessions/<session_id>")
    async def read_session(session_id: str) -> Response:
        session = daemon.book.get(session_id)
        recent = daemon.hub.recent(session_id=session_id)
        return envelope(
            {
                "session": msgspec.to_builtins(session),
                "recentEvents": [msgspec.to_builtins(e) for e in recent],
            }
        )

    @app.post("/v1/codexd/sessions/<session_id>/close")
    async def close_session(session_id: str) -> Response:
        async def run(_body: bytes) -> Response:
            session = await daemon.close_session(session_id)
            return envelope({"session": msgspec.to_builtins(session)})

        return await _idempotent(f"POST /v1/codexd/sessions/{session_id}/close", run)

    # ---------------------------------------------------------------- turns

    @app.post("/v1/codexd/turn")
    async def start_turn() -> Response:
        # The ordinary request is answered by TurnFastPath, with the same handler.
        return await _post("POST /v1/codexd/turn", TurnRequest, partial(answer_turn, daemon))

    install_queue_routes(app, daemon, _idempotent, _post)

    @app.post("/v1/codexd/turn/steer")
    async def steer_turn() -> Response:
        async def handle(body: SteerRequest) -> Response:
            return _turn_answer(*await daemon.steer_turn(body), 200)

        return await _post("POST /v1/codexd/turn/steer", SteerRequest, handle)

    @app.post("/v1/codexd/turn/interrupt")
    async def interrupt_turn() -> Response:
        async def handle(body: InterruptRequest) -> Response:
            return _turn_answer(*await daemon.interrupt_turn(body), 202)

        return await _post("POST /v1/codexd/turn/interrupt", InterruptRequest, handle)

    # ---------------------------------------------------------------- approvals

    @app.get("/v1/codexd/approvals")
    async def list_approvals() -> Response:
        state = request.args.get("state")
        if state not in (None, "pending", "resolved", "expired"):
            raise InvalidRequest("state must be one of pending, resolved, expired", field="state")
        items = daemon.approvals(state)
        return envelope({"approvals": [msgspec.to_builtins(a) for a in items]})

    @app.get("/v1/codexd/approvals/<approval_id>")
    async def read_approval(approval_id: str) -> Response:
        return envelope({"approval": msgspec.to_builtins(daemon.approval(approval_id))})

    @app.post("/v1/codexd/approvals/<approval_id>")
    async def decide_approval(approval_id: str) -> Response:
        async def handle(body: DecisionRequest) -> Response:
            approval = await daemon.decide_approval(approval_id, body.decision, body.decidedBy)
            return envelope({"approval": msgspec.to_builtins(approval)})

        return await _post(f"POST /v1/codexd/approvals/{approval_id}", DecisionRequest, handle)

    install_approval_rule_routes(app, daemon, _post)

    # ---------------------------------------------------------------- the conversation

    install_conversation(app, daemon, _post, _idempotent)

    # ---------------------------------------------------------------- events

    @app.get(stream_path)
    async def events_page() -> Response:
        after = int_arg("after", request.args.get("after"), default=0) or 0
        limit = int_arg("limit", request.args.get("limit"), default=100, minimum=1,
                        maximum=MAX_PAGE) or 100
        session_id = request.args.get("sessionId") or None
        events = await daemon.log.read_after(after, limit=limit, session_id=session_id)
        next_after = events[-1].seq if events else after
        return envelope(
            {
                "events": [msgspec.to_builtins(e) for e in events],
                "lastSeq": daemon.hub.published_seq,
                "nextAfter": next_after,
            }
        )

    @app.websocket(stream_path)
    async def events_stream() -> Response | None:
        try:
            after = int_arg("after", websocket.args.get("after"), default=None)
        except ApiError as exc:
            return api_error_response(exc)
        session_id = websocket.args.get("sessionId") or None
        batch = websocket.args.get("batch")
        if batch not in (None, "0", "1"):
            return error_response(
                "invalid_request", "batch must be 0 or 1", 400, path="batch", value=batch
            )
        if daemon.stopping:
            return error_response("shutting_down", "codexd is shutting down", 503)
        await websocket.accept()
        subscription = daemon.hub.subscribe(after=after, session_id=session_id)
        with daemon.stream_open():
            # Read what the client sends, or its leaving goes unseen (see the module).
            async with discarding_client_frames():
                await _stream(subscription, batched=batch == "1")
        return None

    async def _stream(subscription: Subscription, *, batched: bool) -> None:
        async with subscription:
            hello = HelloFrame(
                data=HelloData(lastSeq=subscription.last_seq, replayFrom=subscription.replay_from)
            )
            await websocket.send(_encoder.encode(hello).decode())
            try:
                # The hub hands over whatever is waiting at once, each event's JSON encoded
                # once for every subscriber. ?batch=1 puts a batch in one frame (a JSON array):
                # the per-frame cost (a send syscall, Hypercorn and wsproto) is paid per batch.
                # One event per frame takes a few at a time, so what a slow client can lag
                # before it overflows stays close to its queue.
                limit = BATCH_MAX_EVENTS if batched else 64
                while batch := await subscription.next_batch(max_events=limit):
                    if batched:
                        await websocket.send("[" + ",".join(text for _, text in batch) + "]")
                    else:
                        for _, text in batch:
                            await websocket.send(text)
            except Overflowed as exc:
                frame = OverflowFrame(data=OverflowData(lastDeliveredSeq=exc.last_delivered_seq))
                await websocket.send(_encoder.encode(frame).decode())
                await websocket.close(1013, "consumer too slow; reconnect with after=")
                return None
        await websocket.close(1001, "codexd is shutting down")
        return None

    return app


async def serve_api(
    daemon: Daemon,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until ``shutdown`` is set; reports the bound base URL when listening.

    Cancellation: Hypercorn closes its listeners; open connections are cancelled.
    """
    cfg = daemon.config

    async def listening(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_app(
            create_app(daemon), cfg.host, cfg.port, errorlog=logging.getLogger("codexd.http"),
            shutdown_trigger=shutdown.wait, graceful_timeout=3.0, task_status=task_status,
        )

    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(listening)
        daemon.serving_at(url)
        task_status.started(url)


__all__ = ["create_app", "decode_body", "envelope", "error_response", "serve_api"]
