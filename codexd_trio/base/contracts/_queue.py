"""The turn queue (issue 23): records, the registry's snapshot of them, requests and views."""

from __future__ import annotations

import msgspec

from codexd_trio.base.contracts._vocabulary import QueueEntryState, TurnError, TurnInput


class QueueEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One turn waiting in a session's queue (``lastError``: why its last start failed)."""

    queueId: str
    sessionId: str
    input: TurnInput
    queuedAt: str
    state: QueueEntryState = "waiting"
    attempts: int = 0
    lastAttemptAt: str | None = None
    lastError: TurnError | None = None
    # The request that queued it: the turn's events carry it too, as for a direct turn.
    requestId: str | None = None


class QueueStop(msgspec.Struct, frozen=True, kw_only=True):
    """Why a session's queue stopped: nothing starts until a person resumes it or removes the
    entry it names."""

    queueId: str | None = None
    code: str
    message: str
    stoppedAt: str


class SessionQueue(msgspec.Struct, frozen=True, kw_only=True):
    sessionId: str
    entries: list[QueueEntry] = msgspec.field(default_factory=list)
    stopped: QueueStop | None = None


class StartedEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A queue entry that became a turn (remembered so a late DELETE gets 409, not 404)."""

    queueId: str
    sessionId: str
    turnId: str
    startedAt: str


class QueueSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The queues in the registry snapshot (the journal's ``turn.queue*`` events are the truth)."""

    sessions: list[SessionQueue] = msgspec.field(default_factory=list)
    started: list[StartedEntry] = msgspec.field(default_factory=list)


class QueueHold(msgspec.Struct, frozen=True, kw_only=True):
    """``state/codexd/hold.json``: while held, no queued turn starts (the conductor holds the
    queue while the node is paused or draining)."""

    held: bool = False
    reason: str | None = None
    updatedAt: str | None = None


class QueueStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The queues in ``GET /v1/codexd/status``."""

    held: bool = False
    holdReason: str | None = None
    entries: int = 0
    sessions: int = 0
    stoppedSessions: int = 0


class HoldRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    held: bool
    reason: str | None = None


class MoveRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Move a queued turn to ``position`` (0 = the next to start; past the end = the end)."""

    position: int

    def __post_init__(self) -> None:
        # Not msgspec.Meta(ge=0): see _check_turn_input.
        if self.position < 0:
            raise ValueError("Expected a position of 0 or more - at `$.position`")


class QueueView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/codexd/sessions/{id}/queue``: the entries in order (0 starts next)."""

    sessionId: str
    entries: list[QueueEntry]
    stopped: QueueStop | None = None
    held: bool = False
    holdReason: str | None = None
