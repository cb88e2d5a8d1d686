"""What a Codex turn looks like on the wire, read tolerantly: its outcome, its error, its final
agent message, and the event type of a notification. Pure functions, no state (the state machine
that uses them is :class:`codexd_trio.core.domain.SessionBook`)."""

from __future__ import annotations

from typing import Any, cast

import msgspec

from codexd_trio.base.contracts import TurnError, TurnStatus


def settled_outcome(settled: dict[str, Any]) -> tuple[TurnStatus, TurnError | None, str | None]:
    """The outcome a ``turn.accepted`` event carries for a turn that completed first."""
    status = settled.get("status")
    error = settled.get("error")
    output = settled.get("output")
    return (
        cast(TurnStatus, status) if status in ("completed", "failed", "interrupted")
        else "completed",
        msgspec.convert(error, TurnError) if isinstance(error, dict) else None,
        output if isinstance(output, str) else None,
    )


def event_type_for(method: str) -> str:
    """``turn/completed`` -> ``app-server.turn.completed``."""
    return "app-server." + method.replace("/", ".")


# What codexd records as a turn's end. Codex's own value stays in the event's ``detail``; a value
# this codexd does not know (a newer Codex) is recorded as one of these, never copied into a
# Session, whose records must stay decodable by every reader (registry, client, conductor).
_FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "interrupted"})


def turn_outcome(turn: dict[str, Any]) -> tuple[TurnStatus, str]:
    """``(status codexd records, status Codex sent)`` for a ``turn/completed`` turn.

    Tolerant of what a newer Codex may send: a missing status is ``completed``; an unknown one
    (or ``inProgress`` in a completion) is ``failed`` when the turn carries an error, else
    ``completed``.
    """
    raw = turn.get("status")
    sent = raw if isinstance(raw, str) and raw else "completed"
    if sent in _FINAL_STATUSES:
        return cast(TurnStatus, sent), sent
    return ("failed" if turn.get("error") else "completed"), sent


def turn_error(error: Any) -> TurnError:
    """The session's ``lastTurnError`` from a turn's ``error``: ``code`` is the
    ``codexErrorInfo`` variant's name, whatever the variant (known to this codexd or not)."""
    if not isinstance(error, dict):
        return TurnError(code="turn_failed", message=str(error or "the turn failed"))
    return TurnError(
        code=_error_code(error.get("codexErrorInfo")),
        message=str(error.get("message") or "the turn failed"),
    )


def _error_code(info: Any) -> str:
    # A plain variant ("usageLimitExceeded", "bioPolicy"), an externally tagged one
    # ({"httpConnectionFailed": {...}}) or, should Codex adopt one, an internally tagged one
    # ({"type": "...", ...}).
    if isinstance(info, str) and info:
        return info
    if isinstance(info, dict) and info:
        for tag in ("type", "kind", "mode"):
            if isinstance(info.get(tag), str) and info[tag]:
                return str(info[tag])
        return str(next(iter(info)))
    return "turn_failed"


def final_agent_text(items: Any) -> str | None:
    text = None
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and item.get("type") == "agentMessage":
                text = item.get("text")
    return text if isinstance(text, str) else None
