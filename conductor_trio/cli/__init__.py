"""``conductor start|status|pause|resume|drain|config|pair|devices|notify`` (console script, or
``python -m conductor_trio``).

``start`` prints one ready line on stdout once it serves
(``{"ready": true, "service": "conductor", "url": ..., "pid": ...}``) and stops gracefully on
SIGTERM/SIGINT with exit status 0. ``status``, ``pause``, ``resume`` and ``drain`` talk to the
running conductor (``--public-api-base``, else ``--local-api``) and print a summary for a
person, or its JSON envelope with ``--json``. ``pair``, ``devices`` and ``notify test`` are the
phone's and the notifications' (:mod:`._devices`). A bad setting or usage is one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import httpx
import trio

from codexd_trio.base.logsetup import resolve_log_file, resolve_log_format, setup_logging
from conductor_trio._process import fail, first_leaf, print_ready, stop_on_signal
from conductor_trio.auth.devices import DeviceError
from conductor_trio.cli._devices import devices, notify_test, pair
from conductor_trio.cli._text import mode_text, status_text
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
EXIT_STATUS = ("exit status: 0 when the conductor answers, 3 when it does not (as codexd "
               "status and systemctl status), 1 when it answers with an error (401 without "
               "the shared token, BAA_SHARED_TOKEN_FILE), 2 bad usage")
_MODE_VERBS = {
    "pause": ("paused", "pause the node: new sessions and turns are refused (423) until resume; "
                        "running turns go on"),
    "resume": ("running", "resume the node: new sessions and turns are accepted again"),
    "drain": ("draining", "drain the node: new turns are refused (423), running turns finish; "
                          "'conductor status' says when it is drained"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other refusal of the command line (not argparse's usage block).
        sys.stderr.write(f"{PROG}: {message}\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The node's local API over codexd.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {
        "start": "run the conductor in the foreground",
        "status": "the running conductor's status: role, mode, codexd, sessions, turns",
        **{verb: text for verb, (_, text) in _MODE_VERBS.items()},
        "config": "print the resolved configuration (no secrets)",
    }
    for name, text in commands.items():
        talks = name in ("status", *_MODE_VERBS)
        cmd = sub.add_parser(name, help=text, description=text,
                             epilog=EXIT_STATUS if talks else None)
        add_conductor_flags(cmd)
        if talks:
            cmd.add_argument("--json", action="store_true",
                             help="print the conductor's JSON answer (the envelope) as is")
        if name in _MODE_VERBS:
            cmd.add_argument("--reason", default=None, help="why (recorded with the mode)")
    pair = sub.add_parser("pair", help="a one-time pairing URL and QR code for a phone",
                          description="Ask the running conductor for a pairing code (5 minutes, "
                          "once) and print its URL and the same as a QR code.")
    add_conductor_flags(pair)
    pair.add_argument("--name", default="phone", help="the device's name (default phone)")
    pair.add_argument("--grant", action="append", choices=["system"], default=[],
                      help="also allow /v1/system/* (pause, devices, pairing)")
    pair.add_argument("--url", help="the address the phone reaches the conductor at (default: "
                      "BAA_CONDUCTOR_PUBLIC_API_BASE, else the listen address)")
    pair.add_argument("--no-qr", action="store_true", help="print the URL only")
    devices = sub.add_parser("devices", help="list paired devices, or revoke one",
                             description="List the devices paired with the running conductor; "
                             "--revoke ID refuses that device's token at once.")
    add_conductor_flags(devices)
    devices.add_argument("--revoke", metavar="ID", help="revoke this device")
    devices.add_argument("--json", action="store_true", help="print JSON")
    notify = sub.add_parser("notify", help="notifications: test every sink",
                            description="notify test: send a test notification to every "
                            "configured sink and report each result (exit 1 if one failed).")
    notify.add_argument("action", choices=["test"])
    add_conductor_flags(notify)
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


def _conductor_url(config: ConductorConfig) -> str:
    return (config.public_api_base or config.local_api).rstrip("/")


def _call(config: ConductorConfig, method: str, path: str, body: dict[str, Any] | None = None,
          ) -> tuple[int, dict[str, Any]] | int:
    """``(status, envelope)``, or the exit status after a one-line error."""
    url = _conductor_url(config) + path
    headers = {"Authorization": f"Bearer {config.shared_token}"} if config.shared_token else {}
    try:
        response = httpx.request(method, url, json=body, headers=headers, timeout=10.0)
    except httpx.TransportError as exc:
        # 3, as systemctl status and codexd status: not running (1 is an error answer).
        return fail(PROG, f"cannot reach the conductor at {url}: {exc}", 3)
    try:
        envelope = response.json()
    except ValueError:
        return fail(PROG, f"the conductor answered {url} with HTTP {response.status_code} and "
                    "no JSON", 1)
    return response.status_code, envelope if isinstance(envelope, dict) else {}


def _talk(config: ConductorConfig, method: str, path: str, as_json: bool,
          body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]] | int:
    answer = _call(config, method, path, body)
    if isinstance(answer, int):
        return answer
    status, envelope = answer
    if as_json:
        sys.stdout.write(json.dumps(envelope, indent=2) + "\n")
        return 0 if status < 400 else 1
    if status >= 400 or not envelope.get("ok"):
        error = envelope.get("error") or {}
        hint = " (send the shared token: BAA_SHARED_TOKEN_FILE)" if status == 401 else ""
        return fail(PROG, f"{error.get('message') or f'HTTP {status}'} "
                    f"({error.get('code', status)}){hint}", 1)
    return status, envelope.get("data") or {}


def _status(config: ConductorConfig, as_json: bool) -> int:
    answer = _talk(config, "GET", "/v1/status", as_json)
    if isinstance(answer, int):
        return answer
    sys.stdout.write(status_text(answer[1]))
    return 0


def _change_mode(config: ConductorConfig, verb: str, reason: str | None, as_json: bool) -> int:
    try:
        who = f"cli:{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        who = f"cli@{socket.gethostname()}"
    body: dict[str, Any] = {"requested_by": who}
    if reason:
        body["reason"] = reason
    answer = _talk(config, "POST", f"/v1/system/{verb}", as_json, body)
    if isinstance(answer, int):
        return answer
    sys.stdout.write(mode_text(answer[1]))
    return 0


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
        return _status(config, args.json)
    if args.command in _MODE_VERBS:
        return _change_mode(config, args.command, args.reason, args.json)
    if args.command == "pair":
        return pair(config, args)
    if args.command == "devices":
        return devices(config, args)
    if args.command == "notify":
        return notify_test(config)
    try:
        setup_logging(log_format, log_file=log_file)
    except OSError as exc:
        return fail(PROG, f"cannot open the log file {log_file}: {exc.strerror or exc}", 2)
    status = 0
    try:
        trio.run(run_conductor, config)
    except* (ModeStoreError, DeviceError) as group:
        status = fail(PROG, str(first_leaf(group)), 2)
    except* OSError as group:
        leaf = first_leaf(group)
        reason = leaf.strerror if isinstance(leaf, OSError) and leaf.strerror else str(leaf)
        status = fail(PROG, f"cannot serve on {config.local_api}: {reason}", 1)
    return status


__all__ = ["main", "mode_text", "run_conductor", "status_text"]
