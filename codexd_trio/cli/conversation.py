"""``codexd show`` (a session's conversation, readable) and ``codexd threads`` (Codex's own
threads, whoever started them), over codexd's transcript and thread routes (docs/api.md, "The
conversation")."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import msgspec

from codexd_trio.base.transcript import ThreadSummary, TranscriptItem, TranscriptTurn
from codexd_trio.cli.connect import (
    EXIT_OK,
    abbreviations,
    find_session,
    pick,
    resolve_target,
    run_client,
    short_id,
)
from codexd_trio.cli.parsers import SESSION_HELP, Parser, UsageError, add_color, client_parser
from codexd_trio.cli.render import Style, colour_diff, unwrap_shell, use_color
from codexd_trio.cli.sessions import age, home_path, state, table
from codexd_trio.client import CodexdClient
from codexd_trio.core.config import CodexdConfig

_PAGE = 100


def show_parser() -> Parser:
    parser = client_parser(
        "show", "Print a session's conversation, oldest turn first: each prompt, the agent's "
        "answers, the commands it ran with their output and exit codes, the files it changed "
        "as diffs, the approvals asked and how they were decided, and how each turn ended. "
        "It comes from codexd's own records, so it works after restarts and crashes.")
    parser.add_argument("session", metavar="SESSION", nargs="?", help=SESSION_HELP)
    parser.add_argument("--last", "-n", type=int, default=None, metavar="N",
                        help="only the N newest turns")
    parser.add_argument("--thread", metavar="THREAD", default=None,
                        help="show one of Codex's threads instead (see codexd threads), "
                        "read-only")
    parser.add_argument("--item", metavar="ITEM", default=None,
                        help="print one item of the session whole (an output or a diff the "
                        "transcript cut at 64 KiB)")
    parser.add_argument("--json", action="store_true",
                        help="codexd's transcript as JSON (every page, or the --last N)")
    add_color(parser)
    return parser


def threads_parser() -> Parser:
    parser = client_parser(
        "threads", "List Codex's own threads, newest first, whoever started them (Codex's "
        "TUI, VS Code, codex exec, codexd), with the codexd session that holds each. "
        "codexd new --thread THREAD adopts one; codexd show --thread THREAD reads it.")
    parser.add_argument("--search", metavar="TEXT", default=None,
                        help="only threads whose title contains TEXT")
    parser.add_argument("--cwd", metavar="DIR", default=None,
                        help="only threads started in DIR (exactly)")
    parser.add_argument("--archived", action="store_true", help="only archived threads")
    parser.add_argument("--limit", type=int, default=25, metavar="N",
                        help="at most N threads (default 25)")
    parser.add_argument("--json", action="store_true",
                        help="the threads as JSON ({\"threads\": [...]})")
    return parser


# --------------------------------------------------------------------------- text


def _seconds(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    try:
        took = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return ""
    return f" · {took:.1f} s"


def turn_header(turn: TranscriptTurn, style: Style) -> str:
    paint = {"completed": style.green, "failed": style.red, "interrupted": style.yellow,
             "inProgress": style.cyan}.get(turn.status, str)
    when = (turn.startedAt or "").replace("T", " ").split(".")[0]
    origin = "" if turn.origin == "turn" else f" · {turn.origin}"
    head = f"── turn {turn.turnId[:13]} · "
    return style.dim(head) + paint(turn.status) + style.dim(
        f"{origin} · {when}{_seconds(turn.startedAt, turn.completedAt)} ──")


def item_lines(item: TranscriptItem, style: Style, cwd: str | None = None) -> list[str]:
    """One item of a transcript as text (the same look as ``codexd send``)."""
    kind = item.type
    if kind == "userMessage":
        return [style.bold(f"> {line}") for line in (item.text or "").splitlines() or [">"]]
    if kind in ("agentMessage", "plan"):
        return (item.text or "").splitlines()
    if kind == "reasoning":
        return [style.dim(f"thinking: {line}") for line in (item.summary or "").splitlines()]
    if kind == "commandExecution":
        lines = [style.bold(style.magenta("$ ") + unwrap_shell(item.command or ""))]
        lines += [style.dim(line) for line in (item.output or "").splitlines()]
        if item.truncated:
            lines.append(style.yellow(f"[output cut; {item.outputBytes} bytes in all: "
                                      f"codexd show SESSION --item {item.id}]"))
        if item.exitCode is not None:
            paint = style.green if item.exitCode == 0 else style.red
            took = f" · {item.durationMs} ms" if item.durationMs is not None else ""
            lines.append(paint(f"exit {item.exitCode}{took}"))
        elif item.status and item.status != "completed":
            lines.append(style.yellow(f"({item.status})"))
        return lines
    if kind == "fileChange":
        lines = []
        for change in item.changes or []:
            lines += (colour_diff(change.diff, style, cwd)
                      or [style.bold(f"{change.kind} {change.path}")])
            if change.truncated:
                lines.append(style.yellow(f"[diff cut; {change.diffBytes} bytes: "
                                          f"codexd show SESSION --item {item.id}]"))
        if item.status and item.status != "completed":
            lines.append(style.yellow(f"(patch {item.status})"))
        return lines
    if kind == "approval":
        what = (f"run `{unwrap_shell(item.command)}`" if item.command
                else "apply the file changes")
        outcome = (f"{item.decision} ({item.decidedBy})" if item.decision
                   else item.status or "pending")
        return [style.yellow(f"? approval {short_id(item.approvalId or item.id)}: {what} -> "
                             f"{outcome}")]
    data = item.data or {}
    name = next((str(data[k]) for k in ("query", "tool", "server", "name") if data.get(k)), "")
    return [style.dim(f"· {kind}" + (f" {name}" if name else ""))]


def turn_lines(turn: TranscriptTurn, style: Style, cwd: str | None = None) -> list[str]:
    lines = [turn_header(turn, style)]
    items = list(turn.items)
    if not any(i.type == "userMessage" for i in items):
        text = "".join(str(part.get("text", "")) for part in turn.input)
        items.insert(0, TranscriptItem(type="userMessage", id="", text=text))
    for item in items:
        body = item_lines(item, style, cwd)
        if body:
            lines += [*body, ""]
    if turn.error is not None:
        lines.append(style.red(f"turn {turn.status}: {turn.error.message} "
                               f"({turn.error.code})"))
    elif turn.status == "inProgress":
        lines.append(style.cyan("(running; codexd events -f --session ... follows it)"))
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def thread_rows(threads: list[ThreadSummary]) -> list[str]:
    short = abbreviations(t.threadId for t in threads)
    rows = [["THREAD", "SESSION", "SOURCE", "UPDATED", "CWD", "TITLE"]]
    for t in threads:
        title = (t.name or t.preview or "").splitlines()[0] if (t.name or t.preview) else ""
        rows.append([short[t.threadId], short_id(t.sessionId) if t.sessionId else "-",
                     t.source or "-", age(t.updatedAt), home_path(t.cwd),
                     title[:60] + ("…" if len(title) > 60 else "")])
    return table(rows)


# --------------------------------------------------------------------------- commands


async def _turns(client: CodexdClient, session_id: str, last: int | None
                 ) -> tuple[list[TranscriptTurn], dict[str, Any]]:
    if last is not None:
        page = await client.transcript(session_id, limit=last, order="desc")
        return list(reversed(page.turns)), {"lastSeq": page.lastSeq, "queue": page.queue}
    turns: list[TranscriptTurn] = []
    cursor: str | None = None
    while True:
        page = await client.transcript(session_id, limit=_PAGE, cursor=cursor)
        turns += page.turns
        cursor = page.nextCursor
        if cursor is None:
            return turns, {"lastSeq": page.lastSeq, "queue": page.queue}


async def find_thread(client: CodexdClient, text: str) -> str:
    """A thread id from its id or a unique prefix among the newest threads."""
    page = await client.list_threads(limit=_PAGE)
    ids = [t.threadId for t in page.threads]
    if text in ids or len(text) >= 32:
        return text
    return pick(ids, text, "thread")


def cmd_show(config: CodexdConfig, extra: list[str]) -> int:
    opts = show_parser().parse_args(extra)
    if opts.last is not None and opts.last < 1:
        raise UsageError("--last takes a number of turns, 1 or more")
    if (opts.session is None) == (opts.thread is None):
        raise UsageError("show takes a SESSION, or --thread THREAD")
    target = resolve_target(config, opts.via_conductor)
    style = Style(use_color(opts.color, sys.stdout))

    async def run(client: CodexdClient) -> int:
        if opts.thread is not None:
            return await _show_thread(client, await find_thread(client, opts.thread))
        session = await find_session(client, opts.session)
        if opts.item is not None:
            view = await client.transcript_item(session.sessionId, opts.item)
            print(json.dumps(msgspec.to_builtins(view), indent=2) if opts.json
                  else "\n".join(item_lines(view.item, style, session.cwd)))
            return EXIT_OK
        turns, rest = await _turns(client, session.sessionId, opts.last)
        if opts.json:
            print(json.dumps({"sessionId": session.sessionId,
                              "turns": msgspec.to_builtins(turns), **rest}, indent=2))
            return EXIT_OK
        title = f" · {session.title}" if session.title else ""
        print(style.bold(f"session {session.sessionId}{title}") + style.dim(
            f" · {home_path(session.cwd)} · {state(session)} · {session.turnCount} turns"))
        for turn in turns:
            print("\n" + "\n".join(turn_lines(turn, style, session.cwd)))
        for entry in rest.get("queue") or []:
            print(style.dim(f"queued: {entry.get('text') or entry.get('input') or entry}"))
        return EXIT_OK

    async def _show_thread(client: CodexdClient, thread_id: str) -> int:
        turns: list[TranscriptTurn] = []
        cursor: str | None = None
        while True:
            view = await client.read_thread(thread_id, limit=_PAGE, cursor=cursor)
            turns += view.turns
            cursor = view.nextCursor
            if cursor is None:
                break
        turns = turns[-opts.last:] if opts.last else turns
        if opts.json:
            print(json.dumps({"thread": msgspec.to_builtins(view.thread),
                              "turns": msgspec.to_builtins(turns)}, indent=2))
            return EXIT_OK
        t = view.thread
        print(style.bold(f"thread {t.threadId}" + (f" · {t.name}" if t.name else ""))
              + style.dim(f" · {home_path(t.cwd)} · {t.source or '?'}"
                          + (f" · session {t.sessionId}" if t.sessionId else "")))
        for turn in turns:
            print("\n" + "\n".join(turn_lines(turn, style, t.cwd)))
        return EXIT_OK

    return run_client(target, run)


def cmd_threads(config: CodexdConfig, extra: list[str]) -> int:
    opts = threads_parser().parse_args(extra)
    if opts.limit < 1:
        raise UsageError("--limit takes a number of threads, 1 or more")
    target = resolve_target(config, opts.via_conductor)

    async def run(client: CodexdClient) -> int:
        threads: list[ThreadSummary] = []
        cursor: str | None = None
        while len(threads) < opts.limit:
            page = await client.list_threads(
                limit=min(_PAGE, opts.limit - len(threads)), cursor=cursor, cwd=opts.cwd,
                search=opts.search, archived=True if opts.archived else None)
            threads += page.threads
            cursor = page.nextCursor
            if cursor is None or not page.threads:
                break
        if opts.json:
            print(json.dumps({"threads": msgspec.to_builtins(threads)}, indent=2))
        elif not threads:
            print("no threads" + (f" matching {opts.search!r}" if opts.search else ""))
        else:
            print("\n".join(thread_rows(threads)))
        return EXIT_OK

    return run_client(target, run)
