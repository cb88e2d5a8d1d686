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

every day (codexd on this machine, or through a conductor with --via-conductor URL):
  sessions [--all]           the sessions, the most recently active first
  new [--cwd DIR] [--title T] [--full-auto] [-s SANDBOX] [-a POLICY] [--approvals clients]
                             create a session (a Codex thread codexd keeps); prints its id;
                             --thread THREAD adopts one of Codex's threads instead
  send SESSION TEXT|-        send a prompt as a new turn and stream the answer until the turn
                             settles (--no-wait, --json); '-' reads the prompt from stdin
  interrupt SESSION          interrupt the session's running turn
  show SESSION [--last N]    the conversation so far, readable (--json: the transcript)
  threads [--search TEXT]    Codex's own threads (TUI, VS Code, codex exec, codexd)
  approvals [--all]          what Codex waits for you to approve
  approve ID [--for-session] let it go ahead
  decline ID [--cancel]      refuse (--cancel: and interrupt the turn)
  events [--follow] [--last N] [--after N] [--session SESSION] [--json]
                             codexd's events, one line each with what it says

operating codexd:
  start                      run codexd in the foreground (for launchd/systemd)
  status [--json]            daemon status from its files and its API (works when it is down)
  config [--json]            the resolved configuration
  smoke [--keep]             start a throw-away codexd with the scripted model, run a session
                             and a turn, check the files; exit 0 on success, 1 on failure
  console                    a Trio REPL with `client` (a connected CodexdClient) in scope

SESSION and ID take a unique prefix of the id, as git takes commit ids (8f3a for
session-8f3a2c1d-...). codexd <command> --help shows one command's options; docs/cli.md has
them all. Exit status: 0 done, 1 failed, 2 bad input (one line on stderr), 3 codexd (or the
conductor) not reachable; send also 1 when the turn failed and 4 when it was interrupted.

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


def client_parser(command: str, description: str, epilog: str | None = None) -> Parser:
    """An everyday command's parser: its options, ``--via-conductor``, and the connection
    settings in its help (not every daemon setting)."""
    from codexd_trio.cli.connect import CONNECTION_HELP

    parser = Parser(
        prog=f"codexd {command}", add_help=False, description=textwrap.fill(description, 79),
        epilog="\n\n".join(filter(None, [epilog, CONNECTION_HELP])),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--via-conductor", metavar="URL", default=None,
                        help="go through the conductor at URL (see connection below)")
    return parser


def add_json(parser: Parser, what: str = "codexd's JSON answer") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what}")


def add_color(parser: Parser) -> None:
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        metavar="WHEN", help="auto (the default: when stdout is a terminal and "
                        "NO_COLOR is unset), always or never")


SESSION_HELP = ("the session's id, or a unique prefix of it (as git takes commit ids): "
                "session-8f3a2c1d-..., 8f3a2c1d and 8f3a all do")


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
    "smoke": smoke_parser,
    "console": console_parser,
}


def fail(message: str, status: int = 2) -> int:
    print(f"codexd: {message}", file=sys.stderr)
    return status
