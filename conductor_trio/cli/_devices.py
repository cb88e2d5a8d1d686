"""``conductor pair``, ``devices`` and ``notify test`` (issue 25): a pairing code for a phone
(URL and QR code), the paired devices (``--revoke ID``), a test notification to every sink."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

import httpx
import trio

from conductor_trio._process import fail
from conductor_trio.config import ConductorConfig
from conductor_trio.notify.notifier import send_test_notifications

__all__ = ["devices", "notify_test", "pair"]

PROG = "conductor"
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


def pair(config: ConductorConfig, args: argparse.Namespace) -> int:
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


def devices(config: ConductorConfig, args: argparse.Namespace) -> int:
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


def notify_test(config: ConductorConfig) -> int:
    if not config.notify_sinks:
        return fail(PROG, "no notification sinks configured (--notify-url, BAA_NOTIFY_URLS or "
                    "BAA_NOTIFY_URLS_FILE)", 2)
    base = config.public_api_base or config.local_api
    results = trio.run(send_test_notifications, config.notify_sinks, base)
    for sink, error in results:
        outcome = "ok" if error is None else f"failed: {error}"
        sys.stdout.write(f"{sink.id}  {sink.scheme}://…  {outcome}\n")
    return 0 if all(error is None for _, error in results) else 1
