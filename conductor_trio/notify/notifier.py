"""The notifier: codexd's event stream in, the outbox, one sender per sink out.

::

    Notifier.run()
    ├── follow      codexd's events from the outbox's cursor (reconnects with backoff);
    │               each event that deserves a notification: its entries (one per sink that
    │               listens to that kind) and the cursor, appended durably in one write
    ├── cursor      saves the cursor past events that needed nothing (every 2 s, no fsync wait
    │               for the stream: replaying a few events after a crash costs nothing)
    ├── node        the lease role: the node turning degraded or losing the lead
    └── deliver×N   per sink, oldest first: send (Apprise in a worker thread under the
                    notifier's limiter), record "sent"; on failure retry with exponential
                    backoff and jitter (1 s .. 5 min), counting failures and retries

A failing sink delays only its own queue; the proxy and the relay never wait for any of it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import trio

from codexd_trio.base.contracts import Event, now_iso
from codexd_trio.client import CodexdClient, CodexdError, CodexdUnavailable, StreamOverflow
from conductor_trio.auth.actions import ActionLinks
from conductor_trio.config import ConductorConfig
from conductor_trio.contracts import NotificationsView, SinkView
from conductor_trio.notify.messages import Message, compose, node_message
from conductor_trio.notify.outbox import Outbox, new_entry
from conductor_trio.notify.send import send
from conductor_trio.sinks import NotifySink

__all__ = ["Notifier", "SinkStats"]

log = logging.getLogger("conductor.notify")

# Threads sending at once, all sinks together.
SEND_THREADS = 4
RETRY_MIN_S = 1.0
RETRY_MAX_S = 300.0
CURSOR_SAVE_S = 2.0
NODE_CHECK_S = 1.0


@dataclass
class SinkStats:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    last_sent_at: str | None = None


def retry_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: ``[0.5, 1) × min(max, min × 2^(attempt-1))``."""
    base = min(RETRY_MAX_S, RETRY_MIN_S * 2.0 ** max(0, attempt - 1))
    return float(base * (0.5 + rng() / 2))


