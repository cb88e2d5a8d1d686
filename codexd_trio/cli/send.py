"""``codexd send``: start a turn and stream it as it happens until it settles; ``codexd
interrupt``: stop a session's running turn.

``send`` subscribes to the session's events *before* it posts the turn, so nothing the turn
does can fall between the 202 and the subscription: Codex may even finish a quick turn before
codexd has recorded its acceptance, and those events carry seqs below ``turn.accepted``'s. It
then reads the stream (reconnecting with ``after=`` the last seq it printed when it falls
behind) until that turn's ``app-server.turn.completed``, or ``turn.failed`` /
``app-server.turn.completed.missing`` when Codex or codexd died under it.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec

from codexd_trio.base.contracts import Event
from codexd_trio.cli.connect import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_UNREACHABLE,
    CliFailure,
    fail,
    find_session,
    resolve_target,
    run_client,
    short_id,
)
from codexd_trio.cli.parsers import (
    SESSION_HELP,
    Parser,
    UsageError,
    add_color,
    add_json,
    client_parser,
)
from codexd_trio.cli.render import Style, TurnEnd, settlement, use_color
from codexd_trio.cli.turnprint import TurnPrinter
from codexd_trio.client import CodexdClient, StreamOverflow
from codexd_trio.core.config import CodexdConfig

# Events kept while a queued entry waits (one turn's worth is plenty: they are this session's).
_WAITING_EVENTS = 10_000

SEND_EXIT = """\
exit status (like codex exec, it says how the turn ended):
  0    the turn completed
  1    the turn failed (the model's error, Codex or codexd died under it), or codexd
       answered with an error of its own
  2    bad input: usage, an unknown or ambiguous SESSION, a session that is closed or busy
       (409), a paused node (423, through the conductor)
  3    codexd (or the conductor) is not reachable, or went away before the turn settled
  4    the turn was interrupted (codexd interrupt, the console, another client)
  130  Ctrl-C: this command stopped following; the turn runs on in codexd

Approvals: send never prompts. When the session asks clients (codexd new --approvals
clients), it prints the approval's id and the commands that decide it: run them in another
terminal, or decide in the web console. Sessions with the default --approvals decline are
answered by codexd at once."""


def send_parser() -> Parser:
    parser = client_parser(
        "send", "Send a prompt to a session as a new turn and print the answer as it arrives: "
        "the agent's text, each command with its output and exit code, file changes as diffs "
        "(in colour on a terminal). Exits when the turn settles.", SEND_EXIT)
    parser.add_argument("session", metavar="SESSION", help=SESSION_HELP)
    parser.add_argument("text", metavar="TEXT", nargs="+",
                        help="the prompt (several words are joined with spaces); '-' reads it "
                        "from stdin")
    parser.add_argument("--no-wait", action="store_true",
                        help="print the turn id once codexd accepted the turn, and exit 0")
    add_json(parser, "the turn's events as JSON lines (codexd's event objects); with "
             "--no-wait, codexd's 202 answer")
    add_color(parser)
    parser.add_argument("--queue", action="store_true",
                        help="when the session is busy, wait in its queue instead of being "
                        "refused: the turn starts after the ones before it (durable; held "
                        "while the node is paused or draining), and send follows it then")
    return parser


def interrupt_parser() -> Parser:
    parser = client_parser(
        "interrupt", "Interrupt the session's running turn; it then settles as interrupted "
        "(a send following it exits 4).")
    parser.add_argument("session", metavar="SESSION", help=SESSION_HELP)
    add_json(parser)
    return parser


def read_prompt(words: list[str]) -> str:
    """The prompt: the words, or stdin for ``-`` (a whole file or a here-document)."""
    text = sys.stdin.read() if words == ["-"] else " ".join(words)
    if not text.strip():
        raise UsageError("the prompt is empty" + (" (stdin had nothing)" if words == ["-"]
                                                   else ""))
    return text.rstrip("\n")


@dataclass
class _Following:
    """What Ctrl-C's message names."""

    session_id: str | None = None
    turn_id: str | None = None


def cmd_send(config: CodexdConfig, extra: list[str]) -> int:
    opts = send_parser().parse_args(extra)
    target = resolve_target(config, opts.via_conductor)
    text = read_prompt(opts.text)
    style = Style(use_color(opts.color, sys.stdout))
    following = _Following()
    try:
        return run_client(target, partial(_send, opts, text, style, following))
    except KeyboardInterrupt:
        if following.turn_id is None or following.session_id is None:
            return EXIT_SIGINT
        return fail(f"stopped following turn {following.turn_id}; it runs on in codexd "
                    f"('codexd interrupt {short_id(following.session_id)}' stops it)",
                    EXIT_SIGINT)


def _write(stream: str, text: str) -> None:
    out = sys.stdout if stream == "out" else sys.stderr
    out.write(text)
    out.flush()


async def _post(client: CodexdClient, session_id: str, text: str, queue: bool
                ) -> dict[str, Any]:
    """Post the turn; with ``queue``, ``whenBusy: "queue"`` (the answer is then either a started
    turn or ``{queued: true, queueId, position}``)."""
    # A fresh key per send: a retry of this very request is answered, never run twice.
    key = f"cli-{uuid.uuid4()}"
    if queue:
        return await client.queue_turn(session_id, text, idempotency_key=key)
    return await client.start_turn(session_id, text, idempotency_key=key)


def _dequeued(event: Event, queue_id: str) -> str | None:
    """The turn id a queued entry became, from its ``turn.dequeued``; a one-line failure when the
    entry was removed or its queue stopped at it (it then waits for a person)."""
    if event.detail.get("queueId") != queue_id:
        return None
    if event.type == "turn.dequeued" and event.turnId:
        return event.turnId
    if event.type == "turn.queue.removed":
        raise CliFailure(f"queued turn {queue_id} was removed "
                         f"({event.detail.get('reason', 'removed')})", EXIT_FAILED)
    if event.type == "turn.queue.stopped":
        raise CliFailure(
            f"the session's queue stopped at {queue_id}: {event.detail.get('message')}; it "
            "waits until the queue is resumed or the entry removed (the console, or "
            "POST …/queue/resume)", EXIT_FAILED)
    return None


async def _send(opts: argparse.Namespace, text: str, style: Style, following: _Following,
                client: CodexdClient) -> int:
    session = await find_session(client, opts.session)
    following.session_id = session.sessionId
    if opts.no_wait:
        accepted = await _post(client, session.sessionId, text, opts.queue)
        print(msgspec.json.encode(accepted).decode() if opts.json
              else accepted["queueId"] if accepted.get("queued") else accepted["turnId"])
        return EXIT_OK
    printer = TurnPrinter(style, "", cwd=session.cwd, approvals=session.approvals)
    after: int | None = None  # None: live only, for the first subscription
    posted = False
    turn_id: str | None = None
    queue_id: str | None = None
    # While a queued entry waits: its turn's first events may be published before the
    # ``turn.dequeued`` that names the turn, so they are kept and shown once it is known.
    waiting: deque[Event] = deque(maxlen=_WAITING_EVENTS)
    end: TurnEnd | None = None
    while end is None:
        try:
            async with client.events(after=after, session_id=session.sessionId) as stream:
                if not posted:
                    after = stream.hello.lastSeq
                    accepted = await _post(client, session.sessionId, text, opts.queue)
                    posted = True
                    if accepted.get("queued"):
                        queue_id = str(accepted["queueId"])
                        _write("err", f"queued as {queue_id} (position "
                                      f"{accepted.get('position')}): it starts after the turns "
                                      "before it\n")
                    else:
                        turn_id = following.turn_id = printer.turn_id = str(accepted["turnId"])
                async for stream_event in stream:
                    after = stream_event.seq
                    if turn_id is None:
                        assert queue_id is not None
                        waiting.append(stream_event)
                        turn_id = _dequeued(stream_event, queue_id)
                        if turn_id is None:
                            continue
                        following.turn_id = printer.turn_id = turn_id
                        backlog = list(waiting)
                    else:
                        backlog = [stream_event]
                    for event in backlog:
                        if end is not None:
                            break
                        if opts.json:
                            if event.turnId in (None, turn_id):
                                _write("out", msgspec.json.encode(event).decode() + "\n")
                            end = settlement(event, turn_id)
                        else:
                            for chunk_stream, chunk in printer.feed(event):
                                _write(chunk_stream, chunk)
                            end = printer.end
                    if end is not None:
                        break
                else:
                    raise CliFailure(f"codexd closed the event stream before turn {turn_id} "
                                     "settled (is it stopping?)", EXIT_UNREACHABLE)
        except StreamOverflow:
            # We fell behind; ``after`` is the last event we printed, so nothing is lost.
            continue
    return _outcome(end, turn_id)


def _outcome(end: TurnEnd, turn_id: str | None) -> int:
    if end.status == "completed":
        return EXIT_OK
    if end.status == "interrupted":
        return fail(f"turn {turn_id} was interrupted", EXIT_INTERRUPTED)
    return fail(f"turn {turn_id} failed: {end.message or 'no reason given'}"
                + (f" ({end.code})" if end.code else ""), EXIT_FAILED)


def cmd_interrupt(config: CodexdConfig, extra: list[str]) -> int:
    opts = interrupt_parser().parse_args(extra)
    target = resolve_target(config, opts.via_conductor)

    async def run(client: CodexdClient) -> int:
        session = await find_session(client, opts.session)
        answer = await client.interrupt_turn(session.sessionId,
                                             idempotency_key=f"cli-{uuid.uuid4()}")
        print(msgspec.json.encode(answer).decode() if opts.json
              else f"interrupting turn {answer.get('turnId')} of {session.sessionId}")
        return EXIT_OK

    return run_client(target, run)
