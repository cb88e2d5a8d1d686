"""``codexd sessions`` (what there is) and ``codexd new`` (a new session)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from codexd_trio.base.contracts import Session
from codexd_trio.cli.connect import EXIT_OK, abbreviations, resolve_target, run_client
from codexd_trio.cli.parsers import Parser, UsageError, add_json, client_parser
from codexd_trio.client import CodexdClient
from codexd_trio.core.config import CodexdConfig


def sessions_parser() -> Parser:
    parser = client_parser(
        "sessions", "List the sessions, the most recently active first: id (a unique prefix "
        "any command takes), state, turns, the last turn's outcome, when, the working "
        "directory and the title. Closed sessions only with --all.")
    parser.add_argument("--all", "-a", action="store_true", help="closed sessions too")
    add_json(parser, "the sessions as JSON ({\"sessions\": [...]}, codexd's Session objects)")
    return parser


def new_parser() -> Parser:
    parser = client_parser(
        "new", "Create a session (a Codex thread that codexd keeps) and print its id. "
        "Sandbox and approval flags are Codex's own (codex --help).",
        "example:\n  id=$(codexd new --cwd ~/src/app --full-auto)\n"
        "  codexd send \"$id\" \"add a README\"")
    parser.add_argument("--cwd", metavar="DIR", default=None,
                        help="the working directory (default: the current one)")
    parser.add_argument("--title", metavar="TEXT", default=None,
                        help="the session's title (Codex's thread name; default: the first "
                        "prompt, shortened)")
    parser.add_argument("--thread", metavar="THREAD", default=None,
                        help="adopt one of Codex's threads (codexd threads lists them; an id "
                        "or a unique prefix) instead of starting one: the session resumes it "
                        "and codexd show shows its earlier turns")
    parser.add_argument("--model", "-m", default=None, help="the model (default: Codex's)")
    parser.add_argument("--sandbox", "-s", default=None,
                        choices=("read-only", "workspace-write", "danger-full-access"),
                        help="what commands may touch (default: Codex's configuration)")
    parser.add_argument("--ask-for-approval", "--approval-policy", "-a", dest="approval_policy",
                        default=None, choices=("untrusted", "on-request", "never"),
                        help="when Codex asks before it acts (default: Codex's configuration)")
    parser.add_argument("--full-auto", action="store_true",
                        help="the same as --sandbox workspace-write --ask-for-approval "
                        "on-request")
    parser.add_argument("--approvals", default=None, choices=("decline", "clients"),
                        help="who answers Codex's questions: codexd declines at once "
                        "(decline, the default), or it waits for you (codexd approve / "
                        "decline, the console) up to codexd's --approval-timeout")
    add_json(parser, "the new session as JSON (codexd's Session object)")
    return parser


# --------------------------------------------------------------------------- formatting


def age(iso: str | None, now: datetime | None = None) -> str:
    """``2026-12-07T04:55:12.512Z`` → ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if not iso:
        return "-"
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def home_path(path: str | None) -> str:
    if not path:
        return "-"
    home = str(Path.home())
    return "~" + path[len(home):] if path == home or path.startswith(home + "/") else path


def state(session: Session) -> str:
    if session.status == "closed":
        return "closed"
    return "running" if session.currentTurnId else "idle"


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
                      + [row[-1]]).rstrip() for row in rows]


def session_rows(sessions: list[Session]) -> list[str]:
    short = abbreviations(s.sessionId for s in sessions)
    rows = [["SESSION", "STATE", "TURNS", "LAST TURN", "ACTIVE", "CWD", "TITLE"]]
    for s in sessions:
        last: str = s.lastTurnStatus or "-"
        if s.lastTurnError is not None and last == "failed":
            last = f"failed ({s.lastTurnError.code})"
        title = (s.title or "").splitlines()[0] if s.title else ""
        rows.append([short[s.sessionId], state(s), str(s.turnCount), last, age(s.updatedAt),
                     home_path(s.cwd), title[:50] + ("…" if len(title) > 50 else "")])
    return table(rows)


# --------------------------------------------------------------------------- commands


def cmd_sessions(config: CodexdConfig, extra: list[str]) -> int:
    opts = sessions_parser().parse_args(extra)
    target = resolve_target(config, opts.via_conductor)

    async def run(client: CodexdClient) -> int:
        sessions = await client.list_sessions(status=None if opts.all else "active",
                                              order="activity")
        if opts.json:
            print(json.dumps({"sessions": msgspec.to_builtins(sessions)}, indent=2))
        elif not sessions:
            print("no sessions" if opts.all else "no active sessions (--all shows closed "
                  "ones; codexd new creates one)")
        else:
            print("\n".join(session_rows(sessions)))
        return EXIT_OK

    return run_client(target, run)


def cmd_new(config: CodexdConfig, extra: list[str]) -> int:
    opts = new_parser().parse_args(extra)
    target = resolve_target(config, opts.via_conductor)
    cwd = os.path.abspath(Path(opts.cwd).expanduser() if opts.cwd else Path.cwd())
    if not os.path.isdir(cwd):
        raise UsageError(f"--cwd {opts.cwd}: not a directory")
    sandbox, policy = opts.sandbox, opts.approval_policy
    if opts.full_auto:
        sandbox, policy = sandbox or "workspace-write", policy or "on-request"

    if opts.thread is not None and (opts.cwd or opts.model or sandbox or policy):
        raise UsageError("--thread adopts the thread as it is: no --cwd, --model, --sandbox, "
                         "--ask-for-approval or --full-auto")

    async def run(client: CodexdClient) -> int:
        key = f"cli-{uuid.uuid4()}"
        if opts.thread is not None:
            from codexd_trio.cli.conversation import find_thread

            session = await client.adopt_thread(
                await find_thread(client, opts.thread), title=opts.title,
                approvals=opts.approvals, idempotency_key=key)
        else:
            session = await client.create_session(
                cwd=cwd, model=opts.model, sandbox=sandbox, approval_policy=policy,
                approvals=opts.approvals, title=opts.title, idempotency_key=key)
        # Only the id on stdout (as `docker create`), so `id=$(codexd new)` works.
        sys.stdout.write(
            (json.dumps(msgspec.to_builtins(session), indent=2) if opts.json
             else session.sessionId) + "\n")
        return EXIT_OK

    return run_client(target, run)
