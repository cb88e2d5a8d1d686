"""Every wire and file shape of codexd, written down once.

codexd, the conductor, the CLI and the tests all import these ``msgspec.Struct`` types. Inputs
forbid unknown fields so a typo in a client is a 400, not a silently ignored key; records are
frozen and changed with :func:`msgspec.structs.replace`. Field names are camelCase because they
mirror the app-server (see ``../shared/CONTRACT.md``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

# The longest line codexd reads from the app-server child, and so the largest event payload:
# the child's line limit and the client's websocket frame limit both derive from it.
DEFAULT_MAX_LINE = 64 * 1024 * 1024

# --------------------------------------------------------------------------------------------
# Small vocabularies

Level = Literal["info", "warn", "error"]
Purpose = Literal["duplex", "smoke", "worker"]
SessionStatus = Literal["active", "closed"]
TurnStatus = Literal["inProgress", "completed", "failed", "interrupted"]
ApprovalPolicy = Literal["untrusted", "on-request", "never"]
SandboxMode = Literal["read-only", "workspace-write", "danger-full-access"]
# How codexd answers the child's approval requests for a session: ``decline`` answers at once,
# ``clients`` waits for a client's decision (up to a timeout, then declines).
ApprovalMode = Literal["decline", "clients"]
Decision = Literal["accept", "acceptForSession", "decline", "cancel"]
ApprovalState = Literal["pending", "resolved", "expired"]
ChildState = Literal["stopped", "starting", "running", "restarting", "failed"]


def now_iso() -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-24T03:08:22.269Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Records (files and responses)


class TurnError(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


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


# --------------------------------------------------------------------------------------------
# GET /v1/codexd/status: what codexd says about itself (the conductor decodes it, never walks
# dicts). Every field has a default so an older or newer codexd still decodes.


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


class CodexdStatus(msgspec.Struct, frozen=True, kw_only=True):
    service: ServiceInfo = msgspec.field(default_factory=ServiceInfo)
    snapshot: StatusSnapshot = msgspec.field(default_factory=StatusSnapshot)


class SessionRegistry(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of every session, current up to event ``lastSeq`` of ``events.jsonl``."""

    version: int = 1
    lastSeq: int = 0
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
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class ApprovalBook(msgspec.Struct, frozen=True, kw_only=True):
    """``state/codexd/approvals.json``: every pending approval and the latest settled ones.

    A snapshot current up to event ``lastSeq`` of ``events.jsonl`` (the approval events after it
    are replayed at start); ``None`` in a file written before the stamp existed.
    """

    lastSeq: int | None = None
    approvals: list[Approval] = msgspec.field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Request bodies (clients -> codexd). Unknown fields are a 400.


class CreateSessionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cwd: str | None = None
    model: str | None = None
    purpose: Purpose = "duplex"
    approvalPolicy: ApprovalPolicy | None = None
    sandbox: SandboxMode | None = None
    approvals: ApprovalMode | None = None


# A turn's input: plain text, or a list of app-server ``UserInput`` items passed through.
TurnInput = str | list[dict[str, Any]]


def _check_turn_input(value: TurnInput) -> None:
    """A turn needs something to say: text with a non-space character, or at least one input
    item (an empty input used to start a turn with nothing in it).

    Checked in ``__post_init__`` rather than with ``Annotated[..., msgspec.Meta(...)]``
    constraints: msgspec 0.22 can crash the interpreter at exit (SIGSEGV while collecting the
    constraint's type nodes, msgspec issue #717), which killed pytest runs and daemons with
    status 139. msgspec reports a ``__post_init__`` error at the struct's own path, so the
    message names the field itself (these requests are only ever decoded as a whole body).
    """
    if not (value.strip() if isinstance(value, str) else value):
        raise ValueError(
            "Expected text with a non-space character or at least one input item - at `$.input`"
        )


class TurnRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Start a turn; ``input`` is text with a non-space character or a non-empty list of input
    items."""

    sessionId: str
    input: TurnInput

    def __post_init__(self) -> None:
        _check_turn_input(self.input)


class SteerRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Steer the running turn; ``input`` is text with a non-space character or a non-empty list
    of input items."""

    sessionId: str
    input: TurnInput
    expectedTurnId: str | None = None

    def __post_init__(self) -> None:
        _check_turn_input(self.input)


class InterruptRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    sessionId: str
    turnId: str | None = None


class DecisionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    decision: Decision
    decidedBy: str | None = None


# --------------------------------------------------------------------------------------------
# Envelopes and stream frames


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class ErrorEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool = False
    error: ErrorBody


class HelloData(msgspec.Struct, frozen=True, kw_only=True):
    lastSeq: int
    replayFrom: int


class OverflowData(msgspec.Struct, frozen=True, kw_only=True):
    lastDeliveredSeq: int


class HelloFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="hello"):
    data: HelloData


class OverflowFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="overflow"):
    data: OverflowData


def input_items(value: TurnInput) -> list[dict[str, Any]]:
    """The app-server ``UserInput`` list for a turn input (a string becomes one text item)."""
    if isinstance(value, str):
        return [{"type": "text", "text": value, "text_elements": []}]
    return value


json_encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(Event)
