"""An in-process fake codexd for conductor and client tests.

It speaks codexd's HTTP/WS API (CONTRACT.md) over real loopback sockets, keeps sessions, turns,
approvals and events in memory, and lets a test drive turns by hand (``complete_turn``) or have
them finish at once (``auto_complete``). Use :func:`open_fake_codexd` in a test's nursery.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from codexd_trio.base.contracts import Approval, Event, Session, now_iso
from codexd_trio.web.app import install_errors, serve_app
from codexd_trio.web.envelope import envelope as ok
from codexd_trio.web.envelope import error


@dataclass
class _Subscriber:
    send: trio.MemorySendChannel[Any]
    session_id: str | None


@dataclass
class FakeCodexd:
    """State of the fake; ``url`` is set once it listens."""

    url: str = ""
    ready: bool = True
    auto_complete: bool = True
    sessions: dict[str, Session] = field(default_factory=dict)
    approvals: dict[str, Approval] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    subscribers: list[_Subscriber] = field(default_factory=list)
    # The queue hold the conductor sets from its mode (issue 23); refuse_hold: answer 503.
    hold: dict[str, Any] = field(default_factory=lambda: {"held": False, "reason": None})
    refuse_hold: bool = False
    _hold_set: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    rules: list[dict[str, Any]] = field(default_factory=list)
    _shutdown: trio.Event = field(default_factory=trio.Event)
    _stopped: trio.Event = field(default_factory=trio.Event)
    _subscribed: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)

    async def wait_hold(self, held: bool) -> None:
        """Wait until the hold (set by ``POST /v1/codexd/hold``) is ``held``."""
        while self.hold["held"] is not held:
            await self._hold_set.park()

    async def wait_subscribers(self, count: int = 1) -> None:
        """Wait until at least ``count`` websocket subscribers are registered."""
        while len(self.subscribers) < count:
            await self._subscribed.park()

    # -- event hub -----------------------------------------------------------------------

    def emit(self, type_: str, *, session_id: str | None = None, turn_id: str | None = None,
             detail: dict[str, Any] | None = None, message: str = "") -> Event:
        event = Event(
            seq=len(self.events) + 1, at=now_iso(), type=type_, sessionId=session_id,
            turnId=turn_id, message=message or type_, detail=detail or {},
        )
        self.events.append(event)
        for sub in list(self.subscribers):
            if sub.session_id is None or sub.session_id == session_id:
                try:
                    sub.send.send_nowait(event)
                except trio.WouldBlock:
                    self._drop(sub, ("overflow", event.seq - 1))
        return event

    def _drop(self, sub: _Subscriber, item: Any) -> None:
        # If the queue is full the final frame is lost and the handler just closes: enough for
        # a fake.
        self.subscribers.remove(sub)
        with suppress(trio.WouldBlock):
            sub.send.send_nowait(item)
        sub.send.close()

    def overflow_all(self, last_delivered_seq: int) -> None:
        """Drop every subscriber with an overflow frame then close 1013."""
        for sub in list(self.subscribers):
            self._drop(sub, ("overflow", last_delivered_seq))

    def close_streams(self, code: int = 1001) -> None:
        for sub in list(self.subscribers):
            self._drop(sub, ("close", code))

    # -- turns ---------------------------------------------------------------------------

    def complete_turn(self, session_id: str, output: str = "done") -> None:
        session = self.sessions[session_id]
        turn_id = session.currentTurnId
        assert turn_id is not None, "no turn to complete"
        self.sessions[session_id] = msgspec.structs.replace(
            session, currentTurnId=None, lastTurnStatus="completed",
            lastTurnCompletedAt=now_iso(), lastTurnOutput=output, updatedAt=now_iso(),
        )
        self.emit("app-server.item.agentMessage.delta", session_id=session_id, turn_id=turn_id,
                  detail={"delta": output})
        self.emit("app-server.turn.completed", session_id=session_id, turn_id=turn_id,
                  detail={"turn": {"id": turn_id, "status": "completed"}})

    def active_turns(self) -> list[dict[str, Any]]:
        return [
            {"sessionId": s.sessionId, "turnId": s.currentTurnId, "startedAt": s.lastTurnStartedAt}
            for s in self.sessions.values() if s.currentTurnId is not None
        ]

    async def stop(self) -> None:
        """Close streams with 1001 and stop listening (codexd going away)."""
        self.close_streams(1001)
        self._shutdown.set()
        await self._stopped.wait()


def build_app(fake: FakeCodexd) -> QuartTrio:
    app = QuartTrio("fake_codexd")
    install_errors(app, name="fake codexd", log=logging.getLogger("fake_codexd"),
                   max_body_bytes=1024 * 1024)
    started = trio.current_time()

    @app.before_request
    async def _record() -> None:
        fake.requests.append((request.method, request.full_path.rstrip("?"), dict(request.headers)))

    async def body() -> Any:
        raw = await request.get_data()
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return _Invalid()

    @app.get("/healthz")
    async def healthz() -> Response:
        return ok({"status": "ok", "pid": os.getpid(), "uptimeS": trio.current_time() - started})

    @app.get("/readyz")
    async def readyz() -> Response:
        if fake.ready:
            return ok({"ready": True})
        return error(503, "child_unavailable", "The child is not running.",
                     {"status": "restarting"})

    @app.get("/describe")
    async def describe() -> Response:
        return ok({"name": "codexd", "surface": "local-api", "version": "fake", "routes": []})

    @app.get("/v1/codexd/status")
    async def status() -> Response:
        sessions = list(fake.sessions.values())
        return ok({
            "service": {"localApiBase": fake.url, "resolvedBaseUrl": fake.url,
                        "eventStreamPath": "/v1/codexd/events",
                        "eventStreamUrl": fake.url.replace("http", "ws") + "/v1/codexd/events"},
            "snapshot": {
                "identity": {"daemonId": "daemon-fake", "nodeId": "fake-node",
                             "repoRoot": "/fake", "createdAt": now_iso(), "version": "fake"},
                "daemon": {"started": True, "startedAt": now_iso(), "pid": os.getpid(),
                           "child": {"status": "running" if fake.ready else "restarting",
                                     "pid": 4242, "restarts": 0}},
                "sessions": {"count": len(sessions),
                             "activeCount": sum(s.status == "active" for s in sessions)},
                "activeTurns": fake.active_turns(),
                "recentEvents": {"count": len(fake.events[-50:]),
                                 "lastSeq": fake.events[-1].seq if fake.events else 0,
                                 "events": [msgspec.to_builtins(e) for e in fake.events[-50:]]},
                "queue": {"held": fake.hold["held"], "holdReason": fake.hold["reason"]},
            },
        })

    @app.route("/v1/codexd/hold", methods=["GET", "POST"])
    async def hold() -> Response:
        if request.method == "POST":
            data = await body()
            if fake.refuse_hold:
                return error(503, "store_unavailable", "The hold cannot be written.")
            if not isinstance(data, dict) or not isinstance(data.get("held"), bool):
                return error(400, "invalid_request", "held is required.", {"path": "$.held"})
            fake.hold = {"held": data["held"], "reason": data.get("reason")}
            fake._hold_set.unpark_all()
        return ok({"hold": fake.hold})

    @app.get("/v1/codexd/sessions")
    async def list_sessions() -> Response:
        return ok({"sessions": [msgspec.to_builtins(s) for s in fake.sessions.values()]})

    @app.post("/v1/codexd/sessions")
    async def create_session() -> Response:
        data = await body()
        if isinstance(data, _Invalid):
            return error(400, "invalid_json", "The body is not JSON.")
        if not isinstance(data, dict) or set(data) - {"cwd", "model", "purpose", "approvalPolicy",
                                                       "sandbox", "approvals"}:
            return error(400, "invalid_request", "Unknown field.", {"path": "$"})
        now = now_iso()
        session = Session(
            sessionId=f"session-{uuid.uuid4()}", threadId=f"thread-{uuid.uuid4()}",
            purpose=data.get("purpose", "duplex"), cwd=data.get("cwd", "/tmp"),
            model=data.get("model", "mock-model"), createdAt=now, updatedAt=now,
        )
        fake.sessions[session.sessionId] = session
        fake.emit("session.created", session_id=session.sessionId)
        return ok({"session": msgspec.to_builtins(session)}, 201)

    @app.get("/v1/codexd/sessions/<session_id>")
    async def get_session(session_id: str) -> Response:
        session = fake.sessions.get(session_id)
        if session is None:
            return error(404, "not_found", f"No session {session_id}.", {"sessionId": session_id})
        recent = [msgspec.to_builtins(e) for e in fake.events if e.sessionId == session_id]
        return ok({"session": msgspec.to_builtins(session), "recentEvents": recent})

    @app.post("/v1/codexd/sessions/<session_id>/close")
    async def close_session(session_id: str) -> Response:
        session = fake.sessions.get(session_id)
        if session is None:
            return error(404, "not_found", f"No session {session_id}.", {"sessionId": session_id})
        if session.currentTurnId is not None:
            return error(409, "turn_in_progress", "A turn is still running.",
                         {"currentTurnId": session.currentTurnId})
        session = msgspec.structs.replace(session, status="closed", updatedAt=now_iso())
        fake.sessions[session_id] = session
        fake.emit("session.closed", session_id=session_id)
        return ok({"session": msgspec.to_builtins(session)})

    @app.post("/v1/codexd/turn")
    async def turn() -> Response:
        data = await body()
        if isinstance(data, _Invalid):
            return error(400, "invalid_json", "The body is not JSON.")
        session_id = data.get("sessionId") if isinstance(data, dict) else None
        if not isinstance(session_id, str) or "input" not in data:
            return error(400, "invalid_request", "sessionId and input are required.",
                         {"path": "$.sessionId"})
        session = fake.sessions.get(session_id)
        if session is None:
            return error(404, "not_found", f"No session {session_id}.", {"sessionId": session_id})
        if session.currentTurnId is not None:
            return error(409, "turn_in_progress", "A turn is still running.",
                         {"currentTurnId": session.currentTurnId})
        turn_id = f"turn-{uuid.uuid4().hex[:8]}"
        session = msgspec.structs.replace(
            session, currentTurnId=turn_id, lastTurnId=turn_id, lastTurnStatus="inProgress",
            lastTurnStartedAt=now_iso(), turnCount=session.turnCount + 1, updatedAt=now_iso(),
        )
        fake.sessions[session_id] = session
        fake.emit("turn.accepted", session_id=session_id, turn_id=turn_id)
        if fake.auto_complete:
            fake.complete_turn(session_id, output=f"echo: {data['input']}")
        return ok({"accepted": True, "sessionId": session_id, "turnId": turn_id,
                   "session": msgspec.to_builtins(session)}, 202)

    @app.post("/v1/codexd/turn/steer")
    async def steer() -> Response:
        data = await body()
        session = fake.sessions.get(data.get("sessionId", ""))
        if session is None or session.currentTurnId is None:
            return error(409, "no_active_turn", "Nothing is running.", {})
        return ok({"sessionId": session.sessionId, "turnId": session.currentTurnId})

    @app.post("/v1/codexd/turn/interrupt")
    async def interrupt() -> Response:
        data = await body()
        session = fake.sessions.get(data.get("sessionId", ""))
        if session is None or session.currentTurnId is None:
            return error(409, "no_active_turn", "Nothing is running.", {})
        turn_id = session.currentTurnId
        fake.sessions[session.sessionId] = msgspec.structs.replace(
            session, currentTurnId=None, lastTurnStatus="interrupted")
        fake.emit("app-server.turn.completed", session_id=session.sessionId, turn_id=turn_id,
                  detail={"turn": {"id": turn_id, "status": "interrupted"}})
        return ok({"sessionId": session.sessionId, "turnId": turn_id, "accepted": True}, 202)

    @app.get("/v1/codexd/approvals")
    async def approvals() -> Response:
        state = request.args.get("state")
        items = [a for a in fake.approvals.values() if state is None or a.state == state]
        return ok({"approvals": [msgspec.to_builtins(a) for a in items]})

    @app.get("/v1/codexd/approvals/<approval_id>")
    async def approval(approval_id: str) -> Response:
        item = fake.approvals.get(approval_id)
        if item is None:
            return error(404, "not_found", f"No approval {approval_id}.",
                         {"approvalId": approval_id})
        return ok({"approval": msgspec.to_builtins(item)})

    @app.post("/v1/codexd/approvals/<approval_id>")
    async def decide(approval_id: str) -> Response:
        item = fake.approvals.get(approval_id)
        if item is None:
            return error(404, "not_found", f"No approval {approval_id}.",
                         {"approvalId": approval_id})
        if item.state != "pending":
            return error(409, "approval_resolved", "Already decided.",
                         {"decision": item.decision})
        data = await body()
        item = msgspec.structs.replace(item, state="resolved", decision=data["decision"],
                                       decidedBy=data.get("decidedBy"), resolvedAt=now_iso())
        fake.approvals[approval_id] = item
        return ok({"approval": msgspec.to_builtins(item)})

    @app.get("/v1/codexd/sessions/<session_id>/approval-rules")
    async def session_rules(session_id: str) -> Response:
        # Issue 25: what the console shows (the node's rules are the fake's ``rules``).
        return ok({"scope": "session", "sessionId": session_id,
                   "settings": {"rules": [], "timeoutS": None, "timeoutDecision": None},
                   "effectiveRules": fake.rules, "effectiveTimeoutS": 300.0,
                   "effectiveTimeoutDecision": "decline"})

    @app.get("/v1/codexd/events")
    async def events_page() -> Response:
        after = int(request.args.get("after", "0"))
        limit = int(request.args.get("limit", "100"))
        page = [e for e in fake.events if e.seq > after][:limit]
        last = fake.events[-1].seq if fake.events else 0
        return ok({"events": [msgspec.to_builtins(e) for e in page], "lastSeq": last,
                   "nextAfter": page[-1].seq if page else after})

    @app.websocket("/v1/codexd/events")
    async def events_ws() -> None:
        fake.requests.append(("WS", websocket.full_path.rstrip("?"), dict(websocket.headers)))
        after_raw = websocket.args.get("after")
        session_id = websocket.args.get("sessionId")
        last = fake.events[-1].seq if fake.events else 0
        after = int(after_raw) if after_raw is not None else last
        send, recv = trio.open_memory_channel[Any](64)
        sub = _Subscriber(send, session_id)
        fake.subscribers.append(sub)
        fake._subscribed.unpark_all()
        replay = [e for e in fake.events
                  if e.seq > after and (session_id is None or e.sessionId == session_id)]
        await websocket.accept()
        await websocket.send(msgspec.json.encode(
            {"type": "hello", "data": {"lastSeq": last, "replayFrom": after}}).decode())
        try:
            for event in replay:
                await websocket.send(msgspec.json.encode(event).decode())
            async with recv:
                async for item in recv:
                    if isinstance(item, Event):
                        await websocket.send(msgspec.json.encode(item).decode())
                    elif item[0] == "overflow":
                        await websocket.send(msgspec.json.encode(
                            {"type": "overflow", "data": {"lastDeliveredSeq": item[1]}}).decode())
                        await websocket.close(1013)
                        return
                    else:
                        await websocket.close(item[1])
                        return
        finally:
            if sub in fake.subscribers:
                fake.subscribers.remove(sub)

    return app


class _Invalid:
    pass


@asynccontextmanager
async def open_fake_codexd(*, auto_complete: bool = True) -> AsyncIterator[FakeCodexd]:
    """Run a fake codexd on 127.0.0.1:0 for the duration of the block."""
    fake = FakeCodexd(auto_complete=auto_complete)
    app = build_app(fake)
    async with trio.open_nursery() as nursery:

        async def _run(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await serve_app(app, "127.0.0.1", 0, graceful_timeout=2.0,
                                shutdown_trigger=fake._shutdown.wait, task_status=task_status)
            finally:
                fake._stopped.set()

        fake.url = await nursery.start(_run)
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel(reason="fake codexd block exited")


# ------------------------------------------------------------------------------------------------
# A conductor in the test's nursery, pointed at a codexd (fake or real).


@dataclass
class RunningConductor:
    conductor: Any
    url: str
    http: Any
    done: trio.Event


@asynccontextmanager
async def open_conductor(
    codexd_url: str,
    state_dir: Any,
    *,
    token: str | None = None,
    lease_store: Any = None,
    role: str = "primary",
    codexd_token: str | None = None,
    local_api: str = "http://127.0.0.1:0",
    allowed_hosts: tuple[str, ...] = (),
    notify_sinks: tuple[Any, ...] = (),
) -> AsyncIterator[RunningConductor]:
    """Run a :class:`~conductor_trio.service.Conductor` (on 127.0.0.1:0 unless ``local_api``
    says otherwise) with an httpx client."""
    import httpx

    from conductor_trio.config import ConductorConfig
    from conductor_trio.lease.file import MemoryLeaseStore
    from conductor_trio.service import Conductor
    from conductor_trio.web.app import serve_conductor

    config = ConductorConfig(
        node_id="test-node", local_api=local_api, role=role,  # type: ignore[arg-type]
        host="testhost", codexd_base=codexd_url, state_dir=state_dir, shared_token=token,
        token_source="env" if token else "none", codexd_timeout_s=5.0, shutdown_grace_s=2.0,
        codexd_token=codexd_token, allowed_hosts=allowed_hosts, notify_sinks=notify_sinks,
    )
    conductor = Conductor(config, lease_store=lease_store or MemoryLeaseStore())
    done = trio.Event()
    async with trio.open_nursery() as nursery:

        async def _serve(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await serve_conductor(conductor, task_status=task_status)
            finally:
                done.set()

        url = await nursery.start(_serve)
        http = httpx.AsyncClient(base_url=url, timeout=10.0)
        try:
            yield RunningConductor(conductor, url, http, done)
        finally:
            with trio.CancelScope(shield=True):
                await http.aclose()
            nursery.cancel_scope.cancel(reason="conductor block exited")


# ------------------------------------------------------------------------------------------------
# Daemons as subprocesses: started in their own process group, found through their ready line.


@dataclass
class Daemon:
    process: trio.Process
    url: str
    ready: dict[str, Any]


@asynccontextmanager
async def spawn_daemon(
    argv: list[str], *, env: dict[str, str] | None = None, timeout_s: float = 60.0,
    stderr: Any = None,
) -> AsyncIterator[Daemon]:
    """Start ``argv``, wait for its ``{"ready": true, ...}`` stdout line, kill its group on exit.

    **Resource handling:** the process runs in a new session; on exit the whole process group is
    sent SIGTERM, then SIGKILL if it has not gone within 10 s.
    """
    import signal
    import subprocess

    from codexd_trio.base.process import follow_ready_line

    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=stderr, env=env, start_new_session=True
    )
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(timeout_s):
                ready = await nursery.start(follow_ready_line, process)
            try:
                yield Daemon(process, ready["url"], ready)
            finally:
                nursery.cancel_scope.cancel(reason="daemon helper closing")
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                with trio.move_on_after(10):
                    await process.wait()
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def terminate(daemon: Daemon, *, timeout_s: float = 30.0) -> int:
    """SIGTERM the daemon (not its group) and return its exit status."""
    import signal

    daemon.process.send_signal(signal.SIGTERM)
    with trio.fail_after(timeout_s):
        return await daemon.process.wait()
