"""The ``codexd`` command line's usage text, each command's parser, and how it fails (one line
on stderr, exit status 2)."""


from __future__ import annotations

import argparse
import sys
import textwrap
from typing import NoReturn

from codexd_trio.core.config import CONFIG_FLAGS_HELP

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


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def command_parser(command: str, description: str, epilog: str | None = None) -> Parser:
    """A command's own options; ``codexd <command> --help`` prints them, with the
    configuration flags every command takes."""
    return Parser(
        prog=f"codexd {command}", add_help=False, description=textwrap.fill(description, 79),
        epilog="\n\n".join(filter(None, [epilog, CONFIG_FLAGS_HELP.rstrip()])),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def start_parser() -> Parser:
    return command_parser(
        "start", "Run codexd in the foreground (for launchd/systemd); it prints one JSON ready "
        "line on stdout once it listens, and stops gracefully on SIGTERM/SIGINT (exit 0).")


def status_parser() -> Parser:
    parser = command_parser(
        "status", "codexd's status from its files and its API; works when it is down.",
        STATUS_EXIT)
    parser.add_argument("--json", action="store_true", help="the whole status as JSON")
    return parser


def config_parser() -> Parser:
    parser = command_parser("config", "The resolved configuration (defaults <- environment "
                             "<- flags); no secrets.")
    parser.add_argument("--json", action="store_true", help="as JSON")
    return parser


def events_parser() -> Parser:
    parser = command_parser(
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


def smoke_parser() -> Parser:
    parser = command_parser(
        "smoke", "Start a throw-away codexd with the real Codex and the scripted model, run a "
        "session and a turn, check the files; exit 0 on success, 1 on failure.")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    return parser


def console_parser() -> Parser:
    return command_parser(
        "console", "A Trio REPL with `client` (a CodexdClient connected to codexd) in scope: "
        "await client.status()")


PARSERS = {
    "start": start_parser,
    "status": status_parser,
    "config": config_parser,
    "events": events_parser,
    "smoke": smoke_parser,
    "console": console_parser,
}


def fail(message: str, status: int = 2) -> int:
    print(f"codexd: {message}", file=sys.stderr)
    return status
