"""The conductor's Quart-Trio app: probes, runtime, system mode, status view, and the codex proxy.

Every JSON route answers with the envelope; unknown routes, wrong methods, oversized bodies and
bugs answer with JSON too: the shared plumbing is :mod:`codexd_trio.web.app`.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import msgspec
import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from codexd_trio.web import CallerPolicy
from codexd_trio.web.app import WebSetup, install, serve_app
from codexd_trio.web.callers import Refusal
from codexd_trio.web.envelope import decode_body, error
from codexd_trio.web.envelope import envelope as ok
from codexd_trio.web.openapi import described_routes
from conductor_trio import __version__
from conductor_trio.contracts import (
    CodexBackend,
    CodexChild,
    CodexView,
    ConductorDescribe,
    ConductorHealth,
    DescribeAuth,
    ProxyView,
    Ready,
    RecentEventsCount,
    RouteInfo,
    SessionCountsView,
)
from conductor_trio.mode import Mode
from conductor_trio.service import Conductor
from conductor_trio.web.access import (
    CODEX_PREFIX,
    SHARED_TOKEN_SETTING,
    Caller,
    codex_needs_credential,
    codex_refusal,
    shared_token_refusal,
)
from conductor_trio.web.api_doc import conductor_openapi, conductor_ops, conductor_websockets
from conductor_trio.web.console import install_console
from conductor_trio.web.proxy import proxy_http, relay_events
from conductor_trio.web.status_page import render_page


class ModeChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str | None = None
    requested_by: str | None = None


async def serve_conductor(
    conductor: Conductor, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run ``conductor`` serving its app (:func:`create_app`) with Hypercorn until its graceful
    stop (:meth:`~conductor_trio.service.Conductor.begin_stop`) or a cancel; reports the bound
    base URL (see :meth:`~conductor_trio.service.Conductor.run`)."""
    app = create_app(conductor)
    config = conductor.config

    async def http(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_app(
            app,
            config.listen_host,
            config.listen_port,
            shutdown_trigger=conductor.stopping.wait,
            graceful_timeout=config.shutdown_grace_s,
            errorlog=logging.getLogger("conductor.http"),
            task_status=task_status,
        )

    await conductor.run(http, task_status=task_status)


def create_app(conductor: Conductor) -> QuartTrio:
    """Build the conductor's app over one :class:`~conductor_trio.service.Conductor`."""
    app = QuartTrio("conductor_trio")
    cfg = conductor.config
    # The routes /describe lists are the operations of /openapi.json (one source).
    codex_auth = codex_needs_credential(cfg)
    route_info = msgspec.convert(
        described_routes(conductor_ops(ModeChange, exposed=cfg.exposed, codex_auth=codex_auth),
                         conductor_websockets(codex_auth=codex_auth)),
        list[RouteInfo],
    )
    codex_route_info = [r for r in route_info if r.path.startswith("/v1/codex/")]
    install(
        app,
        WebSetup(
            name="conductor",
            policy=CallerPolicy(
                daemon="conductor",
                listen_host=cfg.listen_host,
                allowed_hosts=cfg.allowed_hosts,
                allowed_origins=cfg.allowed_origins,
            ),
            log=logging.getLogger("conductor.api"),
            metrics=conductor.metrics.http,
            openapi=lambda: conductor_openapi(ModeChange, exposed=cfg.exposed,
                                              codex_auth=codex_auth),
            max_body_bytes=cfg.max_body_bytes,
        ),
    )

    def answer(refusal: Refusal | None) -> Response | None:
        if refusal is None:
            return None
        return error(refusal.status, refusal.code, refusal.message, refusal.details)

    # First of the checks: a caller without the credential learns nothing else (not even
    # whether this node leads or is paused), and nothing is forwarded.
    @app.before_request
    async def _codex_callers_need_a_credential() -> Response | None:
        if not request.path.startswith(CODEX_PREFIX):
            return None
        return answer(codex_refusal(cfg, Caller(
            method=request.method, authorization=request.headers.get("Authorization"),
            remote_addr=request.remote_addr)))

    @app.before_websocket
    async def _relay_callers_need_a_credential() -> Response | None:
        # Answered before the upgrade is accepted (and before codexd is asked for a stream).
        # ?token= is read here only: the relay never puts it in the upstream URL, and the
        # access log records the path without the query.
        if not websocket.path.startswith(CODEX_PREFIX):
            return None
        return answer(codex_refusal(cfg, Caller(
            method="WS", authorization=websocket.headers.get("Authorization"),
            query_tokens=websocket.args.getlist("token"), remote_addr=websocket.remote_addr)))

    @app.before_request
    async def _standby_refuses_writes() -> Response | None:
        # With a shared (etcd) lease only the leader acts: a standby's codexd would otherwise
        # start work the cluster does not know about. The holder's address lets a client retry
        # there. /v1/system/* stays local to each node on purpose.
        if (request.method == "POST" and request.path.startswith("/v1/codex/")
                and conductor.writes_refused):
            holder = conductor.lease.holder
            return error(503, "not_leader", "This conductor does not hold the leader lease.", {
                "role": conductor.lease.role,
                "leader": msgspec.to_builtins(holder) if holder else None,
                "term": conductor.lease.snapshot()["term"],
            })
        return None

    # -- probes ------------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> Response:
        return ok(ConductorHealth(pid=conductor.pid, uptime_s=conductor.uptime_s,
                                  node_id=cfg.node_id))

    @app.get("/readyz")
    async def readyz() -> Response:
        role = conductor.lease.role
        if role == "leader":
            return ok(Ready(ready=True, role=role))
        reasons = []
        if role == "degraded":
            reasons.append(f"lease store failing: {conductor.lease.last_error}")
        else:
            holder = conductor.lease.lease_holder_id
            reasons.append(f"standby: the lease is held by {holder}" if holder
                           else "standby: no lease held yet")
        return error(503, "not_ready", "This conductor is not the ready leader.",
                     {"role": role, "reasons": reasons})

    @app.get("/rolez")
    async def rolez() -> Response:
        return Response(conductor.lease.role + "\n", content_type="text/plain; charset=utf-8")

    # What the routes marked auth answer a caller that sends no token.
    if codex_auth and cfg.shared_token is None:
        without_token = (f"refused: codexd has a token and no shared token is configured "
                         f"({SHARED_TOKEN_SETTING}); /v1/system/* writes: loopback callers only")
    elif cfg.shared_token is None:
        without_token = "loopback callers only"
    else:
        without_token = "refused (401 unauthorized)"

    @app.get("/describe")
    async def describe() -> Response:
        return ok(ConductorDescribe(
            name="conductor",
            surface="local-api",
            version=__version__,
            node_id=cfg.node_id,
            routes=route_info,
            auth=DescribeAuth(
                scheme="bearer",
                header="Authorization: Bearer <BAA_SHARED_TOKEN>",
                routes=list(dict.fromkeys(r.path for r in route_info if r.auth)),
                token_configured=cfg.shared_token is not None,
                without_token=without_token,
            ),
            codex_backend=CodexBackend(kind="independent_codexd", base_url=cfg.codexd_base),
        ))

    @app.get("/v1/runtime")
    async def runtime() -> Response:
        return ok(conductor.runtime())

    # -- codex -------------------------------------------------------------------------------

    @app.get("/v1/codex")
    async def codex() -> Response:
        probe = await conductor.probe_codexd()
        snap = probe.status.snapshot if probe.status is not None else None
        return ok(CodexView(
            backend="independent_codexd",
            proxy=ProxyView(target_base_url=cfg.codexd_base, reachable=probe.status is not None,
                            error=probe.error),
            child=(CodexChild(status=snap.daemon.child.status, pid=snap.daemon.child.pid)
                   if snap else None),
            sessions=SessionCountsView(count=snap.sessions.count if snap else None,
                                       active_count=snap.sessions.activeCount if snap else None),
            recent_events=RecentEventsCount(count=snap.recentEvents.count if snap else None,
                                            last_seq=snap.recentEvents.lastSeq if snap else None),
            routes=codex_route_info,
        ))

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
            return refused
        return await proxy_http(conductor, "/v1/codexd/turn")

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
        return await relay_events(conductor)

    # -- system mode -------------------------------------------------------------------------

    @app.get("/v1/system/state")
    async def system_state() -> Response:
        probe = await conductor.probe_codexd()
        return ok(conductor.mode_state(probe))

    async def change_mode(mode: Mode) -> Response:
        if denied := answer(shared_token_refusal(cfg, Caller(
                method=request.method, authorization=request.headers.get("Authorization"),
                remote_addr=request.remote_addr))):
            return denied
        raw = await request.get_data(cache=False, as_text=False)
        assert isinstance(raw, bytes)
        # The body is optional; when sent, the same 400s as codexd's (details: field, path).
        body = decode_body(raw, ModeChange) if raw.strip() else ModeChange()
        await conductor.modes.set(mode, reason=body.reason,
                                  requested_by=body.requested_by or request.remote_addr)
        probe = await conductor.probe_codexd()
        return ok(conductor.mode_state(probe))

    @app.post("/v1/system/pause")
    async def pause() -> Response:
        return await change_mode("paused")

    @app.post("/v1/system/resume")
    async def resume() -> Response:
        return await change_mode("running")

    @app.post("/v1/system/drain")
    async def drain() -> Response:
        return await change_mode("draining")

    # -- status ------------------------------------------------------------------------------

    @app.get("/v1/status")
    async def status() -> Response:
        probe = await conductor.probe_codexd()
        return ok(conductor.status_snapshot(probe))

    @app.get("/v1/status/ui")
    async def status_ui() -> Response:
        return Response(render_page(f"conductor · {cfg.node_id}", console_href="/console"),
                        content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    install_console(app)
    return app

