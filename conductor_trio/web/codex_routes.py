"""The conductor's ``/v1/codex/*`` routes: codexd's operations relayed (:mod:`.proxy`), with
the node's mode applied where it refuses new work (423 while paused or draining) and the turn
queue's exception (a queued turn is taken while held, once codexd confirms the hold).

Who may call is decided before any of these run (the ``before_request`` and
``before_websocket`` hooks of :func:`conductor_trio.web.app.create_app`); each handler only
forwards.

The routes that only relay are also in :data:`conductor_trio.web.fastpath.FAST_ROUTES`, which
serves them without Quart when nothing would refuse them: a route that gains a check of its own
here leaves that table (or the check moves where both read it).
"""

from __future__ import annotations

from urllib.parse import quote

import msgspec
from quart import Response, g, request
from quart_trio import QuartTrio

from codexd_trio.web.envelope import error
from conductor_trio.mode import Mode
from conductor_trio.service import Conductor
from conductor_trio.web.proxy import proxy_http, relay_events

__all__ = ["install_codex_routes"]


class _WhenBusy(msgspec.Struct, kw_only=True):
    """The one member of a turn body the conductor reads (codexd checks the whole body)."""

    whenBusy: str | None = None


def _asks_to_queue(raw: bytes) -> bool:
    try:
        return msgspec.json.decode(raw, type=_WhenBusy).whenBusy == "queue"
    except msgspec.DecodeError:  # ValidationError included: codexd answers the bad body
        return False


