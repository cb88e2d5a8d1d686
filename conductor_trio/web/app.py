"""The conductor's Quart-Trio app: probes, runtime, system mode, status view, and the codex proxy.

Every JSON route answers with the envelope; unknown routes, wrong methods, oversized bodies and
bugs answer with JSON too: the shared plumbing is :mod:`codexd_trio.web.app`.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import trio
from quart import Response, g, request, websocket
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
    WRITE_METHODS,
    Caller,
    codex_access,
    codex_needs_credential,
    request_address,
    shared_token_refusal,
)
from conductor_trio.web.actions import install_action_routes
from conductor_trio.web.api_doc import conductor_openapi, conductor_ops, conductor_websockets
from conductor_trio.web.codex_routes import install_codex_routes
from conductor_trio.web.console import install_console
from conductor_trio.web.devices import install_device_routes
from conductor_trio.web.fastpath import CodexFastPath
from conductor_trio.web.proxy import install_rule_proxy
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
    # The plain relays skip Quart (issue 27); install() puts the caller guard and Observe
    # around it, so it sees only requests the guard let through.
    quart: Any = app  # the middleware slot; Quart types it with its own ASGI TypedDicts
    quart.asgi_app = CodexFastPath(quart.asgi_app, conductor, max_body_bytes=cfg.max_body_bytes)
    install(
        app,
        WebSetup(
            name="conductor",
            policy=CallerPolicy(
                daemon="conductor",
                listen_host=cfg.listen_host,
                allowed_hosts=cfg.allowed_hosts,
                allowed_origins=cfg.allowed_origins,
                host_setting="--allowed-host (BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS)",
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

    def http_caller() -> Caller:
        # Through a proxy (tailscale serve) a caller is not local, whatever its peer address.
        return Caller(method=request.method, authorization=request.headers.get("Authorization"),
                      remote_addr=request_address(request.remote_addr, request.headers))

    # First of the checks: a caller without the credential learns nothing else (not even
    # whether this node leads or is paused), and nothing is forwarded.
    @app.before_request
    async def _codex_callers_need_a_credential() -> Response | None:
        if not request.path.startswith(CODEX_PREFIX):
            return None
        return answer(codex_access(cfg, http_caller(), conductor.auth.devices)[1])

    @app.before_websocket
    async def _relay_callers_need_a_credential() -> Response | None:
        # Answered before the upgrade is accepted (and before codexd is asked for a stream).
        # ?token= is read here only: the relay never puts it in the upstream URL, and the
        # access log records the path without the query.
        if not websocket.path.startswith(CODEX_PREFIX):
            return None
        device, refused = codex_access(cfg, Caller(
            method="WS", authorization=websocket.headers.get("Authorization"),
            query_tokens=websocket.args.getlist("token"),
            remote_addr=request_address(websocket.remote_addr, websocket.headers)),
            conductor.auth.devices)
        # The relay registers under the device, so revoking it closes the relay at once.
        g.device_id = device.id if device is not None else None
        return answer(refused)

    @app.before_request
    async def _standby_refuses_writes() -> Response | None:
        # With a shared (etcd) lease only the leader acts: a standby's codexd would otherwise
        # start work the cluster does not know about. The holder's address lets a client retry
        # there. /v1/system/* stays local to each node on purpose.
        if (request.method in WRITE_METHODS and request.path.startswith("/v1/codex/")
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

    install_codex_routes(app, conductor)

    # -- system mode -------------------------------------------------------------------------

    @app.get("/v1/system/state")
    async def system_state() -> Response:
        probe = await conductor.probe_codexd()
        return ok(conductor.mode_state(probe))

    async def change_mode(mode: Mode) -> Response:
        if denied := answer(shared_token_refusal(cfg, http_caller(), conductor.auth.devices)):
            return denied
        raw = await request.get_data(cache=False, as_text=False)
        assert isinstance(raw, bytes)
        # The body is optional; when sent, the same 400s as codexd's (details: field, path).
        body = decode_body(raw, ModeChange) if raw.strip() else ModeChange()
        await conductor.modes.set(mode, reason=body.reason,
                                  requested_by=body.requested_by or request.remote_addr)
        # codexd's queue hold follows the mode at once; if codexd cannot be told now, the
        # hold's task keeps trying (the answer's queue_hold.confirmed says which).
        if not await conductor.hold.push():
            conductor.hold.changed()
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
    # Issue 25: pairing and devices, one-tap action links, the approval rules' proxy.
    install_device_routes(app, conductor)
    install_action_routes(app, conductor)
    install_rule_proxy(app, conductor)
    return app

