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

import msgspec
import trio

from codexd_trio import __version__
from codexd_trio.base.context import current_request_id
from codexd_trio.base.contracts import (
    ChildStatus,
    CodexdStatus,
    DaemonState,
    Event,
    now_iso,
)
from codexd_trio.core._operations import DaemonOperations
from codexd_trio.core.approvals import ApprovalBroker, ApprovalLedger, UnsupportedServerRequest
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.domain import Emit, SessionBook
from codexd_trio.core.hub import EventHub
from codexd_trio.core.metrics import TURN_END_TYPES, CodexdMetrics
from codexd_trio.core.sessions import SessionService
from codexd_trio.core.status import codexd_status
from codexd_trio.core.supervisor import (
    Backoff,
    ChildSupervisor,
    Incarnation,
    child_spec,
)
from codexd_trio.protocol.appserver import Notification, ServerRequest
from codexd_trio.protocol.child import ChildSpec, ExitStatus
from codexd_trio.store.documents import encode_document
from codexd_trio.store.idempotency import IdempotencyStore
from codexd_trio.store.statedir import StateDir

log = logging.getLogger("codexd")

# How many sessions the registry snapshot may hold per second of its rewrite interval.
REGISTRY_SESSIONS_PER_S = 25_000
# How far approvals.json's stamp may lag the registry's before it is rewritten to catch up.
APPROVALS_RESTAMP_EVENTS = 10_000

__all__ = ["Daemon", "UnsupportedServerRequest"]

# Of the shutdown grace, what the staged child stop (stdin close, SIGTERM, SIGKILL) needs.
CHILD_STOP_RESERVE_S = 4.0


# Bounds the turn -> request id map if turns never end (a child that died mid-turn settles them
# as failed, which removes them; this is only a backstop).
_TURN_REQUESTS_KEPT = 1024


