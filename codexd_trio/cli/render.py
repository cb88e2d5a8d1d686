"""codexd's events as text for a person: colours, commands and diffs, how a turn ended, and the
one-line content of each event ``codexd events`` shows (``codexd send``'s live answer is
:mod:`.turnprint`).

Sans-IO: functions of events (and a :class:`Style`) that return text; the commands write it.
The event shapes are Codex's notifications as codexd journals them (``docs/api.md``,
"Events"); everything is read tolerantly, so a field Codex renames shows less, never crashes.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from codexd_trio.base.contracts import Event

Stream = Literal["out", "err"]
Chunk = tuple[Stream, str]

# Event types that settle a turn (the same set as the client's wait_for_turn).
TURN_END_TYPES = frozenset(
    {"app-server.turn.completed", "turn.failed", "app-server.turn.completed.missing"}
)
_KNOWN_STATUSES = frozenset({"completed", "failed", "interrupted"})


def use_color(when: str, stream: TextIO) -> bool:
    """``--color WHEN``: ``always``, ``never``, or ``auto`` — when ``stream`` is a terminal,
    ``NO_COLOR`` is unset or empty (no-color.org) and ``TERM`` is not ``dumb``."""
    if when in ("always", "never"):
        return when == "always"
    try:
        tty = stream.isatty()
    except ValueError:  # closed
        return False
    return tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


class Style:
    """ANSI colours, or none."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and text else text

    def bold(self, text: str) -> str:
        return self.paint(text, "1")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def red(self, text: str) -> str:
        return self.paint(text, "31")

    def green(self, text: str) -> str:
        return self.paint(text, "32")

    def yellow(self, text: str) -> str:
        return self.paint(text, "33")

    def cyan(self, text: str) -> str:
        return self.paint(text, "36")

    def magenta(self, text: str) -> str:
        return self.paint(text, "35")


# --------------------------------------------------------------------------- items


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def unwrap_shell(command: str) -> str:
    """``/bin/bash -lc 'echo hi'`` → ``echo hi``: the command as written, not its wrapper."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return command
    shells = ("sh", "bash", "zsh", "dash")
    if len(argv) == 3 and argv[0].rsplit("/", 1)[-1] in shells and argv[1] in ("-c", "-lc"):
        return argv[2]
    return command


def command_text(item: dict[str, Any]) -> str:
    """The command as the model wrote it (``commandActions``), else as Codex ran it
    (``/bin/bash -lc '…'``)."""
    actions = item.get("commandActions")
    if isinstance(actions, list) and len(actions) == 1:
        written = as_str(as_dict(actions[0]).get("command"))
        if written:
            return written
    command = item.get("command")
    if isinstance(command, list):
        return " ".join(str(part) for part in command)
    return unwrap_shell(as_str(command))


def change_kind(change: dict[str, Any]) -> str:
    """``add``, ``delete``, ``update`` or ``move`` (an update with ``move_path``)."""
    kind = change.get("kind")
    if isinstance(kind, dict):
        if kind.get("move_path") or kind.get("movePath"):
            return "move"
        return as_str(kind.get("type")) or "update"
    return as_str(kind) or "update"


def relative(path: str, cwd: str | None) -> str:
    if cwd and path.startswith(cwd.rstrip("/") + "/"):
        return path[len(cwd.rstrip("/")) + 1:]
    return path


def codex_diff(change: dict[str, Any], cwd: str | None = None) -> str:
    """One of Codex's file changes as a unified diff. Codex sends an added file's content and a
    deleted file's old content whole, an update as hunks without file headers (a transcript's
    changes are unified diffs already)."""
    path = relative(as_str(change.get("path")), cwd)
    kind = change_kind(change)
    body = as_str(change.get("diff"))
    lines = body.splitlines()
    if kind == "add":
        return "".join([f"--- /dev/null\n+++ b/{path}\n", f"@@ -0,0 +1,{len(lines)} @@\n",
                        *(f"+{line}\n" for line in lines)])
    if kind == "delete":
        return "".join([f"--- a/{path}\n+++ /dev/null\n", f"@@ -1,{len(lines)} +0,0 @@\n",
                        *(f"-{line}\n" for line in lines)])
    if body.startswith("--- "):
        return body
    kind_info = as_dict(change.get("kind"))
    target = as_str(kind_info.get("move_path")) or as_str(kind_info.get("movePath")) or path
    return f"--- a/{path}\n+++ b/{relative(target, cwd)}\n{body}"


def colour_diff(text: str, style: Style, cwd: str | None = None) -> list[str]:
    """A unified diff's lines, coloured as git colours them; file paths under ``cwd`` are
    shown relative to it."""
    out: list[str] = []
    root = (cwd or "").rstrip("/")
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            if root:
                line = line.replace(f" a{root}/", " a/").replace(f" b{root}/", " b/")
            out.append(style.bold(line))
        elif line.startswith("@@"):
            out.append(style.cyan(line))
        elif line.startswith("+"):
            out.append(style.green(line))
        elif line.startswith("-"):
            out.append(style.red(line))
        else:
            out.append(line)
    return out


def diff_lines(change: dict[str, Any], style: Style, cwd: str | None = None) -> list[str]:
    """One of Codex's file changes as coloured unified-diff lines."""
    return colour_diff(codex_diff(change, cwd), style)


def user_text(item: dict[str, Any]) -> str:
    parts = item.get("content")
    if isinstance(parts, list):
        return "".join(as_str(as_dict(p).get("text")) for p in parts)
    return as_str(item.get("text"))


def reasoning_text(item: dict[str, Any]) -> str:
    summary = item.get("summary")
    if isinstance(summary, list):
        return "\n".join(s if isinstance(s, str) else as_str(as_dict(s).get("text"))
                         for s in summary)
    return as_str(summary)


