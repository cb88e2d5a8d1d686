"""The node's mode holds codexd's turn queues (issue 23).

The mode is the conductor's (``mode.json``); the queues are codexd's. While the node is
``paused`` or ``draining`` no queued turn may start, and that must hold whichever daemon
restarts. So codexd keeps a durable hold flag (``POST /v1/codexd/hold``, ``hold.json`` in its
state dir) and the conductor sets it to what its mode wants:

* on every mode change, at once (the answer says whether codexd confirmed it);
* when it starts, if its mode holds (asserted again: idempotent on codexd's side);
* whenever codexd's status (the heartbeat's probe, any view's) shows a hold that differs,
  e.g. codexd lost its state dir, or someone set the hold by hand;
* before it forwards a queued turn while the mode holds, so that turn cannot start early.

A push that fails (codexd down) is retried with a backoff until codexd answers, so the two
converge. Pushes are serialised and each sends the mode as it is when it goes out, so a pause
and a resume in quick succession cannot reach codexd in the wrong order.
"""

from __future__ import annotations

import logging

import trio

from codexd_trio.base.contracts import CodexdStatus, QueueHold
from codexd_trio.client import CodexdClient, CodexdError, CodexdUnavailable
from conductor_trio.mode import ModeStore

log = logging.getLogger("conductor.hold")

__all__ = ["HoldSync"]


class HoldSync:
    """Keeps codexd's queue hold equal to what the conductor's mode wants.

    Args:
        client: the conductor's codexd client.
        modes: the mode store.
        retry_s, retry_max_s: the backoff of a failing push.
    """

    def __init__(self, client: CodexdClient, modes: ModeStore, *, timeout_s: float = 10.0,
                 retry_s: float = 1.0, retry_max_s: float = 30.0) -> None:
        self.client = client
        self.modes = modes
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        # What codexd last said its hold is (an answer or its status); None: not known.
        self.confirmed: QueueHold | None = None
        self.last_error: str | None = None
        self.pushes = 0
        self._due = trio.Event()
        self._lock = trio.Lock()

    def wanted(self) -> tuple[bool, str | None]:
        """``(held, reason)`` for the current mode."""
        record = self.modes.current
        if record.mode == "running":
            return False, None
        return True, f"node {record.mode}" + (f": {record.reason}" if record.reason else "")

    @property
    def in_sync(self) -> bool:
        held, reason = self.wanted()
        return self.confirmed is not None and (self.confirmed.held, self.confirmed.reason) == (
            held, reason)

    def changed(self) -> None:
        """The mode changed (or a push failed): make codexd agree soon."""
        self._due.set()

    def observe(self, status: CodexdStatus) -> None:
        """Read codexd's hold from its status; push again if it differs from the mode's."""
        queue = status.snapshot.queue
        if queue is None:
            # A codexd without queues: it holds nothing, and a hold can only be pushed (and
            # refused) when the mode wants one.
            self.confirmed = QueueHold(held=False)
        else:
            self.confirmed = QueueHold(held=queue.held, reason=queue.holdReason)
        if not self.in_sync:
            self._due.set()

    async def push(self) -> bool:
        """Send the mode's hold to codexd now; whether codexd confirmed it. Never raises for
        an unreachable or refusing codexd (``last_error`` says why)."""
        async with self._lock:
            held, reason = self.wanted()
            try:
                with trio.fail_after(self.timeout_s):
                    hold = await self.client.set_hold(held, reason)
            except (CodexdError, CodexdUnavailable, trio.TooSlowError) as exc:
                self.last_error = str(exc) or "codexd did not answer in time"
                return False
            self.pushes += 1
            self.confirmed = hold
            self.last_error = None
            return (hold.held, hold.reason) == (held, reason)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Push whenever due, retrying a failed push with a backoff (a ``nursery.start``
        target, ready at once). A conductor whose mode holds asserts the hold at start."""
        if self.wanted()[0]:
            self._due.set()
        task_status.started()
        delay = self.retry_s
        while True:
            await self._due.wait()
            self._due = trio.Event()
            if self.in_sync or await self.push():
                delay = self.retry_s
                continue
            log.warning("cannot set codexd's queue hold (retrying in %.0f s): %s", delay,
                        self.last_error)
            await trio.sleep(delay)
            delay = min(self.retry_max_s, delay * 2)
            self._due.set()
