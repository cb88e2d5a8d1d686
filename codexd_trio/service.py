"""codexd's wiring: the store, the hub, the supervised child and the domain in one nursery tree.

::

    Daemon.run()
    └── root nursery
        ├── store writers         one JsonDocument.run per document + EventLog.run (group commit)
        ├── child supervisor      open_app_server(...) in a restart loop with backoff
        │   └── (reader, stderr drain, server-request tasks live inside open_app_server)
        └── HTTP/WS server        Hypercorn (trio worker) serving the Quart-Trio app

Everything the API layer can do goes through the methods of :class:`Daemon`; they raise the
typed errors of :mod:`codexd_trio.domain` and :mod:`codexd_trio.errors`, which the API maps to
envelope codes.
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from codexd_trio import __version__
from codexd_trio.child import ChildSpec, ExitStatus
from codexd_trio.codexbin import (
    CodexBinaryNotFound,
    bundled_resource_dir,
    resolve_server_command,
)
from codexd_trio.config import CodexdConfig
from codexd_trio.contracts import (
    Approval,
    ChildStatus,
    CreateSessionRequest,
    DaemonState,
    Decision,
    Event,
    Identity,
    InterruptRequest,
    Level,
    RecentEvents,
    Session,
    SessionRegistry,
    SteerRequest,
    TurnRequest,
    input_items,
    now_iso,
)
from codexd_trio.domain import DomainError, Emit, NoActiveTurn, SessionBook, TurnMismatch
from codexd_trio.errors import ApprovalNotFound, ApprovalResolved, ChildUnavailable, ShuttingDown
from codexd_trio.eventlog import EventLog
from codexd_trio.hub import EventHub
from codexd_trio.idempotency import IdempotencyBook
from codexd_trio.protocol.appserver import (
    AppServerClient,
    AppServerError,
    ChildExited,
    Notification,
    RequestTimeout,
    ServerRequest,
    open_app_server,
)
from codexd_trio.store import JsonDocument, read_document

log = logging.getLogger("codexd")

APPROVAL_METHODS = {
    "item/commandExecution/requestApproval": "commandExecution",
    "item/fileChange/requestApproval": "fileChange",
}


class ApprovalBook(msgspec.Struct, frozen=True, kw_only=True):
    approvals: list[Approval] = msgspec.field(default_factory=list)


@dataclass
class Backoff:
    """Exponential restart delay with jitter (0.5 s doubling to 30 s)."""

    initial: float = 0.5
    maximum: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        nominal = self.initial * 2**self.failures
        self.failures += 1
        # Jitter first, then the cap: the maximum is a promise, not a suggestion.
        return min(self.maximum, float(nominal) * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        self.failures = 0


# A child that stays up this long counts as healthy again (restart backoff resets).
HEALTHY_AFTER_S = 60.0
# This many failed starts in a row -> the child status is ``failed`` (readyz 503).
FAILED_AFTER = 5


class _PendingApproval:
    def __init__(self) -> None:
        self.decided = trio.Event()
        self.decision: Decision | None = None
        self.decided_by: str | None = None


class Daemon:
    """One codexd: owns the files, the event hub, the child and the session registry.

    Resource handling: :meth:`open_store` opens the files synchronously; :meth:`run` owns every
    task and, when it returns (normally or by cancellation), the child's process group is gone
    and every document and the event log are flushed.
    """

    def __init__(self, config: CodexdConfig) -> None:
        self.config = config
        self.started_at: str | None = None
        self.started_monotonic = 0.0
        self.resolved_base_url: str | None = None
        self.client: AppServerClient | None = None
        self.child = ChildStatus()
        self.accepting = True
        self.stopping = False
        self._stop_requested = trio.Event()
        self._loaded_threads: set[str] = set()
        self._thread_locks: dict[str, trio.Lock] = {}
        self._pending_approvals: dict[str, _PendingApproval] = {}
        self._request_to_approval: dict[tuple[str | None, int | str], str] = {}
        # Set (and replaced) whenever the sessions change; graceful stop waits on it.
        self._book_changed = trio.Event()
        self.open_store()

    # ------------------------------------------------------------------ files

    def open_store(self) -> None:
        cfg = self.config
        state, logs = cfg.codexd_state, cfg.codexd_logs
        state.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        identity = read_document(state / "identity.json", Identity)
        self.identity_doc = JsonDocument(
            state / "identity.json",
            Identity,
            identity
            or Identity(
                daemonId=f"codexd-{uuid.uuid4()}",
                nodeId=cfg.node_id,
                repoRoot=str(cfg.repo_root),
                createdAt=now_iso(),
                version=__version__,
            ),
        )
        if identity is None:
            self.identity_doc.write_now()
        registry = read_document(state / "session-registry.json", SessionRegistry)
        self.registry_doc = JsonDocument(
            state / "session-registry.json",
            SessionRegistry,
            registry or SessionRegistry(),
            pretty=False,
            # A snapshot: the event log is the journal that makes acknowledgements durable.
            coalesce_s=1.0,
        )
        self.book = SessionBook(self.registry_doc.value.sessions)
        recent = read_document(state / "recent-events.json", RecentEvents)
        # A cache of the ring (the durable log has every event): rewritten at most once a second.
        self.recent_doc = JsonDocument(
            state / "recent-events.json",
            RecentEvents,
            recent or RecentEvents(),
            coalesce_s=1.0,
            pretty=False,
        )
        approvals = read_document(state / "approvals.json", ApprovalBook)
        self.approvals_doc = JsonDocument(
            state / "approvals.json", ApprovalBook, approvals or ApprovalBook(), pretty=False
        )
        idem = read_document(state / "idempotency.json", IdempotencyBook)
        self.idem_doc = JsonDocument(
            state / "idempotency.json", IdempotencyBook, idem or IdempotencyBook(), pretty=False
        )
        self.state_doc = JsonDocument(
            state / "daemon-state.json",
            DaemonState,
            DaemonState(
                started=False,
                startedAt=None,
                pid=os.getpid(),
                child=self.child,
                updatedAt=now_iso(),
            ),
        )
        self.log = EventLog.open(
            logs / "events.jsonl",
            segment_bytes=cfg.event_log_segment_mb * 1024 * 1024,
            retain_segments=cfg.event_log_segments,
        )
        self.hub = EventHub(
            self.log,
            self.recent_doc,
            recent_size=cfg.event_cache_size,
            subscriber_queue=cfg.subscriber_queue,
        )

    @property
    def documents(self) -> list[JsonDocument[Any]]:
        return [
            self.identity_doc,
            self.registry_doc,
            self.recent_doc,
            self.approvals_doc,
            self.idem_doc,
            self.state_doc,
        ]

    def publish(self, emit: Emit) -> Event:
        return self.hub.emit(
            emit.type,
            level=emit.level,
            session_id=emit.session_id,
            thread_id=emit.thread_id,
            turn_id=emit.turn_id,
            message=emit.message,
            detail=emit.detail,
        )

    def _save_registry(self) -> None:
        self.registry_doc.set(
            SessionRegistry(sessions=self.book.all(), lastSeq=self.hub.last_seq)
        )
        self._book_changed.set()
        self._book_changed = trio.Event()

    def _save_state(self) -> None:
        self.state_doc.set(
            DaemonState(
                started=self.started_at is not None and not self.stopping,
                startedAt=self.started_at,
                stoppedAt=now_iso() if self.stopping else None,
                pid=os.getpid(),
                child=self.child,
                updatedAt=now_iso(),
                resolvedBaseUrl=self.resolved_base_url,
            )
        )

    def _set_child(self, **changes: Any) -> None:
        self.child = msgspec.structs.replace(self.child, **changes)
        self._save_state()

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self,
        *,
        serve: Callable[[Daemon, trio.Event], Awaitable[None]] | None = None,
        task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until :meth:`request_stop`, then stop gracefully within the configured grace.

        ``serve(daemon, shutdown_event)`` is the HTTP server (a ``nursery.start`` target that
        reports ready and returns once ``shutdown_event`` is set and connections are closed).

        Cancellation: a hard cancel still stops the child's process group (shielded, bounded)
        and flushes every document and the event log.
        """
        await self._replay_journal()
        self._recover_after_restart()
        server_stop = trio.Event()
        try:
            async with trio.open_nursery() as root:
                writers = root.cancel_scope
                for doc in self.documents:
                    await root.start(doc.run)
                await root.start(self.log.run)
                async with trio.open_nursery() as services:
                    self.started_at = now_iso()
                    self.started_monotonic = trio.current_time()
                    self._save_state()
                    self.publish(
                        Emit(
                            "daemon.started",
                            f"codexd {__version__} started (pid {os.getpid()})",
                            detail={"pid": os.getpid(), "version": __version__},
                        )
                    )
                    # Listen first: a taken port fails fast, before a child is spawned; until
                    # the child is up /readyz says so.
                    if serve is not None:
                        await services.start(serve, self, server_stop)
                    child_scope = await services.start(self._supervise_child)
                    task_status.started(self)
                    await self._stop_requested.wait()
                    await self._graceful_stop(child_scope, server_stop)
                    services.cancel_scope.cancel(reason="codexd stopped")
                # The writers' own cancellation handlers make the final durable writes.
                writers.cancel(reason="codexd stopped: final flush")
        finally:
            self.close()

    def close(self) -> None:
        """Release the event log's file (writing anything still buffered). Idempotent."""
        self.log.close()

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def _graceful_stop(self, child_scope: trio.CancelScope, server_stop: trio.Event) -> None:
        grace = self.config.shutdown_grace_s
        deadline = trio.current_time() + grace
        self.accepting = False
        self.stopping = True
        self.publish(Emit("daemon.stopping", "codexd is stopping", detail={"graceS": grace}))
        self._save_state()
        # Close event streams with a normal close (1001) before anything else goes away.
        self.hub.close_subscribers()
        # In-flight turns get most of the grace; the child stop needs up to ~4 s of it.
        with trio.move_on_at(deadline - min(4.0, grace / 2)):
            while self.book.active_turns():
                await self._book_changed.wait()
        server_stop.set()
        child_scope.cancel(reason="codexd graceful stop")
        for emit in self.book.fail_all_current("daemon_stopped", "codexd stopped during the turn"):
            self.publish(emit)
        self._save_registry()

    async def _replay_journal(self) -> None:
        """Bring the registry snapshot up to date with the durable event log."""
        snapshot_seq = self.registry_doc.value.lastSeq
        if snapshot_seq > self.log.last_seq:
            # The log lost its torn tail after the snapshot was written: renumbering continues
            # from the log, so the snapshot must not claim events it will never see again.
            log.warning(
                "registry snapshot is ahead of the event log (%d > %d)",
                snapshot_seq,
                self.log.last_seq,
            )
            self._save_registry()
            return
        events = await self.log.read_after(snapshot_seq)
        if self.book.replay(events):
            log.info("replayed %d logged events over the registry snapshot", len(events))
            self._save_registry()

    def _recover_after_restart(self) -> None:
        """Settle what a previous codexd left unfinished (it may have been SIGKILLed)."""
        emits = self.book.fail_all_current(
            "daemon_restarted", "codexd restarted while the turn was running"
        )
        for emit in emits:
            self.publish(emit)
        if emits:
            self._save_registry()
        self._expire_pending_approvals("codexd restarted")

    # ------------------------------------------------------------------ child supervision

    def _child_spec(self) -> ChildSpec:
        binary = resolve_server_command(self.config.server_command)
        env = dict(os.environ)
        env.update(self.config.extra_env)
        env.setdefault("NO_COLOR", "1")
        resources = bundled_resource_dir(binary)
        if resources is not None:
            # The bundled bwrap on PATH silences "could not find bubblewrap" at every start.
            env["PATH"] = f"{resources}{os.pathsep}{env.get('PATH', '')}"
        return ChildSpec(
            argv=[str(binary), *self.config.server_args],
            cwd=self.config.server_cwd,
            env=env,
            stderr_log=self.config.codexd_logs / "stderr.log",
        )

    async def _supervise_child(
        self, *, task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
    ) -> None:
        backoff = Backoff(self.config.restart_backoff_s, self.config.restart_backoff_max_s)
        reported = False
        with trio.CancelScope() as scope:
            while True:
                started = trio.current_time()
                status: ExitStatus | None = None
                error: str | None = None
                first = not reported

                def on_ready(first: bool = first) -> None:
                    nonlocal reported
                    if first:
                        reported = True
                        task_status.started(scope)

                try:
                    status = await self._run_child_once(on_ready)
                except (
                    CodexBinaryNotFound,
                    OSError,
                    ChildExited,
                    AppServerError,
                    RequestTimeout,
                ) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, ChildExited):
                        status = exc.status
                    log.warning("codex app-server failed: %s", error)
                finally:
                    self.client = None
                    self._loaded_threads.clear()
                    if self.stopping:
                        # Cancelled by the graceful stop: open_app_server stopped the group.
                        self._set_child(state="stopped", pid=None, exitedAt=now_iso())
                if not reported:
                    reported = True
                    task_status.started(scope)
                self._after_child_exit(status, error)
                if trio.current_time() - started >= HEALTHY_AFTER_S:
                    backoff.reset()
                delay = backoff.next_delay()
                failed = backoff.failures >= FAILED_AFTER
                self._set_child(
                    state="failed" if failed else "restarting",
                    restarts=self.child.restarts + 1,
                    lastError=error or (status.describe() if status else None),
                )
                self.publish(
                    Emit(
                        "child.restarting",
                        f"restarting codex app-server in {delay:.1f} s",
                        level="error" if failed else "warn",
                        detail={"delayS": round(delay, 3), "failures": backoff.failures},
                    )
                )
                await trio.sleep(delay)

    async def _run_child_once(self, on_ready: Callable[[], object]) -> ExitStatus:
        spec = self._child_spec()
        self._set_child(
            state="starting" if self.child.state != "failed" else "failed",
            command=spec.argv[0],
            args=list(spec.argv[1:]),
            exitCode=None,
            exitSignal=None,
        )
        self.publish(
            Emit("child.starting", "starting codex app-server", detail={"argv": list(spec.argv)})
        )
        async with open_app_server(
            spec,
            on_notification=self._on_notification,
            on_server_request=self._on_server_request,
            server_request_timeout=self.config.approval_timeout_s + 30.0,
            request_timeout=self.config.request_timeout_s,
            stdout_log=self.config.codexd_logs / "stdout.log",
            client_name="codexd",
            client_version=__version__,
        ) as client:
            self.client = client
            self._loaded_threads.clear()
            user_agent = client.initialize_result.get("userAgent")
            self._set_child(
                state="running",
                pid=client.pid,
                startedAt=now_iso(),
                initializedAt=now_iso(),
                userAgent=user_agent,
                lastError=None,
            )
            self.publish(
                Emit(
                    "child.started",
                    f"codex app-server running (pid {client.pid})",
                    detail={"pid": client.pid},
                )
            )
            self.publish(
                Emit(
                    "app-server.initialized",
                    "app-server initialized",
                    detail=dict(client.initialize_result),
                )
            )
            on_ready()
            return await client.wait_exited()

    def _after_child_exit(self, status: ExitStatus | None, error: str | None) -> None:
        description = status.describe() if status else (error or "failed to start")
        self._set_child(
            state="restarting",
            pid=None,
            exitedAt=now_iso(),
            exitCode=status.code if status else None,
            exitSignal=status.signal if status else None,
        )
        self.publish(
            Emit(
                "child.exited",
                f"codex app-server exited ({description})",
                level="info" if self.stopping else "error",
                detail={
                    "exitCode": status.code if status else None,
                    "signal": status.signal if status else None,
                    "error": error,
                },
            )
        )
        code = "daemon_stopped" if self.stopping else "child_exited"
        for emit in self.book.fail_all_current(code, f"codex app-server exited ({description})"):
            self.publish(emit)
        self._save_registry()
        self._expire_pending_approvals("the codex app-server exited")

    def require_client(self) -> AppServerClient:
        client = self.client
        if client is None or self.child.state != "running":
            raise ChildUnavailable(
                f"the codex app-server is {self.child.state}", child=msgspec.to_builtins(self.child)
            )
        return client

    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "codexd is stopping"
        if self.client is None or self.child.state != "running":
            reason = f"codex app-server is {self.child.state}"
            if self.child.lastError:
                reason += f" ({self.child.lastError})"
            return False, reason
        return True, "ready"

    # ------------------------------------------------------------------ notifications

    def _on_notification(self, note: Notification) -> None:
        before = self.book.version
        emits = self.book.on_notification(note.method, note.params)
        for emit in emits:
            self.publish(emit)
        if note.method == "serverRequest/resolved":
            self._on_request_resolved(note.params)
        if self.book.version != before:
            self._save_registry()

    # ------------------------------------------------------------------ sessions and turns

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ShuttingDown("codexd is shutting down and accepts no new work")

    async def create_session(self, req: CreateSessionRequest) -> Session:
        self._check_accepting()
        client = self.require_client()
        result = await self._call(
            client.thread_start(
                **_thread_params(req.cwd, req.model, req.approvalPolicy, req.sandbox)
            )
        )
        thread = result.get("thread") or {}
        now = now_iso()
        session = Session(
            sessionId=f"session-{uuid.uuid4()}",
            threadId=str(thread["id"]),
            purpose=req.purpose,
            cwd=result.get("cwd") or thread.get("cwd"),
            model=result.get("model"),
            approvalPolicy=_policy_text(result.get("approvalPolicy")),
            sandbox=_sandbox_text(result.get("sandbox")),
            approvals=req.approvals or "decline",
            createdAt=now,
            updatedAt=now,
        )
        self._loaded_threads.add(session.threadId)
        self.publish(self.book.add(session))
        self._save_registry()
        await self.log.flush()
        return session

    async def _call(self, awaitable: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await awaitable
        except ChildExited as exc:
            raise ChildUnavailable(
                f"the codex app-server exited during the request ({exc})",
                child=msgspec.to_builtins(self.child),
            ) from exc
        except RequestTimeout as exc:
            raise ChildUnavailable(
                f"the codex app-server did not answer in time ({exc})",
                child=msgspec.to_builtins(self.child),
            ) from exc

    def _thread_lock(self, session_id: str) -> trio.Lock:
        return self._thread_locks.setdefault(session_id, trio.Lock())

    async def ensure_thread(self, session_id: str) -> Session:
        """Make sure the session's thread is loaded in the current child.

        After a child or codexd restart the thread is resumed with ``thread/resume``; a thread
        that never ran a turn was never persisted by Codex, so it is re-created transparently
        (new ``threadId`` recorded, ``session.rethreaded`` emitted).
        """
        async with self._thread_lock(session_id):
            session = self.book.get(session_id)
            if session.threadId in self._loaded_threads:
                return session
            client = self.require_client()
            params = _thread_params(session.cwd, session.model, session.approvalPolicy, None)
            if session.threadPersisted:
                try:
                    await self._call(client.thread_resume(session.threadId, **params))
                except AppServerError as exc:
                    if "no rollout found" not in exc.message:
                        raise
                    log.warning("thread %s cannot be resumed: %s", session.threadId, exc.message)
                else:
                    self._loaded_threads.add(session.threadId)
                    self.publish(
                        Emit(
                            "session.resumed",
                            f"session {session_id} re-attached to thread {session.threadId}",
                            session_id=session_id,
                            thread_id=session.threadId,
                        )
                    )
                    return session
            sandbox = (
                session.sandbox
                if session.sandbox in ("read-only", "workspace-write", "danger-full-access")
                else None
            )
            params = _thread_params(session.cwd, session.model, session.approvalPolicy, sandbox)
            result = await self._call(client.thread_start(**params))
            thread_id = str(result["thread"]["id"])
            reason = "the thread never ran a turn, so Codex did not persist it"
            if session.threadPersisted:
                reason = "Codex has no rollout for the thread"
            self.publish(self.book.rethread(session_id, thread_id, reason))
            self._loaded_threads.add(thread_id)
            self._save_registry()
            return self.book.get(session_id)

    async def close_session(self, session_id: str) -> Session:
        """Close a session: it keeps its history but accepts no more turns."""
        session = self.book.get(session_id)
        if session.status == "closed":
            return session
        emit = self.book.close(session_id)
        self.publish(emit)
        self._save_registry()
        await self.log.flush()
        return self.book.get(session_id)

    async def start_turn(self, req: TurnRequest) -> tuple[Session, str]:
        self._check_accepting()
        self.require_client()
        self.book.begin_turn(req.sessionId)
        try:
            session = await self.ensure_thread(req.sessionId)
            client = self.require_client()
            result = await self._call(client.turn_start(session.threadId, input_items(req.input)))
            turn_id = str(result["turn"]["id"])
        except BaseException:
            self.book.abort_turn(req.sessionId)
            raise
        session, emit = self.book.accept_turn(req.sessionId, turn_id)
        self.publish(emit)
        self._save_registry()
        await self.log.flush()
        return session, turn_id

    async def steer_turn(self, req: SteerRequest) -> tuple[Session, str]:
        self._check_accepting()
        session = self.book.get(req.sessionId)
        if session.currentTurnId is None:
            raise NoActiveTurn(
                f"session {req.sessionId} has no turn to steer", sessionId=req.sessionId
            )
        expected = req.expectedTurnId or session.currentTurnId
        client = self.require_client()
        try:
            result = await self._call(
                client.turn_steer(
                    session.threadId, input_items(req.input), expected_turn_id=expected
                )
            )
        except AppServerError as exc:
            raise _map_turn_error(exc, req.sessionId, session.currentTurnId) from exc
        turn_id = str(result.get("turnId") or expected)
        self.publish(
            Emit(
                "turn.steered",
                f"turn {turn_id} steered",
                session_id=req.sessionId,
                thread_id=session.threadId,
                turn_id=turn_id,
            )
        )
        return self.book.get(req.sessionId), turn_id

    async def interrupt_turn(self, req: InterruptRequest) -> tuple[Session, str]:
        session = self.book.get(req.sessionId)
        if session.currentTurnId is None:
            raise NoActiveTurn(
                f"session {req.sessionId} has no turn to interrupt", sessionId=req.sessionId
            )
        turn_id = req.turnId or session.currentTurnId
        client = self.require_client()
        try:
            await self._call(client.turn_interrupt(session.threadId, turn_id))
        except AppServerError as exc:
            raise _map_turn_error(exc, req.sessionId, session.currentTurnId) from exc
        self.publish(
            Emit(
                "turn.interrupt.requested",
                f"interrupt requested for turn {turn_id}",
                session_id=req.sessionId,
                thread_id=session.threadId,
                turn_id=turn_id,
            )
        )
        return self.book.get(req.sessionId), turn_id

    # ------------------------------------------------------------------ approvals

    def approvals(self, state: str | None = None) -> list[Approval]:
        items = self.approvals_doc.value.approvals
        return [a for a in items if state is None or a.state == state]

    def approval(self, approval_id: str) -> Approval:
        for a in self.approvals_doc.value.approvals:
            if a.approvalId == approval_id:
                return a
        raise ApprovalNotFound(f"no approval {approval_id!r}", approvalId=approval_id)

    def _put_approval(self, approval: Approval) -> None:
        items = [
            a for a in self.approvals_doc.value.approvals if a.approvalId != approval.approvalId
        ]
        items.append(approval)
        # Keep every pending one and the newest 500 settled ones.
        settled = [a for a in items if a.state != "pending"]
        if len(settled) > 500:
            drop = {a.approvalId for a in settled[: len(settled) - 500]}
            items = [a for a in items if a.approvalId not in drop]
        self.approvals_doc.set(ApprovalBook(approvals=items))

    async def _on_server_request(self, req: ServerRequest) -> Any:
        params = req.params
        thread_id = params.get("threadId")
        session = self.book.session_for_thread(thread_id if isinstance(thread_id, str) else None)
        kind = APPROVAL_METHODS.get(req.method)
        if kind is None:
            self.publish(
                Emit(
                    "app-server.request.declined",
                    f"declined unsupported app-server request {req.method}",
                    level="warn",
                    session_id=session.sessionId if session else None,
                    thread_id=thread_id if isinstance(thread_id, str) else None,
                    detail={"method": req.method, "params": params},
                )
            )
            raise UnsupportedServerRequest(f"codexd does not handle {req.method}")
        approval = Approval(
            approvalId=f"approval-{uuid.uuid4()}",
            sessionId=session.sessionId if session else None,
            threadId=thread_id if isinstance(thread_id, str) else None,
            turnId=params.get("turnId"),
            itemId=params.get("itemId"),
            kind=kind,
            method=req.method,
            createdAt=now_iso(),
            params=params,
        )
        pending = _PendingApproval()
        self._pending_approvals[approval.approvalId] = pending
        child_key = (str(self.child.pid), req.id)
        self._request_to_approval[child_key] = approval.approvalId
        self._put_approval(approval)
        self._publish_approval(
            "approval.requested", approval, f"{kind} approval requested ({approval.approvalId})"
        )
        try:
            mode = session.approvals if session else "decline"
            if mode == "decline":
                self._decide(approval.approvalId, "decline", "policy")
            else:
                with trio.move_on_after(self.config.approval_timeout_s):
                    await pending.decided.wait()
                if not pending.decided.is_set():
                    self._decide(approval.approvalId, "decline", "timeout")
            if pending.decision is None:
                # Expired (turn ended, child gone): the child no longer waits for an answer.
                raise UnsupportedServerRequest("approval expired")
            return {"decision": pending.decision}
        finally:
            self._pending_approvals.pop(approval.approvalId, None)
            self._request_to_approval.pop(child_key, None)

    def _publish_approval(
        self, type_: str, approval: Approval, message: str, *, level: Level = "info", **extra: Any
    ) -> None:
        self.publish(
            Emit(
                type_,
                message,
                level=level,
                session_id=approval.sessionId,
                thread_id=approval.threadId,
                turn_id=approval.turnId,
                detail={"approval": msgspec.to_builtins(approval), **extra},
            )
        )

    def _decide(self, approval_id: str, decision: Decision, decided_by: str) -> Approval:
        approval = self.approval(approval_id)
        pending = self._pending_approvals.get(approval_id)
        if approval.state != "pending" or pending is None or pending.decided.is_set():
            raise ApprovalResolved(
                f"approval {approval_id} is already {approval.state}",
                approvalId=approval_id,
                state=approval.state,
                decision=approval.decision,
            )
        pending.decision = decision
        pending.decided_by = decided_by
        pending.decided.set()
        approval = msgspec.structs.replace(
            approval,
            state="resolved",
            decision=decision,
            decidedBy=decided_by,
            resolvedAt=now_iso(),
        )
        self._put_approval(approval)
        self._publish_approval(
            "approval.resolved",
            approval,
            f"approval {approval_id} resolved: {decision} ({decided_by})",
        )
        return approval

    async def decide_approval(
        self, approval_id: str, decision: Decision, decided_by: str | None
    ) -> Approval:
        approval = self._decide(approval_id, decision, decided_by or "client")
        await self.approvals_doc.flush()
        return approval

    def _on_request_resolved(self, params: dict[str, Any]) -> None:
        request_id = params.get("requestId")
        if not isinstance(request_id, (int, str)):
            return
        approval_id = self._request_to_approval.get((str(self.child.pid), request_id))
        if approval_id is not None and approval_id in self._pending_approvals:
            self._expire(approval_id, "the app-server withdrew the request")

    def _expire(self, approval_id: str, reason: str) -> None:
        pending = self._pending_approvals.get(approval_id)
        if pending is not None and not pending.decided.is_set():
            pending.decided.set()
        approval = self.approval(approval_id)
        if approval.state != "pending":
            return
        approval = msgspec.structs.replace(approval, state="expired", resolvedAt=now_iso())
        self._put_approval(approval)
        self._publish_approval(
            "approval.resolved",
            approval,
            f"approval {approval_id} expired: {reason}",
            level="warn",
            reason=reason,
        )

    def _expire_pending_approvals(self, reason: str) -> None:
        for approval in self.approvals("pending"):
            self._expire(approval.approvalId, reason)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        sessions = self.book.all()
        recent = self.hub.recent()
        return {
            "service": {
                "localApiBase": self.config.local_api_base,
                "resolvedBaseUrl": self.resolved_base_url,
                "eventStreamPath": self.config.event_stream_path,
                "eventStreamUrl": _ws_url(self.resolved_base_url, self.config.event_stream_path),
            },
            "snapshot": {
                "identity": msgspec.to_builtins(self.identity_doc.value),
                "daemon": {
                    "started": self.started_at is not None and not self.stopping,
                    "startedAt": self.started_at,
                    "pid": os.getpid(),
                    "version": __version__,
                    "accepting": self.accepting,
                    "child": msgspec.to_builtins(self.child),
                },
                "sessions": {
                    "count": len(sessions),
                    "activeCount": sum(1 for s in sessions if s.status == "active"),
                },
                "activeTurns": self.book.active_turns(),
                "approvals": {"pendingCount": len(self.approvals("pending"))},
                "recentEvents": {
                    "count": len(recent),
                    "lastSeq": self.hub.last_seq,
                    "events": [msgspec.to_builtins(e) for e in recent],
                },
            },
        }


class UnsupportedServerRequest(Exception):
    """Raised to the app-server client so it answers the request with a JSON-RPC error."""


def _ws_url(base: str | None, path: str) -> str | None:
    if base is None:
        return None
    return base.replace("http://", "ws://", 1) + path


def _thread_params(
    cwd: str | None, model: str | None, approval_policy: str | None, sandbox: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if cwd:
        params["cwd"] = cwd
    if model:
        params["model"] = model
    if approval_policy:
        params["approvalPolicy"] = approval_policy
    if sandbox:
        params["sandbox"] = sandbox
    return params


_SANDBOX_NAMES = {
    "readOnly": "read-only",
    "workspaceWrite": "workspace-write",
    "dangerFullAccess": "danger-full-access",
}


def _sandbox_text(value: Any) -> str | None:
    """The app-server echoes the sandbox as an object; sessions show the plain mode name."""
    if isinstance(value, dict):
        kind = value.get("type")
        return _SANDBOX_NAMES.get(str(kind), str(kind)) if kind else None
    return str(value) if value is not None else None


def _policy_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _map_turn_error(exc: AppServerError, session_id: str, current: str | None) -> DomainError:
    text = exc.message
    if "no active turn" in text:
        return NoActiveTurn(
            f"session {session_id} has no active turn ({text})", sessionId=session_id
        )
    if "expected active turn id" in text:
        return TurnMismatch(
            f"the turn id does not match the active turn ({text})",
            sessionId=session_id,
            currentTurnId=current,
        )
    raise exc
