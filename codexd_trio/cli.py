"""The ``codexd`` command line: start, status, config, events, smoke, console.

Bad input is one line on stderr and exit status 2 — never a traceback. ``status`` exits 0 when
codexd answers and 3 when it does not (as ``systemctl status`` and the conductor's ``status``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import msgspec
import trio

from codexd_trio import __version__
from codexd_trio.config import CONFIG_FLAGS_HELP, CodexdConfig, ConfigError, resolve_config
from codexd_trio.contracts import (
    DaemonState,
    Event,
    Identity,
    RecentEvents,
    RecentEventsView,
    SessionRegistry,
)

USAGE = f"""\
usage: codexd <command> [options]

commands:
  start                      run codexd in the foreground (for launchd/systemd)
  status [--json]            daemon status from its files and its API (works when it is down)
  config [--json]            the resolved configuration
  events [--follow] [--after N] [--session ID] [--json]
                             print events from the durable log; --follow tails the live stream
  smoke [--keep]             start a throw-away codexd with the scripted model, run a session
                             and a turn, check the files; exit 0 on success, 1 on failure
  console                    a Trio REPL with `client` (a connected CodexdClient) in scope

codexd <command> --help shows one command's options. Exit status: 0 done, 2 bad input (one line
on stderr), 1 failed; `status` exits 3 when codexd does not answer.

