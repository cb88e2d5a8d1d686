"""The queue dispatcher: one task that starts each session's next queued turn (issue 23).

::

    Daemon.run
    └── operations nursery
        └── QueueDispatcher.run         woken by every change of the book, of the child and
            └── a task per start        of the hold; picks the heads that may start and
                                        submits each start to the current child

A head starts when its session's turn has settled (completed, failed, interrupted, or settled
by a crash of the child or of codexd), the queue is not stopped, the node is not held and the
child is running. The start runs in the child's work nursery like every operation:

1. reserve the session (``begin_turn``; a direct turn that got there first wins, the entry
   waits for it);
2. load the thread (``thread/resume`` after a restart): a child that goes away here leaves
   the entry waiting for the next child, nothing was sent;
3. journal ``turn.queue.starting`` and wait until it is durable, then send ``turn/start``;
4. Codex accepts: ``turn.dequeued`` (with the turn id) and ``turn.accepted``. Codex refuses,
   or the child dies with the request in flight: the entry stays at the head with the error
   and the queue **stops** (``turn.queue.stopped``) until a person resumes it or removes the
   entry. Never a silent skip, never a retry loop.

A codexd that dies between 3 and 4 finds the entry ``starting`` on its next start and stops
the queue there (``start_interrupted``): Codex may have the turn, and starting it again could
run it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import Token
from functools import partial

import trio

from codexd_trio.base.context import CURRENT, RequestInfo
from codexd_trio.base.contracts import QueueEntry
from codexd_trio.base.errors import ApiError, ChildUnavailable, DomainError
from codexd_trio.core.domain import Emit, SessionBook
from codexd_trio.core.sessions import SessionService
from codexd_trio.core.supervisor import ChildSupervisor, Incarnation
from codexd_trio.protocol.appserver import AppServerError

log = logging.getLogger("codexd")

__all__ = ["QueueDispatcher"]

# JSON-RPC "invalid request" and "invalid params": Codex refused the entry's input itself.
_BAD_PARAMS = frozenset({-32600, -32602})


class QueueDispatcher:
    """Starts queued turns; see the module docstring.

    Args:
        book: the sessions and their queues.
        sessions: loads threads and sends ``turn/start``.
        supervisor: the child (starts go to its current incarnation).
        publish: hands an event to the hub.
        changed: the book changed (saves the registry snapshot, wakes this dispatcher).
        flush: waits until every published event is durable.
        may_start: whether queued turns may start now (not held, codexd not stopping).
    """

    def __init__(
        self,
        book: SessionBook,
        sessions: SessionService,
        supervisor: ChildSupervisor,
        *,
        publish: Callable[[Emit], object],
        changed: Callable[[], None],
        flush: Callable[[], Awaitable[None]],
        may_start: Callable[[], bool],
    ) -> None:
        self.book = book
        self.sessions = sessions
        self.supervisor = supervisor
        self.publish = publish
        self.changed = changed
        self.flush = flush
        self.may_start = may_start
        self._wake = trio.Event()
        self.starts = 0

    def wake(self) -> None:
        """Something changed that may let a queued turn start: look again."""
        self._wake.set()

    def _child_ready(self) -> bool:
        current = self.supervisor.current
        return (current is not None and not current.closing
                and self.supervisor.child.status == "running")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatch until cancelled (a ``nursery.start`` target, ready at once).

        **Cancellation:** starts already handed to the child finish there (its work nursery
        owns them); an entry picked but not yet sent simply waits again after a restart.
        """
        async with trio.open_nursery() as starts:
            task_status.started()
            while True:
                # A new event before looking: a wake() during the look is not lost.
                wake = self._wake = trio.Event()
                if self.may_start() and self._child_ready():
                    for entry in self.book.pick_ready():
                        starts.start_soon(self._start, entry)
                await wake.wait()

    async def _start(self, entry: QueueEntry) -> None:
        token: Token[RequestInfo | None] | None = None
        if entry.requestId is not None:
            # The turn's events carry the id of the request that queued it, as a direct
            # turn's carry the id of the request that started it.
            token = CURRENT.set(RequestInfo(entry.requestId, "QUEUE", entry.queueId))
        try:
            incarnation = self.supervisor.require()
            await incarnation.run(partial(self._start_on, entry=entry))
        except ChildUnavailable:
            pass  # the child went before the start ran: the entry waits for the next one
        except Exception:
            # A bug must not take codexd down with the dispatcher; the entry is left as the
            # journal says (a start marked but not settled stops its queue at the next start).
            log.exception("the queue dispatcher failed to start %s", entry.queueId)
        finally:
            self.book.unpick(entry.queueId)
            if token is not None:
                CURRENT.reset(token)
            self.wake()

    async def _start_on(self, inc: Incarnation, *, entry: QueueEntry) -> None:
        sid, qid = entry.sessionId, entry.queueId
        try:
            self.book.begin_turn(sid)
        except DomainError:
            return  # a direct turn got there first (or the session closed): wait for it
        sent = False
        try:
            session = await self.sessions.ensure_thread(inc, sid)
            if not self.may_start():
                self.book.abort_turn(sid)
                return  # held (or stopping) meanwhile, nothing sent: it waits
            self.publish(self.book.mark_starting(qid))
            self.changed()
            await self.flush()
            sent = True
            turn_id = await self.sessions.send_turn_start(inc, session, entry.input)
        except ChildUnavailable as exc:
            self.book.abort_turn(sid)
            if not sent and (inc.closing or self.supervisor.current is not inc):
                return  # the child went away before anything was sent: the next one starts it
            suffix = "; Codex may or may not have received the turn" if sent else ""
            self._stop(qid, exc.code, f"{exc.message}{suffix}")
            return
        except AppServerError as exc:
            self.book.abort_turn(sid)
            code = "invalid_request" if exc.code in _BAD_PARAMS else "app_server_error"
            self._stop(qid, code, f"the app-server refused {exc.method}: {exc.message}")
            return
        except ApiError as exc:
            self.book.abort_turn(sid)
            self._stop(qid, exc.code, exc.message)
            return
        except Exception as exc:
            self.book.abort_turn(sid)
            log.exception("starting queued turn %s failed", qid)
            self._stop(qid, "internal_error", f"codexd could not start it: {exc!r}")
            return
        except BaseException:
            self.book.abort_turn(sid)
            raise
        self.sessions.accept(sid, turn_id, entry.input,
                             before=lambda: self.book.dequeue(qid, turn_id))
        self.starts += 1
        self.changed()
        try:
            await self.flush()
        except ApiError as exc:  # the disk refuses: the events stay buffered and are retried
            log.warning("queued turn %s started; its events are not durable yet: %s", qid, exc)

    def _stop(self, queue_id: str, code: str, message: str) -> None:
        emit = self.book.stop_queue(queue_id, code, message)
        if emit is not None:
            log.warning("queue stopped at %s: %s (%s)", queue_id, message, code)
            self.publish(emit)
            self.changed()
