"""Records: the files codexd keeps and what it answers with (sessions, events, the child, the
status snapshot, the registry, approvals)."""

from __future__ import annotations

from typing import Any

import msgspec

from codexd_trio.base.contracts._queue import QueueSnapshot, QueueStatus
from codexd_trio.base.contracts._vocabulary import (
    ApprovalMode,
    ApprovalState,
    ChildState,
    Decision,
    Level,
    Purpose,
    SessionStatus,
    TimeoutDecision,
    TurnError,
    TurnStatus,
)


class Session(msgspec.Struct, frozen=True, kw_only=True):
    sessionId: str
    threadId: str
    purpose: Purpose = "duplex"
    status: SessionStatus = "active"
    cwd: str | None = None
    model: str | None = None
    approvalPolicy: str | None = None
    # As the app-server reports it (a kebab-case mode when it is one of the plain modes).
    sandbox: str | None = None
    approvals: ApprovalMode = "decline"
    createdAt: str
    updatedAt: str
    currentTurnId: str | None = None
    lastTurnId: str | None = None
    lastTurnStatus: TurnStatus | None = None
    lastTurnStartedAt: str | None = None
    lastTurnCompletedAt: str | None = None
    lastTurnError: TurnError | None = None
    lastTurnOutput: str | None = None
    turnCount: int = 0
    # False until a turn has run: Codex persists a thread lazily, so until then it cannot be
    # resumed after a restart and codexd re-creates it instead.
    threadPersisted: bool = False
    # The conversation (issue 22): the title (Codex's thread name, or by default the first
    # prompt shortened), and the thread this session's thread was forked from.
    title: str | None = None
    forkedFrom: str | None = None
    # Turns waiting in the session's queue (``whenBusy: "queue"``), the one starting included.
    queueLength: int = 0


class Event(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    at: str
    type: str
    level: Level = "info"
    sessionId: str | None = None
    threadId: str | None = None
    turnId: str | None = None
    message: str = ""
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    daemonId: str
    nodeId: str
    repoRoot: str
    createdAt: str
    version: str


class CodexVersionStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The running Codex against the supported range (outside it: a warning, not a refusal)."""

    binary: str | None = None
    version: str | None = None
    supported: bool = True
    oldest: str | None = None
    newest: str | None = None
    pinned: str | None = None
    error: str | None = None


class ChildStatus(msgspec.Struct, frozen=True, kw_only=True):
    # ``status``: the seed's name for the child's lifecycle (CONTRACT.md).
    status: ChildState = "stopped"
    # spawn: codexd's own child (pid set); external: a connection to an app-server it does not
    # own (endpoint set, no pid).
    strategy: str = "spawn"
    endpoint: str | None = None
    pid: int | None = None
    command: str | None = None
    args: list[str] = msgspec.field(default_factory=list)
    startedAt: str | None = None
    initializedAt: str | None = None
    exitedAt: str | None = None
    exitCode: int | None = None
    exitSignal: int | None = None
    restarts: int = 0
    lastError: str | None = None
    userAgent: str | None = None
    codexVersion: CodexVersionStatus | None = None


class DaemonState(msgspec.Struct, frozen=True, kw_only=True):
    started: bool
    startedAt: str | None
    stoppedAt: str | None = None
    pid: int
    child: ChildStatus
    updatedAt: str
    resolvedBaseUrl: str | None = None


class ServiceInfo(msgspec.Struct, frozen=True, kw_only=True):
    localApiBase: str | None = None
    resolvedBaseUrl: str | None = None
    eventStreamPath: str | None = None
    eventStreamUrl: str | None = None


class DaemonInfo(msgspec.Struct, frozen=True, kw_only=True):
    started: bool = False
    startedAt: str | None = None
    pid: int | None = None
    version: str | None = None
    accepting: bool = True
    child: ChildStatus = msgspec.field(default_factory=ChildStatus)


class SessionCounts(msgspec.Struct, frozen=True, kw_only=True):
    count: int = 0
    activeCount: int = 0


class ActiveTurn(msgspec.Struct, frozen=True, kw_only=True):
    sessionId: str
    threadId: str | None = None
    turnId: str | None = None
    startedAt: str | None = None


class ApprovalCounts(msgspec.Struct, frozen=True, kw_only=True):
    pendingCount: int = 0


class RecentEventsView(msgspec.Struct, frozen=True, kw_only=True):
    count: int = 0
    lastSeq: int = 0
    events: list[Event] = msgspec.field(default_factory=list)


class StatusSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    identity: Identity | None = None
    daemon: DaemonInfo = msgspec.field(default_factory=DaemonInfo)
    sessions: SessionCounts = msgspec.field(default_factory=SessionCounts)
    activeTurns: list[ActiveTurn] = msgspec.field(default_factory=list)
    approvals: ApprovalCounts = msgspec.field(default_factory=ApprovalCounts)
    recentEvents: RecentEventsView = msgspec.field(default_factory=RecentEventsView)
    # None from a codexd without turn queues (the conductor then knows nothing of a hold).
    queue: QueueStatus | None = None


class CodexdStatus(msgspec.Struct, frozen=True, kw_only=True):
    service: ServiceInfo = msgspec.field(default_factory=ServiceInfo)
    snapshot: StatusSnapshot = msgspec.field(default_factory=StatusSnapshot)


class SessionRegistry(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of every session and of the turn queues, current up to event ``lastSeq`` of
    ``events.jsonl``. ``sessions`` stays the last field: the registry is written one session at
    a time after the rest (``FrozenTable.registry_json``)."""

    version: int = 1
    lastSeq: int = 0
    queue: QueueSnapshot = msgspec.field(default_factory=lambda: QueueSnapshot())
    sessions: list[Session] = msgspec.field(default_factory=list)


class RecentEvents(msgspec.Struct, frozen=True, kw_only=True):
    events: list[Event] = msgspec.field(default_factory=list)


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    approvalId: str
    sessionId: str | None
    threadId: str | None
    turnId: str | None
    itemId: str | None
    kind: str
    method: str
    state: ApprovalState = "pending"
    decision: Decision | None = None
    decidedBy: str | None = None
    createdAt: str
    resolvedAt: str | None = None
    expiresAt: str | None = None
    # What codexd answers by itself at ``expiresAt`` (the session's approval settings).
    onTimeout: TimeoutDecision | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class ApprovalBook(msgspec.Struct, frozen=True, kw_only=True):
    """``state/codexd/approvals.json``: every pending approval and the latest settled ones.

    A snapshot current up to event ``lastSeq`` of ``events.jsonl`` (the approval events after it
    are replayed at start); ``None`` in a file written before the stamp existed.
    """

    lastSeq: int | None = None
    approvals: list[Approval] = msgspec.field(default_factory=list)