{CONFIG_FLAGS_HELP}"""

STATUS_EXIT = """\
exit status: 0 when codexd answers; 3 when it does not (the status is then read from its files);
1 when it answers with an error (a wrong token, say); 2 bad input."""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _command_parser(command: str, description: str, epilog: str | None = None) -> _Parser:
    """A command's own options; ``codexd <command> --help`` prints them, with the
    configuration flags every command takes."""
    return _Parser(
        prog=f"codexd {command}", add_help=False, description=textwrap.fill(description, 79),
        epilog="\n\n".join(filter(None, [epilog, CONFIG_FLAGS_HELP.rstrip()])),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _start_parser() -> _Parser:
    return _command_parser(
        "start", "Run codexd in the foreground (for launchd/systemd); it prints one JSON ready "
        "line on stdout once it listens, and stops gracefully on SIGTERM/SIGINT (exit 0).")


def _status_parser() -> _Parser:
    parser = _command_parser(
        "status", "codexd's status from its files and its API; works when it is down.",
        STATUS_EXIT)
    parser.add_argument("--json", action="store_true", help="the whole status as JSON")
    return parser


def _config_parser() -> _Parser:
    parser = _command_parser("config", "The resolved configuration (defaults <- environment "
                             "<- flags); no secrets.")
    parser.add_argument("--json", action="store_true", help="as JSON")
    return parser


def _events_parser() -> _Parser:
    parser = _command_parser(
        "events", "Print events from the durable log, oldest first; --follow tails the live "
        "stream. An unknown --session is one line on stderr and exit status 2.")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep printing live events until Ctrl-C")
    parser.add_argument("--after", type=int, default=None, metavar="N",
                        help="only events with a seq above N")
    parser.add_argument("--session", default=None, metavar="ID", help="only this session's")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="stop after N events (without --follow)")
    return parser


def _smoke_parser() -> _Parser:
    parser = _command_parser(
        "smoke", "Start a throw-away codexd with the real Codex and the scripted model, run a "
        "session and a turn, check the files; exit 0 on success, 1 on failure.")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    return parser


def _console_parser() -> _Parser:
    return _command_parser(
        "console", "A Trio REPL with `client` (a CodexdClient connected to codexd) in scope: "
        "await client.status()")


_PARSERS = {
    "start": _start_parser,
    "status": _status_parser,
    "config": _config_parser,
    "events": _events_parser,
    "smoke": _smoke_parser,
    "console": _console_parser,
}


def _fail(message: str, status: int = 2) -> int:
    print(f"codexd: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] in ("--version", "version"):
        print(f"codexd {__version__}")
        return 0
    command, rest = args[0], args[1:]
    handlers = {
        "start": cmd_start,
        "status": cmd_status,
        "config": cmd_config,
        "events": cmd_events,
        "smoke": cmd_smoke,
        "console": cmd_console,
    }
    handler = handlers.get(command)
    if handler is None:
        return _fail(f"unknown command {command!r}; see 'codexd --help'")
    if "-h" in rest or "--help" in rest:
        print(_PARSERS[command]().format_help(), end="")
        return 0
    try:
        config, extra = resolve_config(rest)
        return handler(config, extra)
    except (ConfigError, UsageError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``codexd events | head``): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _setup_logging(log_format: str, log_file: Path | None = None) -> None:
    from codexd_trio.logsetup import setup_logging

    try:
        setup_logging(log_format, log_file=log_file)
    except OSError as exc:
        raise UsageError(f"cannot open the log file {log_file}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- start


def cmd_start(config: CodexdConfig, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"unexpected arguments for start: {' '.join(extra)}")
    _setup_logging(config.log_format, config.log_file)
    from codexd_trio.eventlog import EventLogCorrupt
    from codexd_trio.store import StoreError

    try:
        return trio.run(_start, config)
    except StoreError as exc:
        return _fail(f"cannot open the state files: {exc}", 1)
    except EventLogCorrupt as exc:
        # Refuse to start rather than silently drop history; the message names file and byte.
        return _fail(f"the event log is damaged: {exc} (move it aside to start fresh)", 1)


async def _start(config: CodexdConfig) -> int:
    from codexd_trio.api import serve_api
    from codexd_trio.process import first_leaf, print_ready, stop_on_signal
    from codexd_trio.service import Daemon

    daemon = Daemon(config)

    def begin_stop() -> None:
        logging.getLogger("codexd").info("received a stop signal, stopping gracefully")
        daemon.request_stop()

    async def run_daemon(task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        await daemon.run(serve=serve_api, task_status=task_status)
        nursery.cancel_scope.cancel(reason="codexd stopped")

    failure: OSError | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(stop_on_signal, begin_stop)
            await nursery.start(run_daemon)
            assert daemon.resolved_base_url is not None
            print_ready("codexd", daemon.resolved_base_url)
    except* OSError as group:
        # Typically the port is taken; it arrives wrapped in the nurseries' exception groups.
        leaf = first_leaf(group)
        assert isinstance(leaf, OSError)
        failure = leaf
    if failure is not None:
        return _fail(f"cannot listen on {config.local_api_base}: {failure}", 1)
    return 0


# --------------------------------------------------------------------------- status


def _read(path: Path, type_: type[Any]) -> Any:
    from codexd_trio.store import StoreError, read_document

    try:
        return read_document(path, type_)
    except StoreError as exc:
        return {"error": str(exc)}


def _status_data(config: CodexdConfig) -> dict[str, Any]:
    from codexd_trio.client import CodexdClient, CodexdError, CodexdUnavailable

    state_dir = config.codexd_state
    identity = _read(state_dir / "identity.json", Identity)
    state = _read(state_dir / "daemon-state.json", DaemonState)
    registry = _read(state_dir / "session-registry.json", SessionRegistry)
    base = config.local_api_base
    if isinstance(state, DaemonState) and state.resolvedBaseUrl and config.port == 0:
        base = state.resolvedBaseUrl
    api: dict[str, Any] = {"base": base, "reachable": False}
    live: dict[str, Any] = {}

    async def probe() -> None:
        async with CodexdClient(base, timeout=2.0, token=config.token) as client:
            try:
                api["status"] = await client.status()
                api["reachable"] = True
                live["sessions"] = [msgspec.to_builtins(s) for s in await client.list_sessions()]
            except CodexdUnavailable as exc:
                api["error"] = str(exc)
            except CodexdError as exc:
                api["reachable"] = True
                api["error"] = f"{exc.code}: {exc.message}"

    trio.run(probe)
    recent = _read(state_dir / "recent-events.json", RecentEvents)
    # The seed's shape, read from the files whether or not the daemon runs (the daemon keeps
    # them current), plus what the API said: the same answer up or down.
    return {
        "daemon": msgspec.to_builtins(state),
        "sessionRegistry": (
            {"sessions": live["sessions"]} if "sessions" in live
            else msgspec.to_builtins(registry) if isinstance(registry, SessionRegistry)
            else {"sessions": []}
        ),
        "identity": msgspec.to_builtins(identity),
        "recentEvents": (
            api["status"]["snapshot"]["recentEvents"] if "status" in api
            else _recent_view(recent.events if isinstance(recent, RecentEvents) else [])
        ),
        "api": api,
        "running": api["reachable"],
        "files": {
            "stateDir": str(state_dir),
            "logsDir": str(config.codexd_logs),
            "sessionCount": len(registry.sessions) if isinstance(registry, SessionRegistry) else 0,
        },
    }


def _recent_view(events: list[Event]) -> dict[str, Any]:
    """The snapshot's ``recentEvents`` shape, from the file, while the daemon is down."""
    view = RecentEventsView(count=len(events), lastSeq=events[-1].seq if events else 0,
                            events=events)
    out: dict[str, Any] = msgspec.to_builtins(view)
    return out


def _status_exit(data: dict[str, Any]) -> int:
    """See :data:`STATUS_EXIT`."""
    if not data["running"]:
        return 3
    return 1 if data["api"].get("error") else 0


