"""What the API layer asks of :class:`~codexd_trio.core.service.Daemon` about the turn queues
and the hold (issue 23). A mixin only for size, as ``_operations``: the state is the Daemon's.

Every change publishes its events, and the answer waits until they are durable
(``_acknowledge``): a 202 ``queued`` means the entry is in the journal.
"""

from __future__ import annotations

from dataclasses import dataclass

from codexd_trio.base.context import current_request_id
from codexd_trio.base.contracts import (
    Event,
    HoldRequest,
    QueueEntry,
    QueueHold,
    QueueStatus,
    QueueView,
    Session,
    TurnRequest,
    now_iso,
)
from codexd_trio.base.errors import TurnInProgress
from codexd_trio.core._operations import DaemonOperations
from codexd_trio.core.dispatcher import QueueDispatcher
from codexd_trio.core.domain import Emit

__all__ = ["QueueOperations", "TurnOutcome"]


@dataclass(frozen=True)
class TurnOutcome:
    """What ``POST /turn`` did: started a turn (``turn_id``) or queued it (``entry``)."""

    session: Session
    turn_id: str | None = None
    entry: QueueEntry | None = None
    position: int | None = None


class QueueOperations(DaemonOperations):
    """The Daemon's queue operations (see :class:`~codexd_trio.core.service.Daemon`)."""

    dispatcher: QueueDispatcher

    def publish(self, emit: Emit) -> Event:
        raise NotImplementedError  # the Daemon's

    def _save_registry(self) -> None:
        raise NotImplementedError  # the Daemon's

    @property
    def held(self) -> bool:
        """Whether the node holds the queues (no queued turn starts)."""
        return self.files.hold.value.held

    def may_start_queued(self) -> bool:
        return not self.held and self.accepting

    async def turn_or_queue(self, req: TurnRequest) -> TurnOutcome:
        """``POST /turn``: with ``whenBusy: "queue"``, queue the turn when it cannot start
        now (a turn runs or starts, others wait, the queue is stopped, the node is held, the
        child is not running); else start it as a plain turn does."""
        if req.whenBusy != "queue":
            session, turn_id = await self.start_turn(req)
            return TurnOutcome(session, turn_id=turn_id)
        self._check_accepting()
        current = self.supervisor.current
        child_ready = current is not None and not current.closing \
            and self.supervisor.child.status == "running"
        if self.held or not child_ready or self.book.must_queue(req.sessionId):
            return await self._enqueue(req)
        try:
            session, turn_id = await self.start_turn(req)
        except TurnInProgress:
            # Another turn (direct or queued) got there between the look and the start.
            return await self._enqueue(req)
        return TurnOutcome(session, turn_id=turn_id)

    async def _enqueue(self, req: TurnRequest) -> TurnOutcome:
        entry, position, emits = self.book.enqueue(req.sessionId, req.input,
                                                   request_id=current_request_id())
        await self._record(emits)
        return TurnOutcome(self.book.get(req.sessionId), entry=entry, position=position)

    def queue_view(self, session_id: str) -> QueueView:
        entries, stopped = self.book.queue_of(session_id)
        hold = self.files.hold.value
        return QueueView(sessionId=session_id, entries=entries, stopped=stopped,
                         held=hold.held, holdReason=hold.reason)

    async def remove_queued(self, session_id: str, queue_id: str) -> tuple[QueueEntry, QueueView]:
        entry, emits = self.book.remove_queued(session_id, queue_id)
        await self._record(emits)
        return entry, self.queue_view(session_id)

    async def move_queued(self, session_id: str, queue_id: str, position: int) -> QueueView:
        await self._record(self.book.move_queued(session_id, queue_id, position))
        return self.queue_view(session_id)

    async def resume_queue(self, session_id: str) -> QueueView:
        await self._record(self.book.resume_queue(session_id))
        return self.queue_view(session_id)

    def hold(self) -> QueueHold:
        return self.files.hold.value

    async def set_hold(self, req: HoldRequest) -> QueueHold:
        """Hold or release the queues; idempotent (the same hold again changes nothing and
        emits nothing). Durable before the answer."""
        current = self.files.hold.value
        if (current.held, current.reason) != (req.held, req.reason):
            self.files.hold.set(QueueHold(held=req.held, reason=req.reason, updatedAt=now_iso()))
            what = "held" if req.held else "released"
            self.publish(Emit("queue.hold.changed",
                              f"turn queues {what}" + (f" ({req.reason})" if req.reason else ""),
                              detail={"held": req.held, "reason": req.reason}))
            self.dispatcher.wake()
            await self.files.hold.flush()
            await self._acknowledge()
        return self.files.hold.value

    def queue_status(self) -> QueueStatus:
        queue, hold = self.book.queue, self.files.hold.value
        return QueueStatus(held=hold.held, holdReason=hold.reason, entries=queue.total,
                           sessions=queue.session_count, stoppedSessions=queue.stopped_count)

    async def _record(self, emits: list[Emit]) -> None:
        for emit in emits:
            self.publish(emit)
        if emits:
            self._save_registry()
            await self._acknowledge()
