"""What every daemon process of the node shares: the ready line, the graceful-stop signals, and
unwrapping exception groups for a one-line error.

The ready line: a daemon started with port 0 prints exactly one JSON line on stdout once it
listens, ``{"ready": true, "service": "codexd", "url": "http://127.0.0.1:PORT", "pid": N}``, so
scripts, tests and ``scripts/up.sh`` learn the bound URL from the process itself, never by
sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import trio

_log = logging.getLogger("baa.process")


class NotReady(RuntimeError):
    """The process closed its stdout (exited) before it printed its ready line."""


def print_ready(service: str, url: str) -> None:
    """Print this process's ready line (flushed at once)."""
    line = {"ready": True, "service": service, "url": url, "pid": os.getpid()}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def follow_ready_line(
    process: trio.Process,
    lines: list[str] | None = None,
    *,
    task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read ``process``'s stdout; report the ready line's data, then keep draining to EOF.

    A ``nursery.start`` target: ``ready = await nursery.start(follow_ready_line, process)``.
    Draining after the ready line keeps a chatty daemon from blocking on a full pipe. Every line
    is appended to ``lines`` when given.

    Raises:
        NotReady: stdout ended before a ready line (from ``nursery.start``).

    Cancellation: stops reading; the pipe stays open for its owner to close.
    """
    assert process.stdout is not None
    reported = False
    buffer = b""
    async for chunk in process.stdout:
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode(errors="replace")
            if lines is not None:
                lines.append(line)
            if not reported and line.startswith("{"):
                with suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict) and data.get("ready") is True:
                        reported = True
                        task_status.started(data)
    if not reported:
        raise NotReady(f"process {process.pid} exited before it printed its ready line")


async def stop_on_signal(
    begin_stop: Callable[[], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``begin_stop`` on the first SIGTERM or SIGINT (a graceful stop); log later ones.

    Runs until cancelled: the handlers stay installed during the whole graceful stop, so a
    second signal (an impatient service manager, a second Ctrl-C) cannot restore the default
    action and kill the process before its final flush. Only SIGKILL does that.

    Resource handling: the signal handlers are installed for the life of this task only.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        stopping = False
        async for signum in signals:
            if stopping:
                _log.warning(
                    "received %s again while stopping gracefully; still stopping",
                    signal.Signals(signum).name,
                )
                continue
            stopping = True
            begin_stop()


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first non-group exception inside ``group`` (for a one-line error message)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