def cmd_status(config: CodexdConfig, extra: list[str]) -> int:
    opts = _status_parser().parse_args(extra)
    data = _status_data(config)
    if opts.json:
        print(json.dumps(data, indent=2))
        return _status_exit(data)
    files = data["files"]
    ident = data["identity"] or {}
    dstate = data["daemon"] or {}
    rows: list[tuple[str, str]] = [
        ("api", f"{data['api']['base']} ({'up' if data['running'] else 'down'})"),
        ("daemon id", str(ident.get("daemonId", "-"))),
        ("node id", str(ident.get("nodeId", "-"))),
        ("state dir", files["stateDir"]),
        ("logs dir", files["logsDir"]),
    ]
    live = data["api"].get("status")
    if live:
        snap = live["snapshot"]
        child = snap["daemon"]["child"]
        rows += [
            ("pid", str(snap["daemon"]["pid"])),
            ("started at", str(snap["daemon"]["startedAt"])),
            (
                "child",
                f"{child['status']} (pid {child.get('pid')}, restarts {child.get('restarts')})",
            ),
            ("sessions", f"{snap['sessions']['count']} ({snap['sessions']['activeCount']} active)"),
            ("active turns", str(len(snap.get("activeTurns", [])))),
            ("last event seq", str(snap["recentEvents"]["lastSeq"])),
        ]
    else:
        child = (dstate.get("child") or {}) if isinstance(dstate, dict) else {}
        rows += [
            ("last pid", str(dstate.get("pid", "-")) if isinstance(dstate, dict) else "-"),
            ("last update", str(dstate.get("updatedAt", "-")) if isinstance(dstate, dict) else "-"),
            ("child (last known)", str(child.get("status", "-"))),
            ("sessions", str(files["sessionCount"])),
        ]
        if data["api"].get("error"):
            rows.append(("api error", data["api"]["error"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return _status_exit(data)


def cmd_config(config: CodexdConfig, extra: list[str]) -> int:
    opts = _config_parser().parse_args(extra)
    data = config.as_json()
    if opts.json:
        print(json.dumps(data, indent=2))
    else:
        width = max(len(k) for k in data)
        for key, value in data.items():
            print(f"{key.ljust(width)}  {value}")
    return 0


# --------------------------------------------------------------------------- events


def format_event(event: Event) -> str:
    who = event.sessionId or "-"
    return f"{event.seq:>7} {event.at} {event.level:<5} {event.type:<36} {who} {event.message}"


def cmd_events(config: CodexdConfig, extra: list[str]) -> int:
    opts = _events_parser().parse_args(extra)
    if opts.after is not None and opts.after < 0:
        raise UsageError("--after must be 0 or more")

    def show(event: Event) -> None:
        line = msgspec.json.encode(event).decode() if opts.json else format_event(event)
        print(line, flush=True)

    async def run() -> int:
        from codexd_trio.client import CodexdClient, StreamOverflow

        async with CodexdClient(config.local_api_base, token=config.token) as client:
            if opts.session is not None:
                # An unknown session is a mistake to say, not an empty list (404 -> exit 2).
                await client.get_session(opts.session)
            if not opts.follow:
                after = opts.after or 0
                shown = 0
                while True:
                    page = await client.events_page(after=after, limit=500)
                    page = [e for e in page if opts.session in (None, e.sessionId)]
                    for event in page:
                        show(event)
                        after = event.seq
                        shown += 1
                        if opts.limit and shown >= opts.limit:
                            return 0
                    if not page:
                        return 0
            after = opts.after
            while True:
                try:
                    async with client.events(after=after, session_id=opts.session) as stream:
                        async for event in stream:
                            show(event)
                            after = event.seq
                    return 0
                except StreamOverflow as exc:
                    # We fell behind; resume exactly where the server stopped delivering.
                    after = exc.last_delivered_seq

    from codexd_trio.client import CodexdError, CodexdUnavailable

    try:
        return trio.run(run)
    except CodexdUnavailable as exc:
        return _fail(f"codexd is not reachable at {config.local_api_base}: {exc}", 1)
    except CodexdError as exc:
        return _fail(f"{exc.code}: {exc.message}", 2 if exc.status == 404 else 1)


# --------------------------------------------------------------------------- smoke


def cmd_smoke(config: CodexdConfig, extra: list[str]) -> int:
    opts = _smoke_parser().parse_args(extra)
    from codexd_trio.smoke import run_smoke

    return trio.run(partial(run_smoke, keep=opts.keep))


# --------------------------------------------------------------------------- console


def cmd_console(config: CodexdConfig, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"unexpected arguments for console: {' '.join(extra)}")
    from codexd_trio.console import run_console

    return run_console(config)


if __name__ == "__main__":
    raise SystemExit(main())