class Daemon(DaemonOperations):
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
        self.book = SessionBook(self.files.registry_sessions)
        self.files.registry.capture = self._registry_job
        self.files.registry.before_write = self._registry_durable
        self._registry_seq = 0
        self.sessions = SessionService(self.book, self.publish, self._save_registry,
                                       self._acknowledge)
        self.ledger = ApprovalLedger(self.files.approvals)
        self.files.approvals.capture = self._approvals_job
        self.files.approvals.before_write = self._approvals_durable
        self._approvals_seq = 0
        self.broker = ApprovalBroker(
            self.ledger, self.publish, timeout_s=config.approval_timeout_s
        )
        self.supervisor = ChildSupervisor(
            self,
            backoff=Backoff(config.restart_backoff_s, config.restart_backoff_max_s),
            request_timeout=config.request_timeout_s,
            server_request_timeout=config.approval_timeout_s + 30.0,
            stdout_log=config.codexd_logs / "stdout.log",
            external=config.server_endpoint if config.server_strategy == "external" else None,
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
        self._restamp_approvals()
        return functools.partial(self.book.freeze().registry_json, self._registry_seq)

    async def _registry_durable(self) -> None:
        # A snapshot written with the effects of events that are not durable yet, then a
        # SIGKILL: the next start keeps the snapshot and those events (a turn's end, say) are
        # never journaled. Found by the chaos harness on a disk that refused the log's commits.
        await self.log.wait_durable(self._registry_seq)

    # approvals.json is a snapshot of the approval events, as the registry is of the session
    # events (issue 26): stamped with the seq it reflects, written once that seq is durable,
    # and the approval events after the stamp are replayed at start (_replay_journal).

    def _approvals_job(self) -> Callable[[], bytes]:
        self._approvals_seq = self.hub.last_seq
        book = msgspec.structs.replace(self.files.approvals.value, lastSeq=self._approvals_seq)
        # The value carries the stamp it will have on disk (no new version: nothing changed).
        self.files.approvals.value = book
        return functools.partial(encode_document, book, pretty=False)

    async def _approvals_durable(self) -> None:
        await self.log.wait_durable(self._approvals_seq)

    def _restamp_approvals(self) -> None:
        # Approvals change rarely; a stamp left far behind would make the next start read a
        # long stretch of log for nothing. Whenever the registry snapshot is written and the
        # approvals' stamp lags it by more than APPROVALS_RESTAMP_EVENTS, rewrite that file
        # too, so a start never reads more than that many events beyond the registry's replay.
        stamp = self.files.approvals.value.lastSeq
        if stamp is None or stamp < self._registry_seq - APPROVALS_RESTAMP_EVENTS:
            self.files.approvals.set(
                msgspec.structs.replace(self.files.approvals.value, lastSeq=self._registry_seq))

    def _save_registry(self) -> None:
        self.files.registry.touch()
        self._book_changed.set()
        self._book_changed = trio.Event()

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
        await self._replay_journal()
        self._recover_after_restart()
        server_stop, server_done = trio.Event(), trio.Event()
        try:
            async with trio.open_nursery() as root:
                writers = root.cancel_scope
                for doc in self.files.documents:
                    await root.start(doc.run)
                await root.start(self.files.idempotency.journal.run)
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

    async def _replay_journal(self) -> None:
        """Bring the registry and approvals snapshots up to date with the durable event log."""
        snapshot_seq = self.files.registry.value.lastSeq
        approvals_seq = self.files.approvals.value.lastSeq
        if approvals_seq is not None and approvals_seq > self.log.last_seq:
            # As for the registry below: the next events reuse those seqs.
            self.files.approvals.touch()
            await self.files.approvals.flush()
            approvals_seq = self.log.last_seq
        if snapshot_seq > self.log.last_seq:
            # The log lost its torn tail after the snapshot was written: renumbering continues
            # from the log, so the snapshot must not claim events it will never see again.
            log.warning("registry snapshot is ahead of the event log (%d > %d)",
                        snapshot_seq, self.log.last_seq)
            self._save_registry()
            # Durable before the first new event: those will reuse the seqs the snapshot
            # claims, and a crash before a lazy rewrite would make the next start skip them.
            await self.files.registry.flush()
            snapshot_seq = self.log.last_seq
        # One read for both: from the older stamp (a file without a stamp, written before
        # stamps existed, is not replayed; its first rewrite stamps it).
        start = snapshot_seq if approvals_seq is None else min(snapshot_seq, approvals_seq)
        events = await self.log.read_after(start) if start < self.log.last_seq else []
        if self.book.replay(e for e in events if e.seq > snapshot_seq):
            log.info("replayed the logged events after seq %d over the registry snapshot",
                     snapshot_seq)
            self._save_registry()
        if approvals_seq is not None and self.ledger.replay(
                e for e in events if e.seq > approvals_seq):
            log.info("replayed the logged approval events after seq %d over approvals.json",
                     approvals_seq)

    def _recover_after_restart(self) -> None:
        """Settle what a previous codexd left unfinished (it may have been SIGKILLed)."""
        emits = self.book.fail_all_current(
            "daemon_restarted", "codexd restarted while the turn was running"
        )
        for emit in emits:
            self.publish(emit)
        if emits:
            self._save_registry()
        self.broker.expire_all("codexd restarted")

    # ------------------------------------------------------------------ the supervisor's host

    def child_spec(self) -> ChildSpec:
        return child_spec(self.config)

    def child_changed(self, child: ChildStatus) -> None:
        self._save_state()

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
        """``(None, "ready")``, or the error code and the reason ``/readyz`` answers 503 with."""
        if self.stopping:
            return "shutting_down", "codexd is stopping"
        if self.log.write_error is not None:
            return "store_unavailable", (
                f"the event log cannot be written ({self.log.write_error}); "
                f"{self.log.waiting} events wait to become durable"
                + ("; reading from codex is paused until they are written"
                   if self.log.backlogged else "")
            )
        if self.supervisor.current is None or self.child.status != "running":
            reason = f"codex app-server is {self.child.status}"
            if self.child.lastError:
                reason += f" ({self.child.lastError})"
            return "child_unavailable", reason
        return None, "ready"

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