def approval_subject(approval: dict[str, Any]) -> str:
    """What an approval asks, in a few words: the command, or the file changes."""
    params = as_dict(approval.get("params"))
    command = command_text(params)
    if command:
        return f"run `{command}`"
    if approval.get("kind") == "fileChange" or "fileChange" in as_str(approval.get("method")):
        return "apply the file changes" + (f" ({params['reason']})" if params.get("reason")
                                           else "")
    return as_str(approval.get("kind")) or as_str(approval.get("method")) or "approval"


# --------------------------------------------------------------------------- settling


@dataclass(frozen=True)
class TurnEnd:
    """How a turn ended: ``completed``, ``failed`` or ``interrupted``, and its error."""

    status: str
    code: str | None = None
    message: str | None = None


def settlement(event: Event, turn_id: str) -> TurnEnd | None:
    """The end of ``turn_id`` if ``event`` settles it, else None. An unknown status counts as
    failed when the turn carries an error, else completed (as codexd records it)."""
    if event.turnId != turn_id or event.type not in TURN_END_TYPES:
        return None
    detail = event.detail
    if event.type == "app-server.turn.completed":
        turn = as_dict(detail.get("turn"))
        error = turn.get("error")
        status = as_str(turn.get("status"))
        if status not in _KNOWN_STATUSES:
            status = "failed" if error else "completed"
        if status != "failed":
            return TurnEnd(status)
        err = as_dict(error)
        info = err.get("codexErrorInfo")
        code = info if isinstance(info, str) else next(iter(as_dict(info)), None) or "turn_failed"
        return TurnEnd("failed", code, as_str(err.get("message")) or "the turn failed")
    err = as_dict(detail.get("error")) or detail
    return TurnEnd("failed", as_str(err.get("code")) or None,
                   as_str(err.get("message")) or event.message)


# --------------------------------------------------------------------------- events


def _quoted(text: str, limit: int) -> str:
    if len(text) > limit:
        text = text[:limit] + "…"
    return json.dumps(text, ensure_ascii=False)


def event_content(event: Event, *, limit: int = 200) -> str:
    """What an event says, in one line: the delta text, the command, the output, the
    outcome; the event's own message for the rest."""
    detail, kind = event.detail, event.type
    if kind in ("app-server.item.agentMessage.delta",
                "app-server.item.commandExecution.outputDelta"):
        return _quoted(as_str(detail.get("delta")), limit)
    if kind in ("app-server.item.started", "app-server.item.completed"):
        return _item_content(as_dict(detail.get("item")), kind.endswith("completed"), limit)
    if kind == "app-server.turn.completed":
        turn = as_dict(detail.get("turn"))
        error = as_str(as_dict(turn.get("error")).get("message"))
        return as_str(turn.get("status")) + (f": {error}" if error else "")
    if kind in ("turn.failed", "app-server.turn.completed.missing"):
        err = as_dict(detail.get("error")) or detail
        return f"{as_str(err.get('code'))}: {as_str(err.get('message'))}"
    if kind == "approval.requested":
        approval = as_dict(detail.get("approval"))
        return f"{approval.get('approvalId')} {approval_subject(approval)}"
    if kind == "approval.resolved":
        approval = as_dict(detail.get("approval"))
        outcome = as_str(approval.get("decision")) or as_str(approval.get("state"))
        by = as_str(approval.get("decidedBy")) or as_str(detail.get("reason"))
        return f"{approval.get('approvalId')} {outcome}" + (f" ({by})" if by else "")
    if kind == "app-server.turn.diff.updated":
        diff = as_str(detail.get("diff"))
        return f"{diff.count('diff --git')} file(s) changed in the turn"
    if kind == "app-server.thread.tokenUsage.updated":
        usage = as_dict(detail.get("tokenUsage"))
        total, last = as_dict(usage.get("total")), as_dict(usage.get("last"))
        return f"tokens {total.get('totalTokens')} in all, {last.get('totalTokens')} last"
    if kind == "app-server.thread.status.changed":
        return f"thread {as_str(as_dict(detail.get('status')).get('type'))}"
    if kind == "app-server.error":
        return as_str(as_dict(detail.get("error")).get("message")) or event.message
    return event.message


def _item_content(item: dict[str, Any], completed: bool, limit: int) -> str:
    kind = as_str(item.get("type"))
    if kind == "commandExecution":
        text = f"$ {command_text(item)}"
        if completed:
            code = item.get("exitCode")
            text += f" -> exit {code}" if isinstance(code, int) else f" -> {item.get('status')}"
        return text
    if kind == "fileChange":
        changes = [f"{change_kind(as_dict(c))} {as_str(as_dict(c).get('path'))}"
                   for c in item.get("changes") or []]
        status = f" -> {item.get('status')}" if completed else ""
        return f"fileChange {', '.join(changes)}{status}"
    if kind == "agentMessage":
        return f"agentMessage {_quoted(as_str(item.get('text')), limit)}"
    if kind == "userMessage":
        return f"userMessage {_quoted(user_text(item), limit)}"
    if kind == "reasoning":
        return f"reasoning {_quoted(reasoning_text(item), limit)}"
    return kind or "item"


def event_line(event: Event, style: Style, *, session: str = "-") -> str:
    """``codexd events``' line: seq, time, type, session, content."""
    level = {"warn": style.yellow, "error": style.red}.get(event.level, str)
    return " ".join([
        style.dim(f"{event.seq:>7}"), style.dim(event.at), level(f"{event.type:<42}"),
        f"{session:<8}", event_content(event),
    ])
