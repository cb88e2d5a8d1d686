"""codexd's conversation routes (issue 22): transcripts, Codex's threads and the thread verbs.

Installed by :func:`codexd_trio.web.routes.create_app` with its POST helpers, so the writes go
through the same body decoding and ``Idempotency-Key`` handling as every other write. Their
OpenAPI operations are :func:`codexd_trio.web.api_doc.conversation_ops`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from codexd_trio.base.contracts import Session
from codexd_trio.base.errors import InvalidRequest
from codexd_trio.base.transcript import ForkRequest, ReviewRequest, RollbackRequest, TitleRequest
from codexd_trio.core.service import Daemon
from codexd_trio.web.envelope import (
    decode_body,
    decode_turn_cursor,
    encode_turn_cursor,
    envelope,
    int_arg,
)

__all__ = ["install_conversation"]

T = TypeVar("T")
Post = Callable[[str, type[Any], Callable[[Any], Awaitable[Response]]], Awaitable[Response]]
Idempotent = Callable[[str, Callable[[bytes], Awaitable[Response]]], Awaitable[Response]]

# Turns per transcript page: default and most (a turn can carry several capped items).
DEFAULT_TURNS = 50
MAX_TURNS = 1000
DEFAULT_THREADS = 50
MAX_THREADS = 200


def _turn_answer(session: Session, turn_id: str) -> Response:
    return envelope({"accepted": True, "sessionId": session.sessionId, "turnId": turn_id,
                     "session": msgspec.to_builtins(session)}, 202)


def _order(raw: str | None) -> Literal["asc", "desc"]:
    if raw in (None, "", "asc"):
        return "asc"
    if raw == "desc":
        return "desc"
    raise InvalidRequest("order must be asc or desc", field="order")


def _bool(name: str, raw: str | None) -> bool | None:
    if raw in (None, ""):
        return None
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise InvalidRequest(f"query parameter {name} must be true or false", field=name)


def install_conversation(app: QuartTrio, daemon: Daemon, post: Post,
                         idempotent: Idempotent) -> None:
    """Add the conversation routes to codexd's app.

    Args:
        post: ``post(route, body_type, handler)``: decode the body, honour the
            Idempotency-Key, run ``handler(body)`` (codexd's ``_post``).
        idempotent: ``idempotent(route, run)``: the same with the raw body (``_idempotent``).
    """

    async def post_optional(route: str, body_type: type[T],
                            handler: Callable[[T], Awaitable[Response]]) -> Response:
        # A body that may be left out: empty means every field's default.
        async def run(data: bytes) -> Response:
            return await handler(decode_body(data, body_type) if data.strip() else body_type())

        return await idempotent(route, run)

    @app.get("/v1/codexd/sessions/<session_id>/transcript")
    async def transcript(session_id: str) -> Response:
        daemon.book.get(session_id)  # 404 first
        order = _order(request.args.get("order"))
        limit = int_arg("limit", request.args.get("limit"), default=DEFAULT_TURNS, minimum=1,
                        maximum=MAX_TURNS) or DEFAULT_TURNS
        start = decode_turn_cursor(request.args.get("cursor"), order)
        page, following = await daemon.transcripts.transcript(
            session_id, order=order, start=start, limit=limit)
        return envelope(msgspec.structs.replace(
            page, nextCursor=encode_turn_cursor(order, following)))

    @app.get("/v1/codexd/sessions/<session_id>/transcript/items/<item_id>")
    async def transcript_item(session_id: str, item_id: str) -> Response:
        daemon.book.get(session_id)
        return envelope(await daemon.transcripts.item(session_id, item_id))

    @app.get("/v1/codexd/threads")
    async def list_threads() -> Response:
        limit = int_arg("limit", request.args.get("limit"), default=DEFAULT_THREADS, minimum=1,
                        maximum=MAX_THREADS) or DEFAULT_THREADS
        return envelope(await daemon.list_threads(
            cursor=request.args.get("cursor") or None, limit=limit,
            cwd=request.args.get("cwd") or None, search=request.args.get("search") or None,
            archived=_bool("archived", request.args.get("archived"))))

    @app.get("/v1/codexd/threads/<thread_id>")
    async def read_thread(thread_id: str) -> Response:
        limit = int_arg("limit", request.args.get("limit"), default=DEFAULT_TURNS, minimum=1,
                        maximum=MAX_TURNS) or DEFAULT_TURNS
        return envelope(await daemon.read_thread(
            thread_id, cursor=request.args.get("cursor") or None, limit=limit))

    @app.post("/v1/codexd/sessions/<session_id>/fork")
    async def fork(session_id: str) -> Response:
        async def handle(body: ForkRequest) -> Response:
            session = await daemon.fork_session(session_id, body)
            return envelope({"session": msgspec.to_builtins(session)}, 201)

        return await post_optional(f"POST /v1/codexd/sessions/{session_id}/fork", ForkRequest,
                                   handle)

    @app.post("/v1/codexd/sessions/<session_id>/rollback")
    async def rollback(session_id: str) -> Response:
        async def handle(body: RollbackRequest) -> Response:
            return envelope(await daemon.rollback_session(session_id, body))

        return await post_optional(f"POST /v1/codexd/sessions/{session_id}/rollback",
                                   RollbackRequest, handle)

    @app.post("/v1/codexd/sessions/<session_id>/compact")
    async def compact(session_id: str) -> Response:
        async def handle(_body: _Empty) -> Response:
            return _turn_answer(*await daemon.compact_session(session_id))

        return await post_optional(f"POST /v1/codexd/sessions/{session_id}/compact", _Empty,
                                   handle)

    @app.post("/v1/codexd/sessions/<session_id>/review")
    async def review(session_id: str) -> Response:
        async def handle(body: ReviewRequest) -> Response:
            return _turn_answer(*await daemon.review_session(session_id, body))

        return await post_optional(f"POST /v1/codexd/sessions/{session_id}/review",
                                   ReviewRequest, handle)

    @app.post("/v1/codexd/sessions/<session_id>/title")
    async def title(session_id: str) -> Response:
        async def handle(body: TitleRequest) -> Response:
            session = await daemon.set_title(session_id, body)
            return envelope({"session": msgspec.to_builtins(session)})

        return await post(f"POST /v1/codexd/sessions/{session_id}/title", TitleRequest, handle)


class _Empty(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A body with nothing in it (``{}``, or none)."""
