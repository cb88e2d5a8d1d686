"""What a notification says (sans-IO): codexd's events → the messages worth sending.

:func:`compose` looks at one event and answers with a :class:`Message` or ``None``; the notifier
calls it for every event it reads, in order. Kinds (the names sinks filter on,
:data:`conductor_trio.config.NOTIFY_KINDS`):

==================  ==========================================================================
approval            ``approval.requested`` that waits for a person (not one a rule decided,
                    nor one the session's policy declines at once); with Accept/Decline
turn.completed      ``app-server.turn.completed`` with status completed (likewise failed,
turn.failed         interrupted); ``app-server.turn.completed.missing`` (the child went away
turn.interrupted    during the turn) is ``turn.failed``
child.failed        ``child.restarting`` at level error: codexd gave up restarting quickly
queue.stopped       ``turn.queue.stopped`` (the session's turn queue stopped)
node                made by the conductor itself: the node turned degraded or stopped leading
==================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import msgspec

from codexd_trio.base.contracts import Event

__all__ = ["Action", "Message", "compose", "deep_link", "node_message"]


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """A button: ``http`` posts to ``url`` (an action link), ``view`` opens it."""

    label: str
    url: str
    kind: Literal["http", "view"] = "http"


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One notification, before it is addressed to a sink.

    ``key`` is what deduplicates it: ``e<seq>`` for a codexd event (so an event read twice after
    a restart gives the same key), ``n<...>`` for the conductor's own.
    """

    key: str
    kind: str
    title: str
    body: str
    click: str | None = None
    actions: list[Action] = msgspec.field(default_factory=list)
    sessionId: str | None = None
    approvalId: str | None = None


def deep_link(base: str, session_id: str | None, approval_id: str | None = None) -> str:
    """``<base>/console#session=…&approval=…``: the console opens there (the fragment is never
    sent to the server)."""
    parts = []
    if session_id:
        parts.append(f"session={quote(session_id, safe='')}")
    if approval_id:
        parts.append(f"approval={quote(approval_id, safe='')}")
    return f"{base.rstrip('/')}/console" + ("#" + "&".join(parts) if parts else "")


def _short(session_id: str | None) -> str:
    return (session_id or "?").removeprefix("session-")[:8]


def _clock(iso: str | None) -> str | None:
    """``14:05`` in the node's local time zone (with its name), for "declines by itself at"."""
    if not iso:
        return None
    try:
        at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return None
    return at.strftime("%H:%M %Z").strip()


def _what(approval: dict[str, Any]) -> str:
    params = approval.get("params") or {}
    command = params.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    if isinstance(command, str):
        cwd = params.get("cwd")
        return f"{command}" + (f"\nin {cwd}" if isinstance(cwd, str) else "")
    reason = params.get("reason")
    return "a file change" + (f": {reason}" if isinstance(reason, str) and reason else "")


# An action link for one approval: (approval id, decision, deadline) -> URL.
LinkMaker = Callable[[str, float | None], dict[str, str]]


def compose(event: Event, *, base: str, links: LinkMaker) -> Message | None:
    """The notification an event deserves, or ``None``.

    Args:
        base: the conductor's address as the person's phone reaches it.
        links: makes the Accept and Decline URLs of one approval (single-use, expiring).
    """
    detail = event.detail
    key = f"e{event.seq}"
    if event.type == "approval.requested":
        return _approval(event, key, base, links)
    if event.type == "app-server.turn.completed":
        turn = detail.get("turn") if isinstance(detail.get("turn"), dict) else {}
        status = turn.get("status") if isinstance(turn, dict) else None
        kind = {"failed": "turn.failed", "interrupted": "turn.interrupted"}.get(
            str(status), "turn.completed")
        error = turn.get("error") if isinstance(turn, dict) else None
        why = error.get("message") if isinstance(error, dict) else None
        return _turn(event, key, kind, base, why)
    if event.type == "app-server.turn.completed.missing":
        return _turn(event, key, "turn.failed", base, str(detail.get("message") or ""))
    if event.type == "child.restarting" and event.level == "error":
        return Message(key=key, kind="child.failed", title="Codex keeps failing",
                       body=f"{event.message}. codexd keeps retrying; the node cannot run turns "
                       "meanwhile.", click=deep_link(base, None))
    if event.type == "turn.queue.stopped":
        # The queue branch's event: detail {queueId, code, message, attempts}; its message says
        # where and why. The queue waits for a person to resume it.
        code = detail.get("code")
        return Message(key=key, kind="queue.stopped",
                       title=f"Turn queue stopped (session {_short(event.sessionId)})",
                       body=event.message + (f" ({code})" if isinstance(code, str) else ""),
                       click=deep_link(base, event.sessionId), sessionId=event.sessionId)
    return None


def _approval(event: Event, key: str, base: str, links: LinkMaker) -> Message | None:
    detail = event.detail
    approval = detail.get("approval")
    if not isinstance(approval, dict) or detail.get("rule"):
        return None  # a rule decided it at once: nobody needs to be asked
    if approval.get("state") != "pending" or not approval.get("expiresAt"):
        return None  # the session's policy declines at once (approvals: decline)
    approval_id = str(approval.get("approvalId"))
    session_id = event.sessionId
    deadline = _epoch(approval.get("expiresAt"))
    urls = links(approval_id, deadline)
    on_timeout = approval.get("onTimeout") or "decline"
    by_itself = _clock(approval.get("expiresAt"))
    verb = "declines" if on_timeout == "decline" else "cancels the turn"
    lines = [_what(approval)]
    if by_itself:
        lines.append(f"codexd {verb} by itself at {by_itself}.")
    kind_text = "change files" if approval.get("kind") == "fileChange" else "run a command"
    return Message(
        key=key, kind="approval",
        title=f"Codex asks to {kind_text} (session {_short(session_id)})",
        body="\n".join(lines),
        click=deep_link(base, session_id, approval_id),
        actions=[Action(label="Accept", url=urls["accept"]),
                 Action(label="Decline", url=urls["decline"])],
        sessionId=session_id, approvalId=approval_id,
    )


def _turn(event: Event, key: str, kind: str, base: str, why: str | None) -> Message:
    word = kind.removeprefix("turn.")
    body = f"Turn {event.turnId or '?'} {word}."
    if why:
        body += f"\n{why}"
    return Message(key=key, kind=kind, title=f"Turn {word} (session {_short(event.sessionId)})",
                   body=body, click=deep_link(base, event.sessionId), sessionId=event.sessionId)


def _epoch(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def node_message(key: str, role: str, before: str, detail: str | None, base: str) -> Message:
    """The conductor's own notification: the node stopped leading, or its lease is failing."""
    if role == "degraded":
        title, body = "Node degraded", f"The lease store is failing: {detail or 'unknown error'}."
    else:
        title, body = "Node no longer leads", f"This conductor went from {before} to {role}."
    return Message(key=key, kind="node", title=title, body=body, click=deep_link(base, None))
