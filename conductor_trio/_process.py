"""What both daemons' ``start`` commands share: the ready line and the SIGTERM watcher."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import trio

from codexd_trio.readyline import print_ready

__all__ = ["fail", "first_leaf", "print_ready", "stop_on_signal"]


async def stop_on_signal(
    begin_stop: Callable[[], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``begin_stop`` on the first SIGTERM or SIGINT (a graceful stop), then return.

    **Resource handling:** the signal handlers are installed for the life of this task only.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            begin_stop()
            return


def fail(prog: str, message: str, status: int) -> int:
    """Print ``prog: message`` as one line on stderr and return ``status``."""
    sys.stderr.write(f"{prog}: {message}\n")
    sys.stderr.flush()
    return status


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first non-group exception inside ``group`` (for a one-line error message)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
