"""Conversation records: the fold of the event log into one record per settled turn (sans-IO).

:class:`ConversationFold` takes durable events in seq order and keeps each session's running
turn (its input, its completed items, its approvals, its token usage); the event that settles a
turn — ``app-server.turn.completed``, ``app-server.turn.completed.missing``/``turn.failed``, a
``child.exited`` or ``daemon.started`` that finds it still open — yields a :class:`Settled`
record in the same step. So a record is a function of the log: lost, it is folded again from
the log (start-up folds from the store's checkpoint); and the log's retention never drops it.

Turns are recognised by their id whoever started them: a client's ``turn/start``
(``turn.accepted``), a compaction or a review (``turn.accepted`` with ``detail.origin``), or
Codex on its own (``turn/started`` only). Observed in 0.171: a review's ``turn/started``
carries a fresh ``turn.id`` and the real one as ``rootTurnId`` (its items and its
``turn/completed`` use the root), so ``turn/started`` is keyed by ``rootTurnId`` when set.

:class:`~codexd_trio.core.transcripts.Transcripts` owns the fold, the store and the reads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from codexd_trio.base.contracts import Event, TurnError, TurnStatus
from codexd_trio.base.transcript import FileChange, TranscriptItem, TranscriptTurn
from codexd_trio.core.items import approval_item, changes_of, shape_item
from codexd_trio.core.turns import turn_error, turn_outcome

__all__ = ["ConversationFold", "RolledBack", "Settled"]

# Turns settled lately, remembered so a late event (an approval expiring after its turn, a
# turn.accepted overtaken by its completion) does not open the turn again.
_SETTLED_MEMORY = 1024


@dataclass(frozen=True)
class Settled:
    """A turn settled: its record (items whole; the store keeps them capped for pages)."""

    session_id: str
    turn: TranscriptTurn
    seq: int


@dataclass(frozen=True)
class RolledBack:
    session_id: str
    turn_ids: list[str]


@dataclass
class _Open:
    session_id: str
    turn_id: str
    first_seq: int
    started_at: str
    origin: str = "codex"
    accepted: bool = False
    input: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, TranscriptItem] = field(default_factory=dict)
    started_changes: dict[str, list[FileChange]] = field(default_factory=dict)
    token_usage: dict[str, Any] | None = None

    def turn(self, status: TurnStatus, *, completed_at: str | None = None,
             error: TurnError | None = None) -> TranscriptTurn:
        items = list(self.items.values())
        if status != "inProgress":
            # An approval still pending when its turn ended can no longer be decided.
            items = [msgspec.structs.replace(i, status="expired")
                     if i.type == "approval" and i.status == "pending" else i for i in items]
        first_user = next((i for i in items if i.type == "userMessage"), None)
        given = self.input or (list(first_user.content or []) if first_user else [])
        return TranscriptTurn(
            turnId=self.turn_id, status=status, startedAt=self.started_at,
            completedAt=completed_at, input=given, error=error, tokenUsage=self.token_usage,
            items=items, origin=self.origin,
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class ConversationFold:
    """The running turns of every session, and the records their ends produce.

    Args:
        recorded: ``recorded(session_id, turn_id)``: the store already holds this turn (a
            refold after a restart never opens it again).
    """

    def __init__(self, recorded: Callable[[str, str], bool] = lambda s, t: False) -> None:
        self._recorded = recorded
        self._open: dict[str, _Open] = {}
        self._settled: OrderedDict[str, None] = OrderedDict()
        #: The seq of the last event folded.
        self.last_seq = 0

    # ---------------------------------------------------------------- reads

    def running(self, session_id: str) -> TranscriptTurn | None:
        """The session's running turn as it stands (completed items so far), if any."""
        for turn in reversed(self._open.values()):
            if turn.session_id == session_id and (turn.accepted or turn.items):
                return turn.turn("inProgress")
        return None

    def resume_seq(self) -> int:
        """Every turn whose events are all at or below this seq is settled (and recorded)."""
        if not self._open:
            return self.last_seq
        return min(t.first_seq for t in self._open.values()) - 1

    # ---------------------------------------------------------------- the fold

    def fold(self, event: Event) -> list[Settled | RolledBack]:
        """Fold one durable event; returns the records it settles (usually none)."""
        self.last_seq = event.seq
        kind = event.type
        sid = event.sessionId
        if kind == "child.exited":
            code = "daemon_stopped" if event.level == "info" else "child_exited"
            return self._settle_all(event, code, event.message)
        if kind == "daemon.started":
            return self._settle_all(event, "daemon_restarted",
                                    "codexd restarted while the turn was running")
        if sid is None:
            return []
        detail = event.detail
        if kind == "turn.imported":
            turn = detail.get("turn")
            if not isinstance(turn, dict) or self._recorded(sid, str(turn.get("turnId"))):
                return []
            record = msgspec.convert(turn, TranscriptTurn)
            return [Settled(sid, record, event.seq)]
        if kind == "session.rolledBack":
            removed = [str(t) for t in detail.get("removedTurnIds") or ()]
            return [RolledBack(sid, removed)] if removed else []
        handler = _HANDLERS.get(kind)
        if handler is None:
            return []
        return handler(self, event, sid, detail)

    def _turn(self, event: Event, sid: str, turn_id: str | None, *, open_it: bool
              ) -> _Open | None:
        if not turn_id:
            return None
        turn = self._open.get(turn_id)
        if turn is not None or not open_it:
            return turn
        if turn_id in self._settled or self._recorded(sid, turn_id):
            return None
        turn = self._open[turn_id] = _Open(sid, turn_id, event.seq, event.at)
        return turn

    def _on_accepted(self, event: Event, sid: str, detail: dict[str, Any]) -> list[Any]:
        if isinstance(detail.get("settled"), dict):
            return []  # it completed before Codex answered turn/start: settled already
        turn = self._turn(event, sid, event.turnId, open_it=True)
        if turn is not None:
            turn.accepted = True
            turn.origin = str(detail.get("origin") or "turn")
            given = detail.get("input")
            if isinstance(given, list):
                turn.input = [i for i in given if isinstance(i, dict)]
        return []

    def _on_started(self, event: Event, sid: str, detail: dict[str, Any]) -> list[Any]:
        turn = _dict(detail.get("turn"))
        key = turn.get("rootTurnId") or turn.get("id")
        self._turn(event, sid, key if isinstance(key, str) else None, open_it=True)
        return []

    def _on_item(self, event: Event, sid: str, detail: dict[str, Any]) -> list[Any]:
        item = detail.get("item")
        turn = self._turn(event, sid, event.turnId, open_it=True)
        if turn is None or not isinstance(item, dict):
            return []
        item_id = item.get("id")
        if not isinstance(item_id, str):
            return []
        if event.type == "app-server.item.started":
            if item.get("type") == "fileChange":
                turn.started_changes[item_id] = changes_of(item.get("changes"))
            return []
        turn.items[item_id] = shape_item(item)
        return []

    def _on_usage(self, event: Event, sid: str, detail: dict[str, Any]) -> list[Any]:
        turn = self._turn(event, sid, event.turnId, open_it=False)
        usage = detail.get("tokenUsage")
        if turn is not None and isinstance(usage, dict):
            turn.token_usage = usage
        return []

    def _on_approval(self, event: Event, sid: str, detail: dict[str, Any]) -> list[Any]:
        approval = _dict(detail.get("approval"))
        turn = self._turn(event, sid, event.turnId, open_it=False)
        approval_id = approval.get("approvalId")
        if turn is None or not isinstance(approval_id, str):
            return []
        item_id = approval.get("itemId")
        changes = turn.started_changes.get(item_id) if isinstance(item_id, str) else None
        turn.items[approval_id] = approval_item(approval, changes)
        return []

    def _on_completed(self, event: Event, sid: str, detail: dict[str, Any]) -> list[Any]:
        raw = _dict(detail.get("turn"))
        turn = self._turn(event, sid, event.turnId, open_it=True)
        if turn is None:
            return []
        status, _ = turn_outcome(raw)
        error = turn_error(raw.get("error")) if status == "failed" or raw.get("error") else None
        return self._settle(turn, event, status, error)

    def _on_failed(self, event: Event, sid: str, detail: dict[str, Any]) -> list[Any]:
        turn = self._turn(event, sid, event.turnId, open_it=False)
        if turn is None:
            return []
        raw = detail.get("error") if event.type == "turn.failed" else detail
        error = msgspec.convert(raw, TurnError) if isinstance(raw, dict) and "code" in raw \
            and "message" in raw else TurnError(code="turn_failed", message=event.message)
        return self._settle(turn, event, "failed", error)

    def _settle(self, turn: _Open, event: Event, status: TurnStatus,
                error: TurnError | None) -> list[Settled | RolledBack]:
        self._open.pop(turn.turn_id, None)
        self._settled[turn.turn_id] = None
        while len(self._settled) > _SETTLED_MEMORY:
            self._settled.popitem(last=False)
        # Turns of this session that never got an item nor an accept were not turns (a
        # turn/started under an id Codex did not use afterwards).
        for other in [t for t in self._open.values()
                      if t.session_id == turn.session_id and not t.accepted and not t.items]:
            self._open.pop(other.turn_id, None)
        record = turn.turn(status, completed_at=event.at, error=error)
        return [Settled(turn.session_id, record, event.seq)]

    def _settle_all(self, event: Event, code: str, message: str) -> list[Settled | RolledBack]:
        out: list[Settled | RolledBack] = []
        for turn in list(self._open.values()):
            if turn.turn_id in self._open:
                out += self._settle(turn, event, "failed", TurnError(code=code, message=message))
        return out


_Handler = Callable[[ConversationFold, Event, str, dict[str, Any]], list[Any]]
_HANDLERS: dict[str, _Handler] = {
    "turn.accepted": ConversationFold._on_accepted,
    "app-server.turn.started": ConversationFold._on_started,
    "app-server.item.started": ConversationFold._on_item,
    "app-server.item.completed": ConversationFold._on_item,
    "app-server.thread.tokenUsage.updated": ConversationFold._on_usage,
    "approval.requested": ConversationFold._on_approval,
    "approval.resolved": ConversationFold._on_approval,
    "app-server.turn.completed": ConversationFold._on_completed,
    "app-server.turn.completed.missing": ConversationFold._on_failed,
    "turn.failed": ConversationFold._on_failed,
}
