"""The queue half of :class:`~codexd_trio.core.domain.SessionBook`: its commands on the sessions'
turn queues (:class:`~codexd_trio.core.queue.TurnQueue`), the events that journal them and
their replay (sans-IO; import from :mod:`codexd_trio.core.domain`).

Every change to a queue returns its events in the same synchronous step, as every other change
of the book does: the daemon publishes them, and the answer to a client waits until they are
durable. A restart rebuilds the queues from the registry snapshot plus the journal after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import msgspec

from codexd_trio.base.contracts import (
    Event,
    QueueEntry,
    QueueSnapshot,
    QueueStop,
    Session,
    StartedEntry,
    TurnError,
    TurnInput,
)
from codexd_trio.base.errors import (
    QueueEntryNotFound,
    QueueEntryStarted,
    SessionClosed,
    TurnInProgress,
)
from codexd_trio.core._book import BookState, Emit
from codexd_trio.core.queue import TurnQueue, with_changes

__all__ = ["QUEUE_EVENTS", "QueueCommands"]

# The journal's queue events (each carries what replay needs in ``detail``).
QUEUE_EVENTS = frozenset({
    "turn.queued", "turn.queue.starting", "turn.dequeued", "turn.queue.stopped",
    "turn.queue.resumed", "turn.queue.removed", "turn.queue.moved",
})

START_INTERRUPTED = (
    "codexd stopped while this queued turn was being started, so it cannot tell whether Codex "
    "received it: look at the session, then resume the queue to start it again, or remove it"
)


class QueueCommands(BookState):
    """The sessions' turn queues (see :class:`~codexd_trio.core.domain.SessionBook`)."""

    def __init__(self, sessions: Iterable[Session] = (), queue: QueueSnapshot | None = None
                 ) -> None:
        super().__init__(sessions)
        self.queue = TurnQueue(queue)

    # ---------------------------------------------------------------- reads

    def must_queue(self, session_id: str) -> bool:
        """Whether a turn posted with ``whenBusy: "queue"`` has to wait: a turn runs or is
        starting, or others already wait (they go first), or the queue is stopped."""
        s = self.get(session_id)
        return (s.currentTurnId is not None or session_id in self._starting
                or self.queue.length(session_id) > 0
                or self.queue.stop_of(session_id) is not None)

    def queue_of(self, session_id: str) -> tuple[list[QueueEntry], QueueStop | None]:
        """The session's entries in order and its stop (404 for an unknown session)."""
        self.get(session_id)
        return self.queue.entries(session_id), self.queue.stop_of(session_id)

    # ---------------------------------------------------------------- a client's commands

    def enqueue(self, session_id: str, input: TurnInput, *, request_id: str | None = None
                ) -> tuple[QueueEntry, int, list[Emit]]:
        """Put a turn at the end of the session's queue: the entry, its position, the event."""
        s = self.get(session_id)
        if s.status == "closed":
            raise SessionClosed(f"session {session_id} is closed", sessionId=session_id)
        entry = QueueEntry(queueId=f"queue-{uuid.uuid4()}", sessionId=session_id, input=input,
                           queuedAt=self.now(), requestId=request_id)
        position = self.queue.add(entry)
        s = self._update(s, queueLength=self.queue.length(session_id))
        return entry, position, [Emit(
            "turn.queued", f"turn {entry.queueId} queued on session {session_id} at position "
            f"{position}", session_id=session_id, thread_id=s.threadId,
            detail={"queueId": entry.queueId, "position": position,
                    "entry": msgspec.to_builtins(entry)},
        )]

    def remove_queued(self, session_id: str, queue_id: str) -> tuple[QueueEntry, list[Emit]]:
        """Remove a waiting entry (404 unknown, 409 ``queue_entry_started``). Removing the entry
        a stopped queue stopped on is a person acting on the stop: the queue goes on."""
        entry = self._waiting(session_id, queue_id)
        self.queue.remove(queue_id)
        s = self._update(self.get(session_id), queueLength=self.queue.length(session_id))
        emits = [Emit("turn.queue.removed", f"queued turn {queue_id} removed",
                      session_id=session_id, thread_id=s.threadId,
                      detail={"queueId": queue_id, "reason": "removed"})]
        stop = self.queue.stop_of(session_id)
        if stop is not None and stop.queueId == queue_id:
            emits.append(self._resume(session_id, "the entry it stopped on was removed"))
        return entry, emits

    def move_queued(self, session_id: str, queue_id: str, position: int) -> list[Emit]:
        """Move a waiting entry to ``position`` (clamped; behind an entry being started)."""
        self._waiting(session_id, queue_id)
        moved = self.queue.move(queue_id, position)
        assert moved is not None
        old, new = moved
        if old == new:
            return []
        self.version += 1
        return [Emit("turn.queue.moved", f"queued turn {queue_id} moved from {old} to {new}",
                     session_id=session_id, thread_id=self.get(session_id).threadId,
                     detail={"queueId": queue_id, "from": old, "position": new})]

    def resume_queue(self, session_id: str) -> list[Emit]:
        """Lift the session's stop (nothing if it is not stopped): the head is tried again."""
        self.get(session_id)
        if self.queue.stop_of(session_id) is None:
            return []
        return [self._resume(session_id, "resumed by a client")]

    def close_session(self, session_id: str) -> list[Emit]:
        """Close a session and cancel its queue (409 while a turn runs or starts: nothing is
        cancelled then)."""
        s = self.get(session_id)
        if s.currentTurnId is not None or session_id in self._starting:
            raise TurnInProgress(
                f"session {session_id} has a turn in progress; interrupt it first",
                sessionId=session_id, currentTurnId=s.currentTurnId,
            )
        emits = [
            Emit("turn.queue.removed", f"queued turn {entry.queueId} cancelled: session closed",
                 session_id=session_id, thread_id=s.threadId,
                 detail={"queueId": entry.queueId, "reason": "session_closed"})
            for entry in self.queue.drop_session(session_id)
        ]
        if emits:
            self._update(s, queueLength=0)
        emits.append(self.close(session_id))
        return emits

    # ---------------------------------------------------------------- the dispatcher's

    def pick_ready(self) -> list[QueueEntry]:
        """Heads that may start now (their session idle and open, the queue not stopped),
        marked picked so no other start takes them."""
        picked = []
        for head in list(self.queue.heads()):
            sid = head.sessionId
            s = self._sessions.get(sid)
            if s is None or s.status != "active" or s.currentTurnId is not None \
                    or sid in self._starting:
                continue
            self.queue.pick(head.queueId)
            picked.append(head)
        return picked

    def unpick(self, queue_id: str) -> None:
        """A picked entry was not started after all (nothing was sent): it waits again."""
        self.queue.unpick(queue_id)

    def mark_starting(self, queue_id: str) -> Emit:
        """Journal that ``turn/start`` is about to be sent for the entry."""
        sid, _, entry = self._located(queue_id)
        entry = with_changes(entry, state="starting", attempts=entry.attempts + 1,
                             lastAttemptAt=self.now())
        self.queue.replace(entry)
        self.queue.unpick(queue_id)
        self.version += 1
        return Emit("turn.queue.starting",
                    f"starting queued turn {queue_id} (attempt {entry.attempts})",
                    session_id=sid, thread_id=self.get(sid).threadId,
                    detail={"queueId": queue_id, "attempt": entry.attempts})

    def dequeue(self, queue_id: str, turn_id: str) -> Emit:
        """The entry's turn/start was accepted: it leaves the queue as turn ``turn_id``."""
        sid, _, entry = self._located(queue_id)
        self.queue.remove(queue_id)
        self.queue.remember_started(StartedEntry(queueId=queue_id, sessionId=sid,
                                                 turnId=turn_id, startedAt=self.now()))
        s = self._update(self.get(sid), queueLength=self.queue.length(sid))
        return Emit("turn.dequeued", f"queued turn {queue_id} started as turn {turn_id}",
                    session_id=sid, thread_id=s.threadId, turn_id=turn_id,
                    detail={"queueId": queue_id, "attempts": entry.attempts})

    def stop_queue(self, queue_id: str, code: str, message: str) -> Emit | None:
        """The entry could not be started: it stays at the head with the error and its queue
        stops until a person acts. ``None`` if the entry is gone (its session was closed)."""
        found = self.queue.locate(queue_id)
        self.queue.unpick(queue_id)
        if found is None:
            return None
        sid, _, entry = found
        entry = with_changes(entry, state="waiting", lastError=TurnError(code=code,
                                                                         message=message))
        self.queue.replace(entry)
        self.queue.stop(QueueStop(queueId=queue_id, code=code, message=message,
                                  stoppedAt=self.now()), sid)
        self.version += 1
        return Emit("turn.queue.stopped",
                    f"the queue of session {sid} stopped at {queue_id}: {message}",
                    level="error", session_id=sid, thread_id=self.get(sid).threadId,
                    detail={"queueId": queue_id, "code": code, "message": message,
                            "attempts": entry.attempts})

    def recover_queues(self) -> list[Emit]:
        """After a restart: a start that was marked but never settled stops its queue (Codex
        may or may not have the turn; starting it again could run it twice)."""
        emits = []
        for entry in self.queue.starting():
            emit = self.stop_queue(entry.queueId, "start_interrupted", START_INTERRUPTED)
            if emit is not None:
                emits.append(emit)
        return emits

    # ---------------------------------------------------------------- helpers

    def _waiting(self, session_id: str, queue_id: str) -> QueueEntry:
        self.get(session_id)
        found = self.queue.locate(queue_id)
        if found is None or found[0] != session_id:
            started = self.queue.started(queue_id)
            if started is not None and started.sessionId == session_id:
                raise QueueEntryStarted(
                    f"queued turn {queue_id} already started as turn {started.turnId}",
                    sessionId=session_id, queueId=queue_id, turnId=started.turnId,
                )
            raise QueueEntryNotFound(f"session {session_id} has no queued turn {queue_id}",
                                     sessionId=session_id, queueId=queue_id)
        if self.queue.busy(queue_id):
            raise QueueEntryStarted(f"queued turn {queue_id} is being started",
                                    sessionId=session_id, queueId=queue_id, turnId=None)
        return found[2]

    def _located(self, queue_id: str) -> tuple[str, int, QueueEntry]:
        found = self.queue.locate(queue_id)
        if found is None:
            raise QueueEntryNotFound(f"no queued turn {queue_id}", queueId=queue_id)
        return found

    def _resume(self, session_id: str, reason: str) -> Emit:
        stop = self.queue.clear_stop(session_id)
        self.version += 1
        return Emit("turn.queue.resumed", f"the queue of session {session_id} resumed ({reason})",
                    session_id=session_id, thread_id=self.get(session_id).threadId,
                    detail={"queueId": stop.queueId if stop else None, "reason": reason})

    def _replay_queue(self, event: Event) -> None:
        """Fold one journaled queue event (the snapshot may already hold its effect)."""
        kind, detail = event.type, event.detail
        sid = event.sessionId
        assert sid is not None
        qid = detail.get("queueId")
        found = self.queue.locate(qid) if isinstance(qid, str) else None
        if kind == "turn.queued" and found is None:
            self.queue.add(msgspec.convert(detail["entry"], QueueEntry))
            self._update(self.get(sid), queueLength=self.queue.length(sid))
        elif kind == "turn.queue.starting" and found is not None:
            attempt = detail.get("attempt")
            self.queue.replace(with_changes(
                found[2], state="starting", lastAttemptAt=event.at,
                attempts=attempt if isinstance(attempt, int) else found[2].attempts + 1))
            self.version += 1
        elif kind == "turn.dequeued" and found is not None and event.turnId:
            self.dequeue(found[2].queueId, event.turnId)
        elif kind == "turn.queue.stopped" and found is not None:
            self.stop_queue(found[2].queueId, str(detail.get("code", "start_failed")),
                            str(detail.get("message", event.message)))
        elif kind == "turn.queue.resumed" and self.queue.stop_of(sid) is not None:
            self._resume(sid, str(detail.get("reason", "")))
        elif kind == "turn.queue.removed" and found is not None:
            self.queue.remove(found[2].queueId)
            self._update(self.get(sid), queueLength=self.queue.length(sid))
        elif kind == "turn.queue.moved" and found is not None:
            position = detail.get("position")
            if isinstance(position, int):
                self.queue.move(found[2].queueId, position)
                self.version += 1
