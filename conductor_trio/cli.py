"""``conductor start|status|config`` (console script, or ``python -m conductor_trio``).

``start`` prints one ready line on stdout once it serves
(``{"ready": true, "service": "conductor", "url": ..., "pid": ...}``) and stops gracefully on
SIGTERM/SIGINT with exit status 0. A bad setting is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import httpx
import trio

from codexd_trio.base.logsetup import resolve_log_file, resolve_log_format, setup_logging
from conductor_trio._process import fail, first_leaf, print_ready, stop_on_signal
from conductor_trio.config import (
    ConductorConfig,
    ConfigError,
    add_conductor_flags,
    resolve_conductor,
)
from conductor_trio.mode import ModeStoreError
from conductor_trio.service import Conductor
from conductor_trio.web.app import serve_conductor

PROG = "conductor"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="The node's local API over codexd.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("start", "run the conductor in the foreground"),
        ("status", "print the running conductor's /v1/status; exit status 0 when it answers, "
                   "3 when it does not (as codexd status), 1 when it answers with an error"),
        ("config", "print the resolved configuration (no secrets)"),
    ):
        add_conductor_flags(sub.add_parser(name, help=text, description=text))
    return parser


async def run_conductor(config: ConductorConfig) -> None:
    """Serve until SIGTERM/SIGINT, print the ready line once listening.

    **Cancellation:** a signal starts a graceful stop (see ``Conductor.run``); a cancel of the
    caller stops everything at once, the lease still being released.
    """
    conductor = Conductor(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(stop_on_signal, conductor.begin_stop)

        async def serve(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            await serve_conductor(conductor, task_status=task_status)
            nursery.cancel_scope.cancel(reason="conductor stopped")

        url = await nursery.start(serve)
        print_ready("conductor", url)


def _status(config: ConductorConfig) -> int:
    url = (config.public_api_base or config.local_api).rstrip("/") + "/v1/status"
    try:
        response = httpx.get(url, timeout=5.0)
    except httpx.TransportError as exc:
        # 3, as systemctl status and codexd status: not running (1 is an error answer).
        return fail(PROG, f"cannot reach the conductor at {url}: {exc}", 3)
    sys.stdout.write(json.dumps(response.json(), indent=2) + "\n")
    return 0 if response.status_code == 200 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = resolve_conductor(args)
    except ConfigError as exc:
        return fail(PROG, str(exc), 2)
    # Checked for every command, so `config` does not print a setting `start` would refuse.
    try:
        log_format = resolve_log_format(args.log_format)
    except ValueError as exc:
        return fail(PROG, str(exc), 2)
    log_file = resolve_log_file(args.log_file, "BAA_CONDUCTOR_LOG_FILE")
    if args.command == "config":
        sys.stdout.write(json.dumps(config.as_json(), indent=2) + "\n")
        return 0
    if args.command == "status":
        return _status(config)
    try:
        setup_logging(log_format, log_file=log_file)
    except OSError as exc:
        return fail(PROG, f"cannot open the log file {log_file}: {exc.strerror or exc}", 2)
    status = 0
    try:
        trio.run(run_conductor, config)
    except* ModeStoreError as group:
        status = fail(PROG, str(first_leaf(group)), 2)
    except* OSError as group:
        leaf = first_leaf(group)
        reason = leaf.strerror if isinstance(leaf, OSError) and leaf.strerror else str(leaf)
        status = fail(PROG, f"cannot serve on {config.local_api}: {reason}", 1)
    return status