def install_codex_routes(app: QuartTrio, conductor: Conductor) -> None:
    """Add every proxied ``/v1/codex/*`` route to ``app`` (``GET /v1/codex``, the conductor's
    own view, stays in the app)."""
    cfg = conductor.config

    def refuse_if(modes: tuple[Mode, ...]) -> Response | None:
        record = conductor.modes.current
        if record.mode not in modes:
            return None
        code = "system_paused" if record.mode == "paused" else "system_draining"
        message = ("The system is paused: new work is refused." if record.mode == "paused"
                   else "The system is draining: new turns are refused.")
        return error(423, code, message, {"mode": record.mode, "reason": record.reason,
                                          "requested_by": record.requested_by})

    @app.route("/v1/codex/sessions", methods=["GET", "POST"])
    async def sessions() -> Response:
        if request.method == "POST" and (refused := refuse_if(("paused",))):
            return refused
        return await proxy_http(conductor, "/v1/codexd/sessions")

    @app.get("/v1/codex/metrics")
    async def codex_metrics() -> Response:
        # codexd's own Prometheus text (turns, child, event log): the console's highlights, and
        # a scraper that can reach only the conductor.
        return await proxy_http(conductor, "/metrics")

    @app.get("/v1/codex/sessions/<session_id>")
    async def session(session_id: str) -> Response:
        return await proxy_http(conductor, f"/v1/codexd/sessions/{quote(session_id, safe='')}")

    @app.post("/v1/codex/sessions/<session_id>/close")
    async def close_session(session_id: str) -> Response:
        # Never refused by the mode: closing ends work, and a paused or draining node is
        # exactly where someone winds sessions down.
        return await proxy_http(
            conductor, f"/v1/codexd/sessions/{quote(session_id, safe='')}/close")

    @app.post("/v1/codex/turn")
    async def turn() -> Response:
        if refused := refuse_if(("paused", "draining")):
            # A queued turn is accepted while paused or draining (a person hands over work to
            # a held node; it starts on resume), once codexd confirms it holds the queues:
            # asked every time, not taken from a cached status (codexd may have restarted).
            raw = await request.get_data(as_text=False)
            assert isinstance(raw, bytes)
            if not _asks_to_queue(raw):
                return refused
            if not await conductor.hold.push():
                return error(503, "codexd_unavailable",
                             "codexd has not confirmed that it holds the turn queues; the turn "
                             "was not queued.",
                             {"target": cfg.codexd_base, "error": conductor.hold.last_error})
        return await proxy_http(conductor, "/v1/codexd/turn")

    # -- the turn queue (issue 23): allowed in every mode (they start nothing; the hold
    # keeps queued turns from starting while paused or draining)

    def queue_path(session_id: str, *rest: str) -> str:
        parts = [quote(session_id, safe=""), "queue", *(quote(p, safe="") for p in rest)]
        return "/v1/codexd/sessions/" + "/".join(parts)

    @app.get("/v1/codex/sessions/<session_id>/queue")
    async def read_queue(session_id: str) -> Response:
        return await proxy_http(conductor, queue_path(session_id))

    @app.post("/v1/codex/sessions/<session_id>/queue/resume")
    async def resume_queue(session_id: str) -> Response:
        return await proxy_http(conductor, queue_path(session_id, "resume"))

    @app.delete("/v1/codex/sessions/<session_id>/queue/<queue_id>")
    async def remove_queued(session_id: str, queue_id: str) -> Response:
        return await proxy_http(conductor, queue_path(session_id, queue_id))

    @app.post("/v1/codex/sessions/<session_id>/queue/<queue_id>/move")
    async def move_queued(session_id: str, queue_id: str) -> Response:
        return await proxy_http(conductor, queue_path(session_id, queue_id, "move"))

    @app.post("/v1/codex/turn/steer")
    async def steer() -> Response:
        return await proxy_http(conductor, "/v1/codexd/turn/steer")

    @app.post("/v1/codex/turn/interrupt")
    async def interrupt() -> Response:
        return await proxy_http(conductor, "/v1/codexd/turn/interrupt")

    @app.get("/v1/codex/approvals")
    async def approvals() -> Response:
        return await proxy_http(conductor, "/v1/codexd/approvals")

    @app.route("/v1/codex/approvals/<approval_id>", methods=["GET", "POST"])
    async def approval(approval_id: str) -> Response:
        # Quart decoded the id: encode it again, or a '?', '/' or control character in it
        # would change (or break) the upstream URL.
        return await proxy_http(conductor, f"/v1/codexd/approvals/{quote(approval_id, safe='')}")

    # -- the conversation (issue 22): codexd's routes, relayed --------------------------------

    def _sid(session_id: str) -> str:
        return f"/v1/codexd/sessions/{quote(session_id, safe='')}"

    @app.get("/v1/codex/sessions/<session_id>/transcript")
    async def transcript(session_id: str) -> Response:
        return await proxy_http(conductor, f"{_sid(session_id)}/transcript")

    @app.get("/v1/codex/sessions/<session_id>/transcript/items/<item_id>")
    async def transcript_item(session_id: str, item_id: str) -> Response:
        return await proxy_http(
            conductor, f"{_sid(session_id)}/transcript/items/{quote(item_id, safe='')}")

    @app.get("/v1/codex/threads")
    async def threads() -> Response:
        return await proxy_http(conductor, "/v1/codexd/threads")

    @app.get("/v1/codex/threads/<thread_id>")
    async def thread(thread_id: str) -> Response:
        return await proxy_http(conductor, f"/v1/codexd/threads/{quote(thread_id, safe='')}")

    @app.post("/v1/codex/sessions/<session_id>/fork")
    async def fork(session_id: str) -> Response:
        if refused := refuse_if(("paused",)):
            return refused
        return await proxy_http(conductor, f"{_sid(session_id)}/fork")

    @app.post("/v1/codex/sessions/<session_id>/rollback")
    async def rollback(session_id: str) -> Response:
        return await proxy_http(conductor, f"{_sid(session_id)}/rollback")

    @app.post("/v1/codex/sessions/<session_id>/compact")
    async def compact(session_id: str) -> Response:
        # A compaction and a review are turns: refused like a turn while paused or draining.
        if refused := refuse_if(("paused", "draining")):
            return refused
        return await proxy_http(conductor, f"{_sid(session_id)}/compact")

    @app.post("/v1/codex/sessions/<session_id>/review")
    async def review(session_id: str) -> Response:
        if refused := refuse_if(("paused", "draining")):
            return refused
        return await proxy_http(conductor, f"{_sid(session_id)}/review")

    @app.post("/v1/codex/sessions/<session_id>/title")
    async def title(session_id: str) -> Response:
        return await proxy_http(conductor, f"{_sid(session_id)}/title")

    @app.get("/v1/codex/events")
    async def events_page() -> Response:
        return await proxy_http(conductor, "/v1/codexd/events")

    @app.websocket("/v1/codex/events")
    async def events_ws() -> Response | None:
        return await relay_events(conductor, device_id=g.get("device_id"))
