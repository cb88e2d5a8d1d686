"""The ``codexd`` command line: start, status, config, events, smoke, console.

Bad input is one line on stderr and exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
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

{CONFIG_FLAGS_HELP}"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


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
        print(USAGE, end="")
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


def cmd_status(config: CodexdConfig, extra: list[str]) -> int:
    parser = _Parser(prog="codexd status", add_help=False)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(extra)
    data = _status_data(config)
    if opts.json:
        print(json.dumps(data, indent=2))
        return 0
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
    return 0


def cmd_config(config: CodexdConfig, extra: list[str]) -> int:
    parser = _Parser(prog="codexd config", add_help=False)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(extra)
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
    parser = _Parser(prog="codexd events", add_help=False)
    parser.add_argument("--follow", "-f", action="store_true")
    parser.add_argument("--after", type=int, default=None)
    parser.add_argument("--session", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--limit", type=int, default=None)
    opts = parser.parse_args(extra)
    if opts.after is not None and opts.after < 0:
        raise UsageError("--after must be 0 or more")

    def show(event: Event) -> None:
        line = msgspec.json.encode(event).decode() if opts.json else format_event(event)
        print(line, flush=True)

    async def run() -> int:
        from codexd_trio.client import CodexdClient, StreamOverflow

        async with CodexdClient(config.local_api_base, token=config.token) as client:
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
        return _fail(f"{exc.code}: {exc.message}", 1)


# --------------------------------------------------------------------------- smoke


def cmd_smoke(config: CodexdConfig, extra: list[str]) -> int:
    parser = _Parser(prog="codexd smoke", add_help=False)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    opts = parser.parse_args(extra)
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
