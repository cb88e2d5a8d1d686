"""Every wire and file shape of codexd, written down once.

codexd, the conductor, the CLI and the tests all import these ``msgspec.Struct`` types. Inputs
forbid unknown fields so a typo in a client is a 400, not a silently ignored key; records are
frozen and changed with :func:`msgspec.structs.replace`. Field names are camelCase because they
mirror the app-server (see ``../shared/CONTRACT.md``).
"""

from __future__ import annotations

import re
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
# What codexd answers an approval nobody decided in time: never an accept.
TimeoutDecision = Literal["decline", "cancel"]
RuleKind = Literal["commandExecution", "fileChange", "any"]
ChildState = Literal["stopped", "starting", "running", "restarting", "failed"]
# What POST /turn does on a session that is busy: refuse (409) or queue the turn.
WhenBusy = Literal["reject", "queue"]
# A queued turn waits, or its turn/start has been sent (the durable mark before it goes).
QueueEntryState = Literal["waiting", "starting"]


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
    """``state/codexd/approvals.json``: every pending approval and the latest settled ones."""

    approvals: list[Approval] = msgspec.field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Approval rules (issue 25): decisions that need nobody. Per node and per session; codexd owns
# them (``state/codexd/approval-rules.json``), evaluated in order, session rules first.

# Bounds that keep a rule list something a person reads, and a regex something cheap to compile.
MAX_RULES = 100
MAX_RULE_PATTERN = 1000
MAX_APPROVAL_TIMEOUT_S = 7 * 24 * 3600.0


class ApprovalRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One rule: when an approval of ``kind`` matches, ``decision`` is given at once and
    recorded ``decidedBy: "rule:<name>"``.

    ``match`` is a Python regex that must match the *whole* command (or every changed path of
    a file change); ``cwdPrefix`` (optional) must be a prefix of the command's cwd (of every
    path for a file change). A rule only ever answers for sessions whose approvals wait for a
    client (``approvals: "clients"``): it decides nothing a person could not.
    """

    name: str
    kind: RuleKind = "any"
    match: str
    cwdPrefix: str | None = None
    decision: Decision

    def __post_init__(self) -> None:
        if not (0 < len(self.name) <= 64) or not all(c.isalnum() or c in "._-" for c in self.name):
            raise ValueError("Expected a rule name of 1-64 letters, digits, '.', '_' or '-' "
                             "- at `$.name`")
        if len(self.match) > MAX_RULE_PATTERN:
            raise ValueError(f"Expected a pattern of at most {MAX_RULE_PATTERN} characters "
                             "- at `$.match`")
        try:
            re.compile(self.match)
        except re.error as exc:
            raise ValueError(f"Expected a valid regular expression ({exc}) - at `$.match`") \
                from None


class ApprovalRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The approval settings of the node or of one session (``POST`` replaces them whole).

    ``timeoutS``/``timeoutDecision``: how long an approval waits for a client and what codexd
    answers then (``None``: the session falls back to the node's, the node to
    ``--approval-timeout`` and ``decline``).
    """

    rules: list[ApprovalRule] = msgspec.field(default_factory=list)
    timeoutS: float | None = None
    timeoutDecision: TimeoutDecision | None = None

    def __post_init__(self) -> None:
        if len(self.rules) > MAX_RULES:
            raise ValueError(f"Expected at most {MAX_RULES} rules - at `$.rules`")
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("Expected distinct rule names - at `$.rules`")
        if self.timeoutS is not None and not 0 <= self.timeoutS <= MAX_APPROVAL_TIMEOUT_S:
            raise ValueError(f"Expected 0 <= timeoutS <= {MAX_APPROVAL_TIMEOUT_S:.0f} "
                             "- at `$.timeoutS`")


class ApprovalRulesBook(msgspec.Struct, frozen=True, kw_only=True):
    """``state/codexd/approval-rules.json``: the node's settings and each session's."""

    node: ApprovalRules = msgspec.field(default_factory=ApprovalRules)
    sessions: dict[str, ApprovalRules] = msgspec.field(default_factory=dict)


class ApprovalRulesView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET``/``POST`` of ``/v1/codexd/approval-rules`` and
    ``/v1/codexd/sessions/{id}/approval-rules``: the settings stored at that scope and what is
    in force there (the session's own first, then the node's)."""

    scope: Literal["node", "session"]
    sessionId: str | None = None
    settings: ApprovalRules
    # The rules evaluated for this scope, in order (a session's own, then the node's).
    effectiveRules: list[ApprovalRule]
    effectiveTimeoutS: float
    effectiveTimeoutDecision: TimeoutDecision


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
    items. ``whenBusy``: ``reject`` (409 while a turn runs) or ``queue`` (wait in the session's
    queue and start when the turns before it have settled)."""

    sessionId: str
    input: TurnInput
    whenBusy: WhenBusy = "reject"

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
# The turn queue (issue 23): records, the registry's snapshot of them, requests and views.


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
