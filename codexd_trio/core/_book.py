"""The first half of :class:`~codexd_trio.core.domain.SessionBook`: the registry of sessions,
its reads and its commands (sans-IO). :mod:`codexd_trio.core.domain` adds the fold of Codex's
notifications and the replay of the event log; import from there.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from codexd_trio.base.contracts import Level, Session, TurnError, TurnStatus, now_iso
from codexd_trio.base.errors import (
    NoActiveTurn,
    SessionClosed,
    SessionNotFound,
    TurnInProgress,
)
from codexd_trio.store.sessiontable import ActivityIndex, FrozenTable, SessionTable, activity_time

SETTLED_MEMORY = 256


@dataclass(frozen=True)
class Emit:
    """An event to publish (the hub assigns ``seq`` and ``at``)."""

    type: str
    message: str
    level: Level = "info"
    session_id: str | None = None
    thread_id: str | None = None
    turn_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class BookState:
    """The registry of sessions: its state, reads and commands (see :class:`SessionBook`)."""

    def __init__(self, sessions: Iterable[Session] = ()) -> None:
        # Most sessions packed, the recent ones as objects (see codexd_trio.store.sessiontable); the
        # indexes below hold only ids, and what the status snapshot counts is kept up to date
        # so it is O(1) in the sessions.
        self._sessions = SessionTable()
        self._by_thread: dict[str, str] = {}
        # The closed ones, not the active ones: most sessions are active, and a set costs
        # ~40 bytes an entry.
        self._closed: set[str] = set()
        self._running: set[str] = set()
        self._activity = ActivityIndex()
        times: array[float] = array("d")
        ids: list[str] = []
        self._sessions.load(self._indexed(sessions, times, ids))
        self._activity.load(times, ids)
        self._starting: set[str] = set()
        # Turns whose turn/completed arrived before their turn/start was accepted.
        self._settled: OrderedDict[str, tuple[TurnStatus, TurnError | None, str | None]] = (
            OrderedDict()
        )
        self._agent_text: dict[str, str] = {}
        # Sessions reserved for a turn Codex starts itself (a compaction): the next turn/started
        # of the session is accepted as that turn, with this origin.
        self._expecting: dict[str, str] = {}
        self.version = 0
        # The clock for updatedAt/lastTurn*At; replay sets it to each logged event's time.
        self.now: Callable[[], str] = now_iso

    def _indexed(
        self, sessions: Iterable[Session], times: array[float], ids: list[str]
    ) -> Iterator[Session]:
        for s in sessions:
            sid = s.sessionId
            times.append(activity_time(s.updatedAt))
            ids.append(sid)
            self._by_thread[s.threadId] = sid
            if s.status != "active":
                self._closed.add(sid)
            if s.currentTurnId is not None:
                self._running.add(sid)
            yield s

    # ---------------------------------------------------------------- reads

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(f"no session {session_id!r}", sessionId=session_id) from None

    def all(self) -> list[Session]:
        """Every session (O(sessions): unpacks them all; for tests and tools)."""
        return list(self._sessions.values())

    def freeze(self) -> FrozenTable:
        """A consistent copy for the registry writer thread (cheap: shares the packed bytes)."""
        return self._sessions.freeze()

    @property
    def count(self) -> int:
        return len(self._sessions)

    @property
    def active_count(self) -> int:
        return len(self._sessions) - len(self._closed)

    def page(
        self, *, start: int = 0, limit: int = 500, status: str | None = None
    ) -> tuple[list[Session], int | None]:
        """Sessions in creation order from position ``start``; the next start, or ``None``."""
        out: list[Session] = []
        position = start
        order = self._sessions.order
        while position < len(order) and len(out) < limit:
            sid = order[position]
            position += 1
            if self._matches(sid, status):
                out.append(self._sessions[sid])
        # A cursor only if something after this page matches (null on the last page).
        while position < len(order) and not self._matches(order[position], status):
            position += 1
        return out, position if position < len(order) else None

    def _matches(self, session_id: str, status: str | None) -> bool:
        # From the indexes: no session is unpacked to skip it.
        return status is None or (session_id in self._closed) == (status == "closed")

    def page_by_activity(
        self, *, before: tuple[float, str] | None = None, limit: int = 500,
        status: str | None = None,
    ) -> tuple[list[Session], tuple[float, str] | None]:
        """Sessions with the newest activity (``updatedAt``) first, below the key ``before``;
        the key to continue from, or ``None``. A session active again while a client pages
        moves to the top: it is not shown twice, the pages already read just miss its move."""
        out: list[Session] = []
        last: tuple[float, str] | None = None
        keys = self._activity.newest_first(before)
        for key in keys:
            if not self._matches(key[1], status):
                continue
            out.append(self._sessions[key[1]])
            last = key
            if len(out) >= limit:
                break
        # A cursor only if something below this page matches (null on the last page).
        more = any(self._matches(sid, status) for _, sid in keys)
        return out, last if more else None

    def session_for_thread(self, thread_id: str | None) -> Session | None:
        if thread_id is None:
            return None
        sid = self._by_thread.get(thread_id)
        return self._sessions.get(sid) if sid else None

    def active_turns(self) -> list[dict[str, Any]]:
        return [
            {
                "sessionId": s.sessionId,
                "threadId": s.threadId,
                "turnId": s.currentTurnId,
                "startedAt": s.lastTurnStartedAt,
            }
            for s in (self._sessions[sid] for sid in self._running)
        ]

    # ---------------------------------------------------------------- commands

    def _put(self, session: Session) -> Session:
        old = self._sessions.get(session.sessionId)
        if old is not None and old.threadId != session.threadId:
            self._by_thread.pop(old.threadId, None)
        self._sessions.put(session)
        if old is None or old.updatedAt != session.updatedAt:
            self._activity.move(
                session.sessionId, activity_time(old.updatedAt) if old is not None else None,
                activity_time(session.updatedAt),
            )
        self._by_thread[session.threadId] = session.sessionId
        sid = session.sessionId
        (self._closed.discard if session.status == "active" else self._closed.add)(sid)
        (self._running.add if session.currentTurnId is not None else self._running.discard)(sid)
        self.version += 1
        return session

    def _update(self, session: Session, **changes: Any) -> Session:
        return self._put(msgspec.structs.replace(session, updatedAt=self.now(), **changes))

    def add(self, session: Session) -> Emit:
        self._put(session)
        return Emit(
            "session.created",
            f"session {session.sessionId} created on thread {session.threadId}",
            session_id=session.sessionId,
            thread_id=session.threadId,
            detail={"session": msgspec.to_builtins(session)},
        )

    def rethread(self, session_id: str, thread_id: str, reason: str) -> Emit:
        """Record a new thread for a session whose old thread could not be resumed."""
        old = self.get(session_id)
        self._update(old, threadId=thread_id, threadPersisted=False)
        return Emit(
            "session.rethreaded",
            f"session {session_id} moved to a new thread ({reason})",
            level="warn",
            session_id=session_id,
            thread_id=thread_id,
            detail={"previousThreadId": old.threadId, "reason": reason},
        )

    def check_can_start(self, session_id: str) -> Session:
        """The session, if a turn may start on it now: 404, or 409 when it is closed or a turn
        is running or starting (checked before the child is needed, so a 409 is not hidden by
        a 503 while the child restarts)."""
        s = self.get(session_id)
        if s.status == "closed":
            raise SessionClosed(f"session {session_id} is closed", sessionId=session_id)
        if s.currentTurnId is not None or session_id in self._starting:
            raise TurnInProgress(
                f"session {session_id} already has a turn in progress",
                sessionId=session_id,
                currentTurnId=s.currentTurnId,
            )
        return s

    def check_can_steer(self, session_id: str) -> Session:
        """The session, if it has a running turn to steer: 404, or 409 ``no_active_turn``."""
        s = self.get(session_id)
        if s.currentTurnId is None:
            raise NoActiveTurn(f"session {session_id} has no turn to steer", sessionId=session_id)
        return s

    def begin_turn(self, session_id: str) -> Session:
        """Reserve the session for a new turn (409 if one is running or starting)."""
        s = self.check_can_start(session_id)
        self._starting.add(session_id)
        return s

    def close(self, session_id: str) -> Emit:
        s = self.get(session_id)
        if s.currentTurnId is not None or session_id in self._starting:
            raise TurnInProgress(
                f"session {session_id} has a turn in progress; interrupt it first",
                sessionId=session_id,
                currentTurnId=s.currentTurnId,
            )
        s = self._update(s, status="closed")
        return Emit(
            "session.closed",
            f"session {session_id} closed",
            session_id=session_id,
            thread_id=s.threadId,
        )

    def abort_turn(self, session_id: str) -> None:
        """The turn/start request failed: release the reservation."""
        self._starting.discard(session_id)
        self._expecting.pop(session_id, None)

    # ---------------------------------------------------------------- the conversation

    def expect_turn(self, session_id: str, origin: str) -> None:
        """After :meth:`begin_turn`: the session's next ``turn/started`` is its turn (a
        request such as ``thread/compact/start`` answers without a turn id)."""
        self._expecting[session_id] = origin

    def expecting(self, session_id: str) -> bool:
        return session_id in self._expecting

    def set_title(self, session_id: str, title: str, *, source: str = "client") -> Emit:
        """The session's title (``source``: ``client``, ``codex``, ``default``)."""
        s = self._update(self.get(session_id), title=title)
        return Emit(
            "session.titled",
            f"session {session_id} titled {title!r}",
            session_id=session_id,
            thread_id=s.threadId,
            detail={"title": title, "source": source},
        )

    def accept_turn(self, session_id: str, turn_id: str) -> tuple[Session, Emit]:
        self._starting.discard(session_id)
        s = self.get(session_id)
        now = self.now()
        changes: dict[str, Any] = {
            "currentTurnId": turn_id,
            "lastTurnId": turn_id,
            "lastTurnStatus": "inProgress",
            "lastTurnStartedAt": now,
            "lastTurnCompletedAt": None,
            "lastTurnError": None,
            "lastTurnOutput": None,
            "turnCount": s.turnCount + 1,
        }
        settled = self._settled.pop(turn_id, None)
        detail: dict[str, Any] = {}
        if settled is not None:
            status, error, output = settled
            changes.update(
                currentTurnId=None,
                lastTurnStatus=status,
                lastTurnCompletedAt=now,
                lastTurnError=error,
                lastTurnOutput=output,
                threadPersisted=True,
            )
            # turn/completed overtook the turn/start answer: its outcome is folded in here, so
            # the journal must carry it — replay has no other way to learn it.
            detail["settled"] = {
                "status": status,
                "error": msgspec.to_builtins(error),
                "output": output,
            }
        s = self._update(s, **changes)
        return s, Emit(
            "turn.accepted",
            f"turn {turn_id} accepted on session {session_id}",
            session_id=session_id,
            thread_id=s.threadId,
            turn_id=turn_id,
            detail=detail,
        )

    def fail_current(self, session_id: str, code: str, message: str) -> list[Emit]:
        """Settle the session's running turn as failed without a turn/completed (child gone)."""
        s = self.get(session_id)
        turn_id = s.currentTurnId
        self._starting.discard(session_id)
        if turn_id is None:
            return []
        self._agent_text.pop(turn_id, None)
        self._update(
            s,
            currentTurnId=None,
            lastTurnStatus="failed",
            lastTurnCompletedAt=self.now(),
            lastTurnError=TurnError(code=code, message=message),
        )
        return [
            Emit(
                "app-server.turn.completed.missing",
                f"turn {turn_id} ended without turn/completed: {message}",
                level="error",
                session_id=session_id,
                thread_id=s.threadId,
                turn_id=turn_id,
                detail={"code": code, "message": message},
            ),
            Emit(
                "turn.failed",
                f"turn {turn_id} failed ({code})",
                level="error",
                session_id=session_id,
                thread_id=s.threadId,
                turn_id=turn_id,
                detail={"error": {"code": code, "message": message}},
            ),
        ]

    def fail_all_current(self, code: str, message: str) -> list[Emit]:
        emits: list[Emit] = []
        # Only the sessions with a turn (O(turns), not O(sessions)); sorted for a stable order.
        for sid in sorted(self._running | self._starting):
            emits.extend(self.fail_current(sid, code, message))
        return emits
