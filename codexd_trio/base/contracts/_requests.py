"""Request bodies (clients -> codexd). Unknown fields are a 400."""

from __future__ import annotations

import msgspec

from codexd_trio.base.contracts._vocabulary import (
    ApprovalMode,
    ApprovalPolicy,
    Decision,
    Purpose,
    SandboxMode,
    TurnInput,
    WhenBusy,
    _check_turn_input,
)


class CreateSessionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cwd: str | None = None
    model: str | None = None
    purpose: Purpose = "duplex"
    approvalPolicy: ApprovalPolicy | None = None
    sandbox: SandboxMode | None = None
    approvals: ApprovalMode | None = None
    # Adopt an existing Codex thread (started in the TUI, VS Code, `codex exec`, ...) instead of
    # starting one: the session resumes it and its transcript shows the earlier turns.
    threadId: str | None = None
    title: str | None = None

    def __post_init__(self) -> None:
        if self.threadId is not None and not self.threadId.strip():
            raise ValueError("Expected a thread id, not empty text - at `$.threadId`")


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
