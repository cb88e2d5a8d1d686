"""Every wire and file shape of codexd, written down once.

codexd, the conductor, the CLI and the tests all import these ``msgspec.Struct`` types from
here. Inputs forbid unknown fields so a typo in a client is a 400, not a silently ignored key;
records are frozen and changed with :func:`msgspec.structs.replace`. Field names are camelCase
because they mirror the app-server (``docs/api.md``).

The shapes live in private modules by subject — the vocabulary, records (files, sessions, events,
status, approvals), request bodies, the turn queue, approval rules, envelopes and frames — so no
module grows past what one reads in a sitting; they import only downwards in that order's sense
(everything may use the vocabulary) and nothing else in codexd.
"""

from __future__ import annotations

import msgspec

from codexd_trio.base.contracts._frames import (
    ErrorBody,
    ErrorEnvelope,
    HelloData,
    HelloFrame,
    OverflowData,
    OverflowFrame,
)
from codexd_trio.base.contracts._queue import (
    HoldRequest,
    MoveRequest,
    QueueEntry,
    QueueHold,
    QueueSnapshot,
    QueueStatus,
    QueueStop,
    QueueView,
    SessionQueue,
    StartedEntry,
)
from codexd_trio.base.contracts._records import (
    ActiveTurn,
    Approval,
    ApprovalBook,
    ApprovalCounts,
    ChildStatus,
    CodexdStatus,
    CodexVersionStatus,
    DaemonInfo,
    DaemonState,
    Event,
    Identity,
    RecentEvents,
    RecentEventsView,
    ServiceInfo,
    Session,
    SessionCounts,
    SessionRegistry,
    StatusSnapshot,
)
from codexd_trio.base.contracts._requests import (
    CreateSessionRequest,
    DecisionRequest,
    InterruptRequest,
    SteerRequest,
    TurnRequest,
)
from codexd_trio.base.contracts._rules import (
    MAX_APPROVAL_TIMEOUT_S,
    MAX_RULE_PATTERN,
    MAX_RULES,
    ApprovalRule,
    ApprovalRules,
    ApprovalRulesBook,
    ApprovalRulesView,
)
from codexd_trio.base.contracts._vocabulary import (
    DEFAULT_MAX_LINE,
    ApprovalMode,
    ApprovalPolicy,
    ApprovalState,
    ChildState,
    Decision,
    Level,
    Purpose,
    QueueEntryState,
    RuleKind,
    SandboxMode,
    SessionStatus,
    TimeoutDecision,
    TurnError,
    TurnInput,
    TurnStatus,
    WhenBusy,
    _check_turn_input,
    input_items,
    now_iso,
)

json_encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(Event)

__all__ = [
    "DEFAULT_MAX_LINE",
    "MAX_APPROVAL_TIMEOUT_S",
    "MAX_RULES",
    "MAX_RULE_PATTERN",
    "ActiveTurn",
    "Approval",
    "ApprovalBook",
    "ApprovalCounts",
    "ApprovalMode",
    "ApprovalPolicy",
    "ApprovalRule",
    "ApprovalRules",
    "ApprovalRulesBook",
    "ApprovalRulesView",
    "ApprovalState",
    "ChildState",
    "ChildStatus",
    "CodexVersionStatus",
    "CodexdStatus",
    "CreateSessionRequest",
    "DaemonInfo",
    "DaemonState",
    "Decision",
    "DecisionRequest",
    "ErrorBody",
    "ErrorEnvelope",
    "Event",
    "HelloData",
    "HelloFrame",
    "HoldRequest",
    "Identity",
    "InterruptRequest",
    "Level",
    "MoveRequest",
    "OverflowData",
    "OverflowFrame",
    "Purpose",
    "QueueEntry",
    "QueueEntryState",
    "QueueHold",
    "QueueSnapshot",
    "QueueStatus",
    "QueueStop",
    "QueueView",
    "RecentEvents",
    "RecentEventsView",
    "RuleKind",
    "SandboxMode",
    "ServiceInfo",
    "Session",
    "SessionCounts",
    "SessionQueue",
    "SessionRegistry",
    "SessionStatus",
    "StartedEntry",
    "StatusSnapshot",
    "SteerRequest",
    "TimeoutDecision",
    "TurnError",
    "TurnInput",
    "TurnRequest",
    "TurnStatus",
    "WhenBusy",
    "_check_turn_input",
    "event_decoder",
    "input_items",
    "json_encoder",
    "now_iso",
]
