"""The small vocabularies every shape uses, a turn's input and error, and the clock's format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

# The longest line codexd reads from the app-server child, and so the largest event payload:
# the child's line limit and the client's websocket frame limit both derive from it.
DEFAULT_MAX_LINE = 64 * 1024 * 1024


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


class TurnError(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


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


def input_items(value: TurnInput) -> list[dict[str, Any]]:
    """The app-server ``UserInput`` list for a turn input (a string becomes one text item)."""
    if isinstance(value, str):
        return [{"type": "text", "text": value, "text_elements": []}]
    return value
