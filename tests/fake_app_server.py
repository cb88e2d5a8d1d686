"""A tiny scriptable stand-in for ``codex app-server``, run as ``python fake_app_server.py``.

Speaks the same line-delimited JSON-RPC as the real server (no ``jsonrpc`` member, notifications
carry ``emittedAtMs``, ``-32600 Not initialized`` before ``initialize``). Test-only methods drive
the behaviours that are hard to provoke in the real binary:

* ``fake/echo`` → result is the params.
* ``fake/overloaded {"key", "times"}`` → ``-32001`` for the first ``times`` calls with that key
  (``times: -1`` = forever), then ``{"attempts": n}``.
* ``fake/ignore`` → never answered; emits ``fake/received {"id"}``.
* ``fake/hold`` → held until a ``fake/release`` notification, which answers every held request
  with ``{"outstanding": <held count at release>}``.
* ``fake/ask {"method", "params"}`` → sends a server request (ids from 0, colliding with the
  client's), waits for the reply, then answers with ``{"reply": <the reply message>}``.
* ``fake/notify {"count"}`` → ``count`` notifications ``fake/tick {"n"}``, then ``{}``.
* ``fake/garbage`` → writes a non-JSON line, then answers ``{}``.
* ``fake/exit {"code"}`` → exits at once, unanswered.
* ``fake/close-stdout`` → closes its stdout and lives on (a broken server), unanswered.

And a minimal conversation, enough for codexd to run sessions and turns on it:

* ``thread/start`` → a new thread id; ``thread/resume`` → notifies ``fake/resuming``, then
  after ``$FAKE_RESUME_DELAY`` seconds ``fake/resumed`` and the same thread.
* ``turn/start`` → notifies ``fake/turnStarted {"turnId"}`` at once (the turn is running: the
  model got it), answers after ``$FAKE_TURN_START_DELAY`` seconds, then sends ``turn/completed``
  with the agent message ``fake answer``. The delays open the window between a turn starting
  and codexd hearing about it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

out = sys.stdout.buffer


def write(message: dict[str, Any]) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def notify(method: str, params: dict[str, Any]) -> None:
    write({"method": method, "params": params, "emittedAtMs": int(time.time() * 1000)})


def main() -> int:
    initialized = False
    threads = turns = 0
    overload_counts: dict[str, int] = {}
    held: list[Any] = []
    next_server_id = 0
    asking: dict[Any, Any] = {}  # server request id -> client request id awaiting the reply
    for raw in sys.stdin.buffer:
        try:
            message = json.loads(raw)
        except ValueError:
            print(f"Failed to deserialize JSONRPCMessage: {raw!r}", file=sys.stderr)
            continue
        method = message.get("method")
        if method is None:
            # A reply to one of our server requests.
            client_id = asking.pop(message.get("id"), None)
            if client_id is not None:
                write({"id": client_id, "result": {"reply": message}})
            continue
        params = message.get("params")
        request_id = message.get("id")
        if request_id is None:
            if method == "fake/release":
                outstanding = len(held)
                for held_id in held:
                    write({"id": held_id, "result": {"outstanding": outstanding}})
                held.clear()
            continue
        if params is None:
            write(
                {"id": request_id, "error": {"code": -32600, "message": "missing field `params`"}}
            )
            continue
        if method == "initialize":
            if initialized:
                write(
                    {"id": request_id, "error": {"code": -32600, "message": "Already initialized"}}
                )
                continue
            initialized = True
            name = params["clientInfo"]["name"]
            version = params["clientInfo"]["version"]
            write(
                {
                    "id": request_id,
                    "result": {
                        "userAgent": f"{name}/0.0.0-fake ({name}; {version})",
                        "platformOs": sys.platform,
                        "pid": os.getpid(),
                    },
                }
            )
            notify("configWarning", {"summary": "fake server", "details": None})
            continue
        if not initialized:
            write({"id": request_id, "error": {"code": -32600, "message": "Not initialized"}})
        elif method == "fake/echo":
            write({"id": request_id, "result": params})
        elif method == "fake/overloaded":
            key = params["key"]
            count = overload_counts.get(key, 0)
            overload_counts[key] = count + 1
            if params["times"] < 0 or count < params["times"]:
                write(
                    {
                        "id": request_id,
                        "error": {"code": -32001, "message": "Server overloaded; retry later."},
                    }
                )
            else:
                write({"id": request_id, "result": {"attempts": count + 1}})
        elif method == "fake/ignore":
            notify("fake/received", {"id": request_id})
        elif method == "fake/hold":
            held.append(request_id)
        elif method == "fake/ask":
            server_id = next_server_id
            next_server_id += 1
            asking[server_id] = request_id
            write({"id": server_id, "method": params["method"], "params": params["params"]})
        elif method == "fake/notify":
            for n in range(params["count"]):
                notify("fake/tick", {"n": n})
            write({"id": request_id, "result": {}})
        elif method == "fake/garbage":
            out.write(b"this is not json\n")
            write({"id": request_id, "result": {}})
        elif method == "thread/start":
            threads += 1
            thread = {"id": f"thread-fake-{threads}", "cwd": params.get("cwd") or os.getcwd()}
            write({"id": request_id, "result": {
                "thread": thread, "cwd": thread["cwd"], "model": "fake-model",
                "approvalPolicy": "never", "sandbox": {"type": "readOnly"}}})
        elif method == "thread/resume":
            notify("fake/resuming", {"threadId": params["threadId"]})
            time.sleep(float(os.environ.get("FAKE_RESUME_DELAY", "0")))
            notify("fake/resumed", {"threadId": params["threadId"]})
            write({"id": request_id, "result": {"thread": {"id": params["threadId"]}}})
        elif method == "turn/start":
            turns += 1
            turn_id = f"turn-fake-{os.getpid()}-{turns}"
            notify("fake/turnStarted", {"turnId": turn_id, "threadId": params["threadId"]})
            time.sleep(float(os.environ.get("FAKE_TURN_START_DELAY", "0")))
            write({"id": request_id, "result": {"turn": {"id": turn_id, "status": "inProgress"}}})
            item = {"type": "agentMessage", "id": f"msg-{turn_id}", "text": "fake answer"}
            notify("turn/completed", {"threadId": params["threadId"], "turn": {
                "id": turn_id, "status": "completed", "items": [item]}})
        elif method == "fake/close-stdout":
            out.flush()
            os.close(1)
            while True:  # alive, but deaf and mute: only a signal ends it
                time.sleep(3600)
        elif method == "fake/exit":
            out.flush()
            os._exit(params["code"])
        else:
            write(
                {
                    "id": request_id,
                    "error": {
                        "code": -32600,
                        "message": f"Invalid request: unknown variant `{method}`",
                    },
                }
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
