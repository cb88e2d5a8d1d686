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

from collections.abc import Callable, Iterable
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
from codexd_trio.core._book import SETTLED_MEMORY, BookState, Emit
from codexd_trio.core.turns import (
    event_type_for,
    final_agent_text,
    settled_outcome,
    turn_error,
    turn_outcome,
)

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


def _fixed_clock(at: str) -> Callable[[], str]:
    return lambda: at


class SessionBook(BookState):
    """The registry of sessions and the fold of turn notifications into them."""

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
        elif method == "turn/started" and session is not None and isinstance(turn_id, str):
            origin = self._expecting.pop(session.sessionId, None)
            if origin is not None:
                # A turn Codex started for a request that named none (a compaction).
                _, accepted = self.accept_turn(session.sessionId, turn_id)
                accepted.detail["origin"] = origin
                follow = [accepted]
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
            elif kind == "session.titled" and isinstance(event.detail.get("title"), str):
                self.set_title(sid, event.detail["title"])
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
            while len(self._settled) > SETTLED_MEMORY:
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
