"""The turn queues of the sessions: plain state, no I/O, no sessions (issue 23).

Each session has an ordered list of :class:`~codexd_trio.base.contracts.QueueEntry` (index 0
starts next) and maybe a :class:`~codexd_trio.base.contracts.QueueStop`. The queue knows nothing
of turns or events: :class:`~codexd_trio.core.domain.SessionBook` validates the commands, keeps
each session's ``queueLength`` and returns the events (``turn.queued``, ``turn.dequeued``, …)
that make the queue durable, and that its replay folds back in here.

Two markers of a start in progress: ``picked`` (in memory only: the dispatcher chose the entry
and is loading its thread; nothing was sent to Codex yet, so a crash forgets it and the entry
simply waits again) and the entry's ``state == "starting"`` (journaled just before
``turn/start`` is sent: after a crash codexd cannot know whether Codex got it, so the queue
stops there and a person decides).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import msgspec

from codexd_trio.base.contracts import (
    QueueEntry,
    QueueSnapshot,
    QueueStop,
    SessionQueue,
    StartedEntry,
)

__all__ = ["STARTED_MEMORY", "TurnQueue"]

# How many started entries are remembered (so removing one answers 409 "already started").
STARTED_MEMORY = 1024


class TurnQueue:
    """Every session's queue; see the module docstring."""

    def __init__(self, snapshot: QueueSnapshot | None = None) -> None:
        self._entries: dict[str, list[QueueEntry]] = {}
        self._stops: dict[str, QueueStop] = {}
        # queue id -> session id, for every waiting or starting entry.
        self._where: dict[str, str] = {}
        self._started: OrderedDict[str, StartedEntry] = OrderedDict()
        self._picked: set[str] = set()
        if snapshot is not None:
            for queue in snapshot.sessions:
                for entry in queue.entries:
                    self.add(entry)
                if queue.stopped is not None:
                    self._stops[queue.sessionId] = queue.stopped
            for started in snapshot.started:
                self.remember_started(started)

    # ---------------------------------------------------------------- reads

    def entries(self, session_id: str) -> list[QueueEntry]:
        return list(self._entries.get(session_id, ()))

    def length(self, session_id: str) -> int:
        return len(self._entries.get(session_id, ()))

    def stop_of(self, session_id: str) -> QueueStop | None:
        return self._stops.get(session_id)

    def locate(self, queue_id: str) -> tuple[str, int, QueueEntry] | None:
        """``(session id, position, entry)`` of a waiting or starting entry."""
        sid = self._where.get(queue_id)
        if sid is None:
            return None
        for position, entry in enumerate(self._entries[sid]):
            if entry.queueId == queue_id:
                return sid, position, entry
        return None  # pragma: no cover - _where and _entries always agree

    def started(self, queue_id: str) -> StartedEntry | None:
        return self._started.get(queue_id)

    def busy(self, queue_id: str) -> bool:
        """Whether the entry is being started (picked, or its turn/start marked)."""
        found = self.locate(queue_id)
        return queue_id in self._picked or (found is not None and found[2].state == "starting")

    def heads(self) -> Iterator[QueueEntry]:
        """The entry that would start next in every queue that is not stopped and whose head
        is not already being started (sessions in a stable order)."""
        for sid in sorted(self._entries):
            if sid in self._stops:
                continue
            head = self._entries[sid][0]
            if head.state == "waiting" and head.queueId not in self._picked:
                yield head

    def starting(self) -> list[QueueEntry]:
        """Entries whose turn/start was marked (journaled) but not settled."""
        return [e for queue in self._entries.values() for e in queue if e.state == "starting"]

    @property
    def total(self) -> int:
        return len(self._where)

    @property
    def session_count(self) -> int:
        return len(self._entries)

    @property
    def stopped_count(self) -> int:
        return len(self._stops)

    def snapshot(self) -> QueueSnapshot:
        """A copy for the registry writer (the entries are frozen structs, shared)."""
        sids = sorted(set(self._entries) | set(self._stops))
        return QueueSnapshot(
            sessions=[
                SessionQueue(sessionId=sid, entries=self.entries(sid),
                             stopped=self._stops.get(sid))
                for sid in sids
            ],
            started=list(self._started.values()),
        )

    # ---------------------------------------------------------------- changes

    def add(self, entry: QueueEntry, position: int | None = None) -> int:
        """Insert ``entry`` (at the end, or at ``position``); returns where it went."""
        queue = self._entries.setdefault(entry.sessionId, [])
        index = len(queue) if position is None else max(0, min(position, len(queue)))
        queue.insert(index, entry)
        self._where[entry.queueId] = entry.sessionId
        return index

    def replace(self, entry: QueueEntry) -> None:
        """Put a changed record in the place of the entry with the same id."""
        found = self.locate(entry.queueId)
        if found is not None:
            sid, position, _ = found
            self._entries[sid][position] = entry

    def remove(self, queue_id: str) -> QueueEntry | None:
        found = self.locate(queue_id)
        if found is None:
            return None
        sid, position, entry = found
        queue = self._entries[sid]
        del queue[position]
        if not queue:
            del self._entries[sid]
        del self._where[queue_id]
        self._picked.discard(queue_id)
        return entry

    def move(self, queue_id: str, position: int) -> tuple[int, int] | None:
        """Move a waiting entry; ``(from, to)`` with ``to`` clamped to the queue (and behind
        an entry being started, which keeps its place at the head)."""
        found = self.locate(queue_id)
        if found is None:
            return None
        sid, old, entry = found
        queue = self._entries[sid]
        del queue[old]
        first = 1 if queue and self.busy(queue[0].queueId) else 0
        new = max(first, min(position, len(queue)))
        queue.insert(new, entry)
        return old, new

    def remember_started(self, started: StartedEntry) -> None:
        self._started[started.queueId] = started
        while len(self._started) > STARTED_MEMORY:
            self._started.popitem(last=False)

    def stop(self, stop: QueueStop, session_id: str) -> None:
        self._stops[session_id] = stop

    def clear_stop(self, session_id: str) -> QueueStop | None:
        return self._stops.pop(session_id, None)

    def pick(self, queue_id: str) -> None:
        self._picked.add(queue_id)

    def unpick(self, queue_id: str) -> None:
        self._picked.discard(queue_id)

    def drop_session(self, session_id: str) -> list[QueueEntry]:
        """Every entry of a session, removed (closing it); its stop goes too."""
        entries = self._entries.pop(session_id, [])
        for entry in entries:
            del self._where[entry.queueId]
            self._picked.discard(entry.queueId)
        self._stops.pop(session_id, None)
        return entries


def with_changes(entry: QueueEntry, **changes: object) -> QueueEntry:
    return msgspec.structs.replace(entry, **changes)
