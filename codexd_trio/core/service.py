"""codexd's composition root: the files, the hub, the child supervisor, sessions and approvals
in one nursery tree (DESIGN.md, "The child incarnation…").

::

    Daemon.run()
    └── root nursery
        ├── store writers         one JsonDocument.run per document + EventLog.run (group commit)
        ├── operations            keyed requests run here whole, so their outcome is recorded
        └── services
            ├── HTTP/WS server    Hypercorn serving the Quart-Trio app (``serve``)
            └── ChildSupervisor   restart loop; each Incarnation has its own work nursery

Everything the API layer can do goes through the methods of :class:`Daemon`; they raise the
typed errors of :mod:`codexd_trio.core.domain` and :mod:`codexd_trio.base.errors`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from codexd_trio import __version__
from codexd_trio.base.context import current_request_id
from codexd_trio.base.contracts import (
    MAX_APPROVAL_TIMEOUT_S,
    ChildStatus,
    CodexdStatus,
    DaemonState,
    Event,
    now_iso,
)
from codexd_trio.core._queue_ops import QueueOperations, TurnOutcome
from codexd_trio.core.approval_rules import RuleBook
from codexd_trio.core.approvals import ApprovalBroker, ApprovalLedger, UnsupportedServerRequest
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.dispatcher import QueueDispatcher
from codexd_trio.core.domain import Emit, SessionBook
from codexd_trio.core.hub import EventHub
from codexd_trio.core.metrics import TURN_END_TYPES, CodexdMetrics
from codexd_trio.core.recovery import recover_after_restart, replay_journal
from codexd_trio.core.sessions import SessionService
from codexd_trio.core.snapshots import ApprovalSnapshots
from codexd_trio.core.status import codexd_status, readiness
from codexd_trio.core.supervisor import (
    Backoff,
    ChildSupervisor,
    Incarnation,
    child_spec,
)
from codexd_trio.core.threads import ThreadService
from codexd_trio.core.transcripts import Transcripts
from codexd_trio.protocol.appserver import Notification, ServerRequest
from codexd_trio.protocol.child import ChildSpec, ExitStatus
from codexd_trio.store.idempotency import IdempotencyStore
from codexd_trio.store.statedir import StateDir

log = logging.getLogger("codexd")

# How many sessions the registry snapshot may hold per second of its rewrite interval.
REGISTRY_SESSIONS_PER_S = 25_000

__all__ = ["Daemon", "TurnOutcome", "UnsupportedServerRequest"]

# Of the shutdown grace, what the staged child stop (stdin close, SIGTERM, SIGKILL) needs.
CHILD_STOP_RESERVE_S = 4.0


# Bounds the turn -> request id map if turns never end (a child that died mid-turn settles them
# as failed, which removes them; this is only a backstop).
_TURN_REQUESTS_KEPT = 1024


class Daemon(QueueOperations):
    """One codexd: owns the files, the event hub, the child and the session registry.

    **Resource handling:** the files are opened by the constructor; :meth:`run` owns every task
    and, when it returns (normally or by cancellation), the child's process group is gone and
    every document and the event log are flushed.
    """

    def __init__(self, config: CodexdConfig) -> None:
        self.config = config
        self.started_at: str | None = None
        self.started_monotonic = 0.0
        self.resolved_base_url: str | None = None
        self.accepting = True
        self.stopping = False
        self._stop_requested = trio.Event()
        # Set (and replaced) whenever the sessions change; graceful stop waits on it.
        self._book_changed = trio.Event()
        self._streams: set[object] = set()
        self._streams_closed = trio.Event()
        self._operations: trio.Nursery | None = None
        # turn id -> the id of the request that started it (insertion order: oldest first).
        self._turn_requests: dict[str, str] = {}
        self.files = StateDir(config)
        self.log = self.files.log
        self.hub = EventHub(
            self.log, self.files.recent,
            recent_size=config.event_cache_size, subscriber_queue=config.subscriber_queue,
        )
        # Conversation records (issue 22): folded from each durable batch as the hub publishes
        # it, in the same step, so a transcript and its lastSeq always agree.
        self.transcripts = Transcripts(self.files.conversation, lambda: self.hub.published_seq,
                                       lambda sid: self.book.queue_of(sid)[0])
        self.transcripts.follow(self.log)
        self.book = SessionBook(self.files.registry_sessions, self.files.registry_queue)
        self.files.registry.capture = self._registry_job
        self.files.registry.before_write = self._registry_durable
        self._registry_seq = 0
        self.sessions = SessionService(self.book, self.publish, self._save_registry,
                                       self._acknowledge)
        self.threads = ThreadService(self.book, self.sessions, self.publish, self._save_registry,
                                     self._acknowledge, self._wait_book_changed,
                                     timeout_s=config.request_timeout_s)
        self.ledger = ApprovalLedger(self.files.approvals)
        self.rules = RuleBook(self.files.approval_rules, config.approval_timeout_s)
        # Stamped with the seq it reflects, replayed at start (issue 26).
        self.approval_snapshots = ApprovalSnapshots(self.files.approvals, self.log,
                                                    lambda: self.hub.last_seq)
        self.broker = ApprovalBroker(
            self.ledger, self.publish, timeout_s=config.approval_timeout_s, rules=self.rules
        )
        self.supervisor = ChildSupervisor(
            self,
            backoff=Backoff(config.restart_backoff_s, config.restart_backoff_max_s),
            request_timeout=config.request_timeout_s,
            # A backstop only: the broker answers every approval by its session's timeout,
            # which may be longer than --approval-timeout (issue 25).
            server_request_timeout=max(config.approval_timeout_s, MAX_APPROVAL_TIMEOUT_S) + 30.0,
            stdout_log=config.codexd_logs / "stdout.log",
            external=config.server_endpoint if config.server_strategy == "external" else None,
        )
        # Starts queued turns (issue 23); runs in the operations nursery.
        self.dispatcher = QueueDispatcher(
            self.book, self.sessions, self.supervisor, publish=self.publish,
            changed=self._save_registry, flush=self._acknowledge, may_start=self.may_start_queued,
        )
        # Last: its collectors read the parts above.
        self.metrics = CodexdMetrics(self)

    @property
    def idem(self) -> IdempotencyStore:
        return self.files.idempotency

    # ------------------------------------------------------------------ records

    def publish(self, emit: Emit) -> Event:
        detail = emit.detail
        # Events caused by a request carry its id, so one id follows a turn from the caller
        # through the conductor into the journal. The contextvar reaches operations spawned
        # from the request's task; the turn's later events come from the child's reader task,
        # so the id of the request that started a turn is remembered by turn id.
        request_id = current_request_id()
        turn_id = emit.turn_id
        if request_id is None and turn_id is not None:
            request_id = self._turn_requests.get(turn_id)
        elif request_id is not None and turn_id is not None:
            # The request that started the turn keeps it (a steer has its own events).
            self._turn_requests.setdefault(turn_id, request_id)
            while len(self._turn_requests) > _TURN_REQUESTS_KEPT:
                self._turn_requests.pop(next(iter(self._turn_requests)))
        if request_id is not None and "requestId" not in detail:
            detail = {**detail, "requestId": request_id}
        if turn_id is not None and emit.type in TURN_END_TYPES:
            self._turn_requests.pop(turn_id, None)
        event = self.hub.emit(
            emit.type, level=emit.level, session_id=emit.session_id, thread_id=emit.thread_id,
            turn_id=emit.turn_id, message=emit.message, detail=detail,
        )
        self.metrics.on_event(event)
        return event

    @property
    def open_streams(self) -> int:
        """Event-stream websockets open now."""
        return len(self._streams)

    def _registry_job(self) -> Callable[[], bytes]:
        # At write time, on the Trio thread: the book as of now, encoded by the writer thread.
        # The snapshot only shortens the replay at start-up (the log is the truth), so a big
        # registry is rewritten less often: ~4 µs a session to encode, at most ~10% of a core.
        self.files.registry.coalesce_s = max(1.0, self.book.count / REGISTRY_SESSIONS_PER_S)
        # It claims every event emitted so far; the write waits until they are durable
        # (_registry_durable), so a snapshot is never ahead of the journal it shortens.
        self._registry_seq = self.hub.last_seq
        self.approval_snapshots.restamp(self._registry_seq)
        return functools.partial(self.book.freeze().registry_json, self._registry_seq,
                                 self.book.queue.snapshot())

    async def _registry_durable(self) -> None:
        # A snapshot written with the effects of events that are not durable yet, then a
        # SIGKILL: the next start keeps the snapshot and those events (a turn's end, say) are
        # never journaled. Found by the chaos harness on a disk that refused the log's commits.
        await self.log.wait_durable(self._registry_seq)

    def _save_registry(self) -> None:
        self.files.registry.touch()
        self._book_changed.set()
        self._book_changed = trio.Event()
        # A turn settled, a queue changed: the next queued turn may start.
        self.dispatcher.wake()

    async def _wait_book_changed(self) -> None:
        await self._book_changed.wait()

    def _save_state(self) -> None:
        self.files.daemon.set(
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

    def serving_at(self, base_url: str) -> None:
        """The HTTP server is listening at ``base_url`` (port 0 resolved)."""
        self.resolved_base_url = base_url
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

        **Cancellation:** a hard cancel still stops the child's process group (shielded,
        bounded) and flushes every document and the event log.
        """
        await replay_journal(self)
        await self.transcripts.refold(self.log)
        recover_after_restart(self)
        server_stop, server_done = trio.Event(), trio.Event()
        try:
            async with trio.open_nursery() as root:
                writers = root.cancel_scope
                for doc in self.files.documents:
                    await root.start(doc.run)
                await root.start(self.files.idempotency.journal.run)
                await root.start(self.files.conversation.run)
                await root.start(self.log.run)
                async with trio.open_nursery() as operations, trio.open_nursery() as services:
                    self._operations = operations
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
                        await services.start(_until_done, serve, self, server_stop, server_done)
                    else:
                        server_done.set()
                    child_scope = trio.CancelScope()
                    await services.start(_scoped, child_scope, self.supervisor.run)
                    await operations.start(self.dispatcher.run)
                    task_status.started(self)
                    await self._stop_requested.wait()
                    await self._graceful_stop(child_scope, server_stop, server_done)
                    services.cancel_scope.cancel(reason="codexd stopped")
                    operations.cancel_scope.cancel(reason="codexd stopped")
                # The writers' own cancellation handlers make the final durable writes.
                writers.cancel(reason="codexd stopped: final flush")
        finally:
            self.close()

    def close(self) -> None:
        """Release the event log's file (writing anything still buffered). Idempotent."""
        self.files.close()

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def _graceful_stop(
        self, child_scope: trio.CancelScope, server_stop: trio.Event, server_done: trio.Event
    ) -> None:
        """DESIGN.md's order, every step awaited: stop accepting → close subscribers with 1001
        and let those handlers finish → drain running turns within the grace → the HTTP
        server's own graceful exit → stop the child → settle what is left."""
        grace = self.config.shutdown_grace_s
        deadline = trio.current_time() + grace
        self.accepting = False
        self.stopping = True
        self.publish(Emit("daemon.stopping", "codexd is stopping", detail={"graceS": grace}))
        self._save_state()
        self.hub.close_subscribers()
        with trio.move_on_at(deadline):
            while self._streams:
                await self._streams_closed.wait()
        with trio.move_on_at(deadline - min(CHILD_STOP_RESERVE_S, grace / 2)):
            while self.book.active_turns():
                await self._book_changed.wait()
        server_stop.set()
        with trio.move_on_at(max(deadline, trio.current_time() + 1.0)):
            await server_done.wait()
        child_scope.cancel(reason="codexd graceful stop")
        self.supervisor.stopped()
        for emit in self.book.fail_all_current("daemon_stopped", "codexd stopped during the turn"):
            self.publish(emit)
        self._save_registry()

    @contextmanager
    def stream_open(self) -> Iterator[None]:
        """Count an open event stream; graceful stop waits for it to send its close."""
        token = object()
        self._streams.add(token)
        try:
            yield
        finally:
            self._streams.discard(token)
            self._streams_closed.set()
            self._streams_closed = trio.Event()

    # ------------------------------------------------------------------ the supervisor's host

    def child_spec(self) -> ChildSpec:
        return child_spec(self.config)

    def child_changed(self, child: ChildStatus) -> None:
        self._save_state()
        self.dispatcher.wake()  # a child running again starts what waited for it

    def child_gone(self, status: ExitStatus | None, error: str | None) -> None:
        """The incarnation ended (all its operations settled): settle its turns and approvals."""
        description = status.describe() if status else (error or "failed to start")
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
        self.broker.expire_all("the codex app-server exited")

    def on_notification(self, incarnation: Incarnation, note: Notification) -> None:
        before = self.book.version
        try:
            emits = self.book.on_notification(note.method, note.params)
        except Exception:
            # A bug in the fold must not pass silently (the reader would only log it): record
            # the notification itself, and snapshot whatever the fold changed before failing.
            log.exception("folding %s failed", note.method)
            emits = [Emit("app-server.notification.unhandled",
                          f"codexd could not fold {note.method}; see its log", level="error",
                          detail={"method": note.method, "params": note.params})]
        for emit in emits:
            self.publish(emit)
        if note.method == "item/started":
            # A file change's paths, for the approval rules (its request carries none).
            self.rules.saw_item(note.params.get("item"))
        if note.method == "serverRequest/resolved":
            self.broker.withdrawn(incarnation, note.params.get("requestId"))
        if self.book.version != before:
            self._save_registry()

    async def on_server_request(self, incarnation: Incarnation, req: ServerRequest) -> Any:
        thread_id = req.params.get("threadId")
        session = self.book.session_for_thread(thread_id if isinstance(thread_id, str) else None)
        return await self.broker.on_request(incarnation, req, session)

    async def room(self) -> None:
        """The child's reader waits here while the event log's backlog is full."""
        await self.log.room()

    def readiness(self) -> tuple[str | None, str]:
        """``(None, "ready")``, or the code and reason ``/readyz`` answers 503 with
        (:func:`codexd_trio.core.status.readiness`)."""
        return readiness(self)

    # ------------------------------------------------------------------ status

    def status(self) -> CodexdStatus:
        """``GET /v1/codexd/status`` (built by :func:`codexd_trio.core.status.codexd_status`)."""
        return codexd_status(self)


async def _until_done(
    serve: Callable[[Daemon, trio.Event], Awaitable[None]],
    daemon: Daemon,
    stop: trio.Event,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the HTTP server and say when it has finished its own graceful exit."""
    try:
        await serve(daemon, stop, task_status=task_status)  # type: ignore[call-arg]
    finally:
        done.set()


async def _scoped(
    scope: trio.CancelScope,
    fn: Callable[..., Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await fn(task_status=task_status)
