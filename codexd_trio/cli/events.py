"""``codexd events``: what codexd did — its durable event log, the last N events, or the live
stream — one line per event with what it says (the delta text, the command, the output, the
outcome), or codexd's JSON objects."""

from __future__ import annotations

import collections
import sys
from collections.abc import Callable

import msgspec

from codexd_trio.base.contracts import Event
from codexd_trio.cli.connect import EXIT_OK, find_session, resolve_target, run_client, short_id
from codexd_trio.cli.parsers import Parser, UsageError, add_color, client_parser
from codexd_trio.cli.render import Style, event_line, use_color
from codexd_trio.client import CodexdClient, StreamOverflow
from codexd_trio.core.config import CodexdConfig

_PAGE = 1000


def events_parser() -> Parser:
    parser = client_parser(
        "events", "Print events from the durable log, oldest first, one line each: seq, time, "
        "type, session and what the event says (the delta text, the command, the output, the "
        "outcome). --follow tails the live stream; --last N starts with the N newest. An "
        "unknown --session is one line on stderr and exit status 2.")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep printing live events until Ctrl-C")
    parser.add_argument("--after", type=int, default=None, metavar="N",
                        help="only events with a seq above N")
    parser.add_argument("--last", "-n", type=int, default=None, metavar="N",
                        help="only the N newest events (of --session, when given); with "
                        "--follow, then the live ones (as tail -n N -f)")
    parser.add_argument("--session", default=None, metavar="SESSION",
                        help="only this session's (an id or a unique prefix)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line (codexd's events, whole)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="stop after N events (without --follow)")
    add_color(parser)
    return parser


async def newest(client: CodexdClient, count: int, session_id: str | None) -> list[Event]:
    """The ``count`` newest retained events (of ``session_id``), oldest first.

    The log is read forward only (``after=``), so this reads a window below the newest seq
    and widens it (×8) until it holds ``count`` matching events or starts at the oldest.
    """
    _, last = await client.events_window(after=0, limit=1)
    span = count
    while True:
        start = max(0, last - span)
        found: collections.deque[Event] = collections.deque(maxlen=count)
        after = start
        while after < last:
            page, _ = await client.events_window(after=after, limit=_PAGE, session_id=session_id)
            found.extend(e for e in page if e.seq <= last)
            if not page:
                break
            after = page[-1].seq
        if len(found) >= count or start == 0:
            return list(found)
        span *= 8


def cmd_events(config: CodexdConfig, extra: list[str]) -> int:
    opts = events_parser().parse_args(extra)
    if opts.after is not None and opts.after < 0:
        raise UsageError("--after must be 0 or more")
    if opts.last is not None and (opts.last < 1 or opts.after is not None):
        raise UsageError("--last takes a number of events, 1 or more, and no --after")
    target = resolve_target(config, opts.via_conductor)
    style = Style(not opts.json and use_color(opts.color, sys.stdout))

    def show(event: Event) -> None:
        line = (msgspec.json.encode(event).decode() if opts.json else
                event_line(event, style, session=short_id(event.sessionId or "-")))
        print(line, flush=True)

    async def run(client: CodexdClient) -> int:
        session_id: str | None = None
        if opts.session is not None:
            # An unknown session is a mistake to say, not an empty list (exit 2).
            session_id = (await find_session(client, opts.session)).sessionId
        after = opts.after
        if opts.last is not None:
            shown = await newest(client, opts.last, session_id)
            for event in shown:
                show(event)
            if not opts.follow:
                return EXIT_OK
            after = shown[-1].seq if shown else (await client.events_window(limit=1))[1]
        elif not opts.follow:
            return await _page_through(client, opts.after or 0, opts.limit, session_id, show)
        while True:
            try:
                async with client.events(after=after, session_id=session_id) as stream:
                    async for event in stream:
                        show(event)
                        after = event.seq
                return EXIT_OK
            except StreamOverflow as exc:
                # We fell behind; resume exactly where the server stopped delivering.
                after = exc.last_delivered_seq

    return run_client(target, run)


async def _page_through(client: CodexdClient, after: int, limit: int | None,
                        session_id: str | None, show: Callable[[Event], None]
                        ) -> int:
    shown = 0
    while True:
        page, _ = await client.events_window(after=after, limit=_PAGE, session_id=session_id)
        for event in page:
            show(event)
            after = event.seq
            shown += 1
            if limit and shown >= limit:
                return EXIT_OK
        if not page:
            return EXIT_OK