class Notifier:
    """Notifications of one conductor.

    Args:
        config: the sinks and the outbox bound.
        client: codexd's client (the event stream).
        links: makes the approvals' Accept/Decline links.
        base: the address a person's phone reaches the conductor at (links, deep links).
        role: the lease role and its last error, for the node's own notifications.
    """

    def __init__(self, config: ConductorConfig, client: CodexdClient, links: ActionLinks,
                 *, base: Callable[[], str], role: Callable[[], tuple[str, str | None]]
                 ) -> None:
        self.sinks = config.notify_sinks
        self.client = client
        self.links = links
        self.base = base
        self.role = role
        self.outbox = Outbox(config.conductor_state / "notify" / "outbox.jsonl",
                             max_pending=config.notify_outbox_max)
        self.stats = {sink.id: SinkStats() for sink in self.sinks}
        self.limiter = trio.CapacityLimiter(SEND_THREADS)
        self._seen: int | None = None
        self.connected = False

    @property
    def path(self) -> Path:
        return self.outbox.path

    def load(self) -> None:
        """Read the outbox back (blocking; at start)."""
        if self.sinks:
            self.outbox.load()

    def view(self) -> NotificationsView:
        """``notifications`` of ``/v1/status``: per sink, its counts and its last error."""
        pending: dict[str, int] = {}
        for entry in self.outbox.pending.values():
            pending[entry.sink] = pending.get(entry.sink, 0) + 1
        return NotificationsView(
            following=self.connected,
            cursor=self.outbox.cursor,
            pending=len(self.outbox.pending),
            sinks=[SinkView(
                id=sink.id, scheme=sink.scheme, kinds=list(sink.kinds),
                pending=pending.get(sink.id, 0), sent=self.stats[sink.id].sent,
                failed=self.stats[sink.id].failed, retried=self.stats[sink.id].retried,
                dropped=self.outbox.dropped_by_sink.get(sink.id, 0),
                last_error=self.stats[sink.id].last_error,
                last_error_at=self.stats[sink.id].last_error_at,
                last_sent_at=self.stats[sink.id].last_sent_at,
            ) for sink in self.sinks],
        )

    # -- the loops -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Follow, decide and deliver until cancelled (returns at once without sinks)."""
        if not self.sinks:
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            for sink in self.sinks:
                nursery.start_soon(self._deliver, sink)
            nursery.start_soon(self._follow)
            nursery.start_soon(self._save_cursor)
            nursery.start_soon(self._watch_node)
            task_status.started()

    async def _follow(self) -> None:
        attempt = 0
        while True:
            try:
                after = self.outbox.cursor
                async with self.client.events(after=after) as stream:
                    attempt = 0
                    self.connected = True
                    last = stream.hello.lastSeq
                    if after is None:
                        # The first start: what happened before is history, not news.
                        await self.outbox.save_cursor(last)
                    elif last < after:
                        log.warning("codexd's event log starts over (last seq %d < cursor %d): "
                                    "following it from there", last, after)
                        await self.outbox.reset(last)
                        continue
                    async for event in stream:
                        await self._decide(event)
            except (CodexdUnavailable, CodexdError, StreamOverflow) as exc:
                log.debug("event stream for notifications: %s", exc)
            finally:
                self.connected = False
            attempt += 1
            await trio.sleep(retry_delay(min(attempt, 4)))

    def _link_maker(self, approval_id: str, deadline: float | None) -> dict[str, str]:
        base = self.base().rstrip("/")
        tokens = self.links.make(approval_id, not_after=deadline)
        return {d: f"{base}/v1/actions/{quote(approval_id, safe='')}/{d}?t={t}"
                for d, t in tokens.items()}

    async def _decide(self, event: Event) -> None:
        self._seen = event.seq
        message = compose(event, base=self.base(), links=self._link_maker)
        if message is not None:
            await self.queue(message, cursor=event.seq)

    async def queue(self, message: Message, *, cursor: int | None = None) -> None:
        """Address ``message`` to every sink that listens to its kind, durably."""
        entries = [new_entry(message, s.id) for s in self.sinks if message.kind in s.kinds]
        dropped = await self.outbox.add(entries, cursor)
        for entry in dropped:
            log.warning("notification %s dropped: the outbox holds at most %d",
                        entry.id, self.outbox.max_pending)

    async def _save_cursor(self) -> None:
        while True:
            await trio.sleep(CURSOR_SAVE_S)
            if self._seen is not None:
                await self.outbox.save_cursor(self._seen)

    async def _watch_node(self) -> None:
        before, _ = self.role()
        while True:
            await trio.sleep(NODE_CHECK_S)
            role, error = self.role()
            if role != before and (role == "degraded" or before == "leader"):
                key = f"n{time.time_ns() // 1_000_000}"
                await self.queue(node_message(key, role, before, error, self.base()))
            before = role

    async def _deliver(self, sink: NotifySink) -> None:
        stats = self.stats[sink.id]
        attempt = 0
        while True:
            entry = self.outbox.first_for(sink.id)
            if entry is None:
                await self.outbox.wait_changed()
                continue
            error = await send(sink, entry.message, entry.id, self.limiter)
            if error is None:
                await self.outbox.mark_sent(entry.id)
                stats.sent += 1
                stats.last_sent_at = now_iso()
                attempt = 0
                continue
            attempt += 1
            stats.failed += 1
            stats.last_error, stats.last_error_at = error, now_iso()
            log.warning("notification %s to sink %s (%s) failed (try %d): %s",
                        entry.id, sink.id, sink.scheme, attempt, error)
            stats.retried += 1
            await trio.sleep(retry_delay(attempt))


async def send_test_notifications(sinks: tuple[NotifySink, ...], base: str
                     ) -> list[tuple[NotifySink, str | None]]:
    """``conductor notify test``: one test notification to every sink, side by side."""
    limiter = trio.CapacityLimiter(SEND_THREADS)
    message = Message(key=f"test{time.time_ns()}", kind="test",
                      title="baa-conductor: test notification",
                      body="If you read this, notifications from this node reach you.",
                      click=f"{base.rstrip('/')}/console")
    results: dict[str, str | None] = {}

    async def one(sink: NotifySink) -> None:
        results[sink.id] = await send(sink, message, f"{message.key}:{sink.id}", limiter)

    async with trio.open_nursery() as nursery:
        for sink in sinks:
            nursery.start_soon(one, sink)
    return [(sink, results[sink.id]) for sink in sinks]

