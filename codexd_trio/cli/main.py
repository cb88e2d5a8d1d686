"""The ``codexd`` command line: the everyday commands (sessions, new, send, interrupt, show,
threads, approvals, approve, decline, events) and the operator's (start, status, config, smoke,
console).

Bad input is one line on stderr and exit status 2 — never a traceback. ``status`` exits 0 when
codexd answers and 3 when it does not (as ``systemctl status`` and the conductor's ``status``);
the everyday commands exit 3 when codexd (or the conductor) cannot be reached (docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import trio

from codexd_trio import __version__
from codexd_trio.base.settings import ConfigError
from codexd_trio.cli.approvals import (
    approvals_parser,
    approve_parser,
    cmd_approvals,
    cmd_approve,
    cmd_decline,
    decline_parser,
)
from codexd_trio.cli.connect import CliFailure
from codexd_trio.cli.conversation import cmd_show, cmd_threads, show_parser, threads_parser
from codexd_trio.cli.events import cmd_events, events_parser
from codexd_trio.cli.parsers import (
    PARSERS,
    USAGE,
    UsageError,
    config_parser,
    fail,
    smoke_parser,
)
from codexd_trio.cli.send import cmd_interrupt, cmd_send, interrupt_parser, send_parser
from codexd_trio.cli.sessions import cmd_new, cmd_sessions, new_parser, sessions_parser
from codexd_trio.cli.status import cmd_status
from codexd_trio.core.config import CodexdConfig, resolve_config


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] in ("--version", "version"):
        print(f"codexd {__version__}")
        return 0
    command, rest = args[0], args[1:]
    handler = HANDLERS.get(command)
    if handler is None:
        return fail(f"unknown command {command!r}; see 'codexd --help'")
    if "-h" in rest or "--help" in rest:
        print(ALL_PARSERS[command]().format_help(), end="")
        return 0
    try:
        config, extra = resolve_config(rest)
        return handler(config, extra)
    except (ConfigError, UsageError) as exc:
        return fail(str(exc))
    except CliFailure as exc:
        return fail(exc.message, exc.status)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``codexd events | head``): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


Handler = Callable[[CodexdConfig, list[str]], int]


def _setup_logging(log_format: str, log_file: Path | None = None) -> None:
    from codexd_trio.base.logsetup import setup_logging

    try:
        setup_logging(log_format, log_file=log_file)
    except OSError as exc:
        raise UsageError(f"cannot open the log file {log_file}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- start


def cmd_start(config: CodexdConfig, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"unexpected arguments for start: {' '.join(extra)}")
    _setup_logging(config.log_format, config.log_file)
    from codexd_trio.store.documents import StoreError
    from codexd_trio.store.eventlog import EventLogCorrupt

    try:
        return trio.run(_start, config)
    except StoreError as exc:
        return fail(f"cannot open the state files: {exc}", 1)
    except EventLogCorrupt as exc:
        # Refuse to start rather than silently drop history; the message names file and byte.
        return fail(f"the event log is damaged: {exc} (move it aside to start fresh)", 1)


async def _start(config: CodexdConfig) -> int:
    from codexd_trio.base.process import first_leaf, print_ready, stop_on_signal
    from codexd_trio.core.service import Daemon
    from codexd_trio.web.routes import serve_api

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
        return fail(f"cannot listen on {config.local_api_base}: {failure}", 1)
    return 0


def cmd_config(config: CodexdConfig, extra: list[str]) -> int:
    opts = config_parser().parse_args(extra)
    data = config.as_json()
    if opts.json:
        print(json.dumps(data, indent=2))
    else:
        width = max(len(k) for k in data)
        for key, value in data.items():
            print(f"{key.ljust(width)}  {value}")
    return 0


# --------------------------------------------------------------------------- smoke


def cmd_smoke(config: CodexdConfig, extra: list[str]) -> int:
    opts = smoke_parser().parse_args(extra)
    from codexd_trio.cli.smoke import run_smoke

    return trio.run(partial(run_smoke, keep=opts.keep))


# --------------------------------------------------------------------------- console


def cmd_console(config: CodexdConfig, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"unexpected arguments for console: {' '.join(extra)}")
    from codexd_trio.cli.console import run_console

    return run_console(config)


HANDLERS: dict[str, Handler] = {
    "sessions": cmd_sessions,
    "new": cmd_new,
    "send": cmd_send,
    "interrupt": cmd_interrupt,
    "show": cmd_show,
    "threads": cmd_threads,
    "approvals": cmd_approvals,
    "approve": cmd_approve,
    "decline": cmd_decline,
    "events": cmd_events,
    "start": cmd_start,
    "status": cmd_status,
    "config": cmd_config,
    "smoke": cmd_smoke,
    "console": cmd_console,
}
ALL_PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    **PARSERS,
    "sessions": sessions_parser,
    "new": new_parser,
    "send": send_parser,
    "interrupt": interrupt_parser,
    "show": show_parser,
    "threads": threads_parser,
    "approvals": approvals_parser,
    "approve": approve_parser,
    "decline": decline_parser,
    "events": events_parser,
}
