"""codexd's routes for the turn queues and the hold (issue 23), installed by
:func:`codexd_trio.web.routes.create_app` (``POST /v1/codexd/turn`` with ``whenBusy: "queue"``
is answered there, with :func:`turn_outcome_answer`).

Writes go through the same ``Idempotency-Key`` handling as every other write (DELETE too: a
retried removal gets the first answer, not a 404).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from quart import Response
from quart_trio import QuartTrio

from codexd_trio.base.contracts import HoldRequest, MoveRequest
from codexd_trio.core.service import Daemon, TurnOutcome
from codexd_trio.web.envelope import envelope

__all__ = ["install_queue_routes", "turn_outcome_answer"]

Idempotent = Callable[[str, Callable[[bytes], Awaitable[Response]]], Awaitable[Response]]
Post = Callable[[str, type[Any], Callable[[Any], Awaitable[Response]]], Awaitable[Response]]


def turn_outcome_answer(outcome: TurnOutcome) -> Response:
    """202: a started turn (``accepted``, ``turnId``) or a queued one (``queued``, ``queueId``,
    ``position`` from 0, ``entry``), with the session as it is now."""
    session = msgspec.to_builtins(outcome.session)
    if outcome.entry is None:
        return envelope({"accepted": True, "queued": False, "sessionId": outcome.session.sessionId,
                         "turnId": outcome.turn_id, "session": session}, 202)
    return envelope({
        "accepted": False, "queued": True, "sessionId": outcome.session.sessionId,
        "queueId": outcome.entry.queueId, "position": outcome.position,
        "entry": msgspec.to_builtins(outcome.entry), "session": session,
    }, 202)


def install_queue_routes(app: QuartTrio, daemon: Daemon, idempotent: Idempotent,
                         post: Post) -> None:
    """Add the queue and hold routes to codexd's ``app``.

    Args:
        idempotent: runs a write through the ``Idempotency-Key`` store (``routes._idempotent``).
        post: decodes a JSON body into a request type, then the same (``routes._post``).
    """

    def queue_answer(session_id: str) -> Response:
        return envelope({"queue": msgspec.to_builtins(daemon.queue_view(session_id))})

    @app.get("/v1/codexd/sessions/<session_id>/queue")
    async def read_queue(session_id: str) -> Response:
        return queue_answer(session_id)

    @app.post("/v1/codexd/sessions/<session_id>/queue/resume")
    async def resume_queue(session_id: str) -> Response:
        async def run(_body: bytes) -> Response:
            await daemon.resume_queue(session_id)
            return queue_answer(session_id)

        return await idempotent(f"POST /v1/codexd/sessions/{session_id}/queue/resume", run)

    @app.delete("/v1/codexd/sessions/<session_id>/queue/<queue_id>")
    async def remove_queued(session_id: str, queue_id: str) -> Response:
        async def run(_body: bytes) -> Response:
            entry, view = await daemon.remove_queued(session_id, queue_id)
            return envelope({"removed": msgspec.to_builtins(entry),
                             "queue": msgspec.to_builtins(view)})

        return await idempotent(f"DELETE /v1/codexd/sessions/{session_id}/queue/{queue_id}", run)

    @app.post("/v1/codexd/sessions/<session_id>/queue/<queue_id>/move")
    async def move_queued(session_id: str, queue_id: str) -> Response:
        async def handle(body: MoveRequest) -> Response:
            view = await daemon.move_queued(session_id, queue_id, body.position)
            return envelope({"queue": msgspec.to_builtins(view)})

        return await post(f"POST /v1/codexd/sessions/{session_id}/queue/{queue_id}/move",
                          MoveRequest, handle)

    @app.get("/v1/codexd/hold")
    async def read_hold() -> Response:
        return envelope({"hold": msgspec.to_builtins(daemon.hold())})

    @app.post("/v1/codexd/hold")
    async def set_hold() -> Response:
        async def handle(body: HoldRequest) -> Response:
            return envelope({"hold": msgspec.to_builtins(await daemon.set_hold(body))})

        return await post("POST /v1/codexd/hold", HoldRequest, handle)
