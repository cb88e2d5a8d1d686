"""Sessions and turns: a synchronous state machine, no I/O.

API commands (create a session, begin/accept a turn) and app-server notifications go in; updated
:class:`~codexd_trio.base.contracts.Session` records and :class:`Emit` descriptions of events come
out.
The service publishes the events (the hub gives them a ``seq``) and persists the registry.

Ordering subtlety: the JSON-RPC reader folds notifications synchronously, while the task that
sent ``turn/start`` resumes only later. A fast turn can therefore *complete* before its start is
accepted here; :meth:`SessionBook.accept_turn` checks the turns already settled so such a turn
never leaves the session looking busy.

Notifications are folded tolerantly: only the few members the fold needs are read, each checked
for its type, and nothing Codex sends reaches a closed vocabulary of a record unmapped (a turn
status this codexd does not know is recorded via :func:`turn_outcome`; the event keeps Codex's
own params verbatim).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from codexd_trio.base.contracts import Event, Level, Session, TurnError, TurnStatus, now_iso
from codexd_trio.base.errors import (
    DomainError,
    NoActiveTurn,
    SessionClosed,
    SessionNotFound,
    TurnInProgress,
    TurnMismatch,
)
from codexd_trio.core.turns import (
    event_type_for,
    final_agent_text,
    settled_outcome,
    turn_error,
    turn_outcome,
)
from codexd_trio.store.sessiontable import ActivityIndex, FrozenTable, SessionTable, activity_time

__all__ = [
    "DomainError",
    "Emit",
    "NoActiveTurn",
    "SessionBook",
    "SessionClosed",
    "SessionNotFound",
    "TurnInProgress",
    "TurnMismatch",
    "event_type_for",
    "turn_outcome",
]

_SETTLED_MEMORY = 256


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


def _fixed_clock(at: str) -> Callable[[], str]:
    return lambda: at


class SessionBook:
    """The registry of sessions and the fold of turn notifications into them."""

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

    # ---------------------------------------------------------------- notifications

    def on_notification(self, method: str, params: dict[str, Any]) -> list[Emit]:
        """Fold one app-server notification; returns the events to publish (its own first)."""
        thread_id = params.get("threadId")
        turn = params.get("turn") if isinstance(params.get("turn"), dict) else None
        if thread_id is None and isinstance(params.get("thread"), dict):
            thread_id = params["thread"].get("id")
        turn_id = params.get("turnId") or (turn or {}).get("id")
        session = self.session_for_thread(thread_id if isinstance(thread_id, str) else None)
        level: Level = "info"
        message = f"app-server {method}"
        follow: list[Emit] = []

        if method == "item/completed":
            item = params.get("item")
            if (
                isinstance(item, dict)
                and item.get("type") == "agentMessage"
                and isinstance(turn_id, str)
            ):
                text = item.get("text")
                self._agent_text[turn_id] = text if isinstance(text, str) else ""
        elif method == "turn/completed" and turn is not None and isinstance(turn_id, str):
            status, sent = turn_outcome(turn)
            error = turn_error(turn.get("error")) if status == "failed" else None
            output = final_agent_text(turn.get("items"))
            fallback = self._agent_text.pop(turn_id, None)
            output = output if output is not None else fallback
            message = f"turn {turn_id} {status}"
            if sent != status:
                message += f" (Codex said {sent!r})"
            if status == "failed":
                level = "error"
                message += f": {error.message if error else ''}"
            if session is not None:
                follow = self._complete(session, turn_id, status, error, output)
        elif method == "error":
            will_retry = bool(params.get("willRetry"))
            level = "warn" if will_retry else "error"
            err = params.get("error")
            text = err.get("message") if isinstance(err, dict) else None
            message = f"app-server error{' (retrying)' if will_retry else ''}: {text or 'unknown'}"
        elif method in ("warning", "configWarning", "deprecationNotice"):
            level = "warn"
            text = params.get("message") or params.get("summary")
            message = f"app-server {method}: {text}" if text else message
        elif method == "item/agentMessage/delta":
            message = "agent message delta"

        own = Emit(
            event_type_for(method),
            message,
            level=level,
            session_id=session.sessionId if session else None,
            thread_id=thread_id if isinstance(thread_id, str) else None,
            turn_id=turn_id if isinstance(turn_id, str) else None,
            detail=params,
        )
        return [own, *follow]

    # ---------------------------------------------------------------- replay

    def replay(self, events: Iterable[Event]) -> int:
        """Fold logged events over a registry snapshot; returns how many changed it.

        The registry file is a snapshot written lazily; the durable event log is the journal.
        Every change to a session is published as an event in the same synchronous step, so
        re-applying the events after the snapshot's ``lastSeq`` rebuilds exactly what was
        acknowledged — a 202 turn whose registry write had not happened yet included.
        """
        applied = 0
        try:
            for event in events:
                self.now = _fixed_clock(event.at)
                before = self.version
                self._replay_one(event)
                applied += self.version != before
        finally:
            self.now = now_iso
        return applied

    def _replay_one(self, event: Event) -> None:
        sid = event.sessionId
        kind = event.type
        try:
            if kind == "session.created":
                if sid not in self._sessions:
                    self.add(msgspec.convert(event.detail["session"], Session))
            elif sid is None or sid not in self._sessions:
                return
            elif kind == "session.rethreaded" and event.threadId:
                self.rethread(sid, event.threadId, str(event.detail.get("reason", "")))
            elif kind == "session.closed":
                self.close(sid)
            elif kind == "turn.accepted" and event.turnId:
                if self._sessions[sid].lastTurnId != event.turnId:
                    settled = event.detail.get("settled")
                    if isinstance(settled, dict):
                        self._settled[event.turnId] = settled_outcome(settled)
                    self._starting.add(sid)
                    self.accept_turn(sid, event.turnId)
            elif kind == "app-server.turn.completed.missing":
                code = str(event.detail.get("code", "child_exited"))
                self.fail_current(sid, code, str(event.detail.get("message", event.message)))
            elif kind in ("app-server.item.completed", "app-server.turn.completed"):
                method = kind.removeprefix("app-server.").replace(".", "/")
                self.on_notification(method, event.detail)
        except DomainError:
            # A logged change that no longer applies (e.g. closing a busy session): the
            # snapshot already reflects something later; keep going.
            return

    def _complete(
        self,
        session: Session,
        turn_id: str,
        status: TurnStatus,
        error: TurnError | None,
        output: str | None,
    ) -> list[Emit]:
        if session.currentTurnId == turn_id:
            self._update(
                session,
                currentTurnId=None,
                lastTurnStatus=status,
                lastTurnCompletedAt=self.now(),
                lastTurnError=error,
                lastTurnOutput=output,
                threadPersisted=True,
            )
        elif session.sessionId in self._starting:
            # turn/completed overtook our own turn/start response: remember it for accept_turn.
            self._settled[turn_id] = (status, error, output)
            while len(self._settled) > _SETTLED_MEMORY:
                self._settled.popitem(last=False)
            return []
        else:
            return []
        if status == "failed":
            return [
                Emit(
                    "turn.failed",
                    f"turn {turn_id} failed: {error.message if error else 'unknown error'}",
                    level="error",
                    session_id=session.sessionId,
                    thread_id=session.threadId,
                    turn_id=turn_id,
                    detail={"error": msgspec.to_builtins(error)},
                )
            ]
        return []
