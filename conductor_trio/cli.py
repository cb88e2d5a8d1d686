"""``conductor start|status|config|pair|devices|notify`` (console script, or
``python -m conductor_trio``).

``pair``, ``devices`` and ``notify test`` are issue 25's: a pairing code for a phone (URL and QR
code), the paired devices (``--revoke ID``), a test notification to every sink.

``start`` prints one ready line on stdout once it serves
(``{"ready": true, "service": "conductor", "url": ..., "pid": ...}``) and stops gracefully on
SIGTERM/SIGINT with exit status 0. A bad setting is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
import trio

from codexd_trio.base.logsetup import resolve_log_file, resolve_log_format, setup_logging
from conductor_trio._process import fail, first_leaf, print_ready, stop_on_signal
from conductor_trio.auth.devices import DeviceError
from conductor_trio.config import (
    ConductorConfig,
    ConfigError,
    add_conductor_flags,
    resolve_conductor,
)
from conductor_trio.mode import ModeStoreError
from conductor_trio.notify.notifier import send_test_notifications
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


def _status(config: ConductorConfig) -> int:
    url = (config.public_api_base or config.local_api).rstrip("/") + "/v1/status"
    try:
        response = httpx.get(url, timeout=5.0)
    except httpx.TransportError as exc:
        # 3, as systemctl status and codexd status: not running (1 is an error answer).
        return fail(PROG, f"cannot reach the conductor at {url}: {exc}", 3)
    sys.stdout.write(json.dumps(response.json(), indent=2) + "\n")
    return 0 if response.status_code == 200 else 1


def _api(config: ConductorConfig, method: str, path: str, body: Any = None
         ) -> httpx.Response | int:
    """A call to the running conductor with the shared token if there is one; an exit status
    (printed) when it cannot be reached."""
    base = (config.public_api_base or config.local_api).rstrip("/")
    headers = {"Authorization": f"Bearer {config.shared_token}"} if config.shared_token else {}
    try:
        return httpx.request(method, base + path, json=body, headers=headers, timeout=10.0)
    except httpx.TransportError as exc:
        return fail(PROG, f"cannot reach the conductor at {base}: {exc}", 3)


def _refused(response: httpx.Response) -> int:
    try:
        err = response.json()["error"]
        message = f"{err['message']} ({err['code']})"
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}"
    return fail(PROG, message, 1)


def _pair(config: ConductorConfig, args: argparse.Namespace) -> int:
    answer = _api(config, "POST", "/v1/system/pairings",
                  {"name": args.name, "grant": list(dict.fromkeys(args.grant))})
    if isinstance(answer, int):
        return answer
    if answer.status_code != 201:
        return _refused(answer)
    data = answer.json()["data"]
    url = data["url"] if not args.url else (
        f"{args.url.rstrip('/')}/console#pair={data['code']}")
    out = sys.stdout
    out.write(f"Open on the device within {int(data['expires_in_s'] // 60)} minutes "
              f"(works once):\n  {url}\n")
    if not args.no_qr:
        import segno  # only here: the daemon never draws QR codes

        segno.make(url, error="m").terminal(out=out, compact=True)
    out.write(f"code: {data['code']} · scopes: {', '.join(data['scopes'])}\n")
    return 0


def _devices(config: ConductorConfig, args: argparse.Namespace) -> int:
    if args.revoke:
        answer = _api(config, "DELETE", f"/v1/system/devices/{quote(args.revoke, safe='')}")
    else:
        answer = _api(config, "GET", "/v1/system/devices")
    if isinstance(answer, int):
        return answer
    if answer.status_code != 200:
        if answer.status_code == 404:
            return fail(PROG, f"no device {args.revoke!r}", 2)
        return _refused(answer)
    data = answer.json()["data"]
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    devices = [data["device"]] if args.revoke else data["devices"]
    if not devices:
        sys.stdout.write("no devices paired (conductor pair)\n")
    for d in devices:
        state = f"revoked {d['revokedAt']}" if d["revoked"] else "active"
        sys.stdout.write(f"{d['id']}  {d['name']}  [{','.join(d['scopes'])}]  paired "
                         f"{d['createdAt']}  {state}\n")
    return 0


def _notify_test(config: ConductorConfig) -> int:
    if not config.notify_sinks:
        return fail(PROG, "no notification sinks configured (--notify-url, BAA_NOTIFY_URLS or "
                    "BAA_NOTIFY_URLS_FILE)", 2)
    base = config.public_api_base or config.local_api
    results = trio.run(send_test_notifications, config.notify_sinks, base)
    for sink, error in results:
        outcome = "ok" if error is None else f"failed: {error}"
        sys.stdout.write(f"{sink.id}  {sink.scheme}://…  {outcome}\n")
    return 0 if all(error is None for _, error in results) else 1


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
    if args.command == "pair":
        return _pair(config, args)
    if args.command == "devices":
        return _devices(config, args)
    if args.command == "notify":
        return _notify_test(config)
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
