"""The event hub: numbering, the recent ring, and fan-out to subscribers with replay.

:meth:`EventHub.emit` is the only way an event comes into being. It is synchronous and never
blocks: it assigns the next ``seq`` and appends the event to the :class:`EventLog` buffer. Only
once group commit has made it durable (:attr:`EventLog.on_durable`) is it *published*: pushed to
the tail and the persisted recent ring and offered to every live subscriber with
``send_nowait``. So every reader (websocket, ``GET`` pages, the ring, the status snapshot) only
ever sees durable events — Kafka's high-watermark — and a seq a client has seen can never be
taken back or handed to another event by a crash. :attr:`EventHub.published_seq` is that mark.

Subscribers, replay, the live handoff and overflow are :mod:`codexd_trio.core.subscription`.
"""

from __future__ import annotations

import collections
from typing import Any

from codexd_trio.base.contracts import Event, Level, RecentEvents, now_iso
from codexd_trio.core.subscription import Published, Subscription, encode_published
from codexd_trio.store.documents import JsonDocument
from codexd_trio.store.eventlog import EventLog

__all__ = ["EventHub"]

DEFAULT_TAIL_SIZE = 1024
DEFAULT_REPLAY_PAGE = 256
class EventHub:
    """Numbers events, keeps the recent ring, and fans events out to subscribers.

    Attributes:
        last_seq: The seq of the newest event (0 before the first one ever).
    """

    def __init__(self, log: EventLog, recent_doc: JsonDocument[RecentEvents], *,
                 recent_size: int = 50, subscriber_queue: int = 1024,
                 tail_size: int = DEFAULT_TAIL_SIZE,
                 replay_page: int = DEFAULT_REPLAY_PAGE) -> None:
        """Create the hub over an open log.

        Args:
            log: The open event log; the hub continues its seq numbering.
            recent_doc: The persisted recent ring (``recent-events.json``); its current value
                seeds the ring. The hub only ``set``s it; the caller runs its writer.
            recent_size: How many events the recent ring keeps.
            subscriber_queue: Default bound of a live subscriber's queue.
            tail_size: How many recent events are kept in memory for the replay handoff.
            replay_page: How many events a replaying subscriber reads from the log at a time.
        """
        self._log = log
        self._recent_doc = recent_doc
        self._recent_size = max(0, recent_size)
        self._subscriber_queue = subscriber_queue
        self._replay_page = max(1, replay_page)
        self._ring: collections.deque[Event] = collections.deque(
            recent_doc.value.events[-self._recent_size:] if self._recent_size else [],
            maxlen=self._recent_size,
        )
        self._tail: collections.deque[Published] = collections.deque(maxlen=max(1, tail_size))
        self._live: set[Subscription] = set()
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self._published = log.durable_seq
        log.on_durable = self._publish

    @property
    def last_seq(self) -> int:
        """The newest event emitted (it may not be durable yet: internal bookkeeping only)."""
        return self._log.last_seq

    @property
    def published_seq(self) -> int:
        """The newest durable event: what any reader may see (``hello.lastSeq``, status)."""
        return self._published

    @property
    def log(self) -> EventLog:
        """The event log (e.g. ``await hub.log.wait_durable(event.seq)``)."""
        return self._log

    def emit(self, type: str, *, level: Level = "info", session_id: str | None = None,
             thread_id: str | None = None, turn_id: str | None = None, message: str = "",
             detail: dict[str, Any] | None = None) -> Event:
        """Create the next event and append it to the log. Never blocks.

        It reaches readers once it is durable (:meth:`_publish`); ``await hub.log.flush()``
        makes that happen now. A live subscriber whose queue is full is then dropped (its stream
        ends with :class:`Overflowed`); a slow consumer never slows ``emit``.

        Args:
            type: The event type, e.g. ``session.created``.
            level: ``info``, ``warn`` or ``error``.
            session_id: The session it concerns, if any.
            thread_id: The app-server thread, if any.
            turn_id: The turn, if any.
            message: One short human sentence.
            detail: Extra data (the app-server params for ``app-server.*`` events).

        Returns:
            The event, with its ``seq`` and ``at``.
        """
        event = Event(
            seq=self._log.last_seq + 1, at=now_iso(), type=type, level=level,
            sessionId=session_id, threadId=thread_id, turnId=turn_id, message=message,
            detail=detail if detail is not None else {},
        )
        self._log.append(event)
        return event

    def _publish(self, batch: list[Event]) -> None:
        """The log made ``batch`` durable: now readers may see it (Trio thread, synchronous)."""
        items = [encode_published(event) for event in batch]
        self._tail.extend(items)
        if self._recent_size:
            self._ring.extend(batch)
        # A copy: an overflowing subscriber removes itself from the set during the loop.
        for sub in list(self._live):
            sub._offer_batch(items)
        if batch:
            self._published = batch[-1].seq
            if self._recent_size:
                self._recent_doc.set(RecentEvents(events=list(self._ring)))

    def recent(self, *, limit: int | None = None, session_id: str | None = None) -> list[Event]:
        """The newest events of the recent ring, oldest first.

        Args:
            limit: At most this many (the newest ones).
            session_id: Only this session's events.
        """
        events = [e for e in self._ring if session_id is None or e.sessionId == session_id]
        if limit is not None:
            events = events[-limit:] if limit > 0 else []
        return events

    def subscribe(self, *, after: int | None = None, session_id: str | None = None,
                  queue_size: int | None = None) -> Subscription:
        """Open a subscription: replay after ``after`` (from the log), then live.

        The subscription is positioned at once, so no event emitted after this call is missed,
        even before the first ``__anext__``.

        Args:
            after: Replay every event with a larger seq first; ``None`` means live only. A value
                beyond ``last_seq`` delivers nothing until events pass it.
            session_id: Only this session's events (replay and live).
            queue_size: Bound of the live queue (default: the hub's ``subscriber_queue``).

        Returns:
            The subscription; use it as an async context manager.

        Resource handling:
            Exiting the subscription's ``async with`` unregisters it.
        """
        sub = Subscription(self, after=after, session_id=session_id,
                           queue_size=queue_size if queue_size is not None
                           else self._subscriber_queue)
        self._subscriptions.add(sub)
        if not self._closed:
            sub._try_attach()
        return sub

    def close_subscribers(self) -> None:
        """End every subscription normally (graceful shutdown).

        Each subscription's iteration ends with ``StopAsyncIteration`` (events still queued are
        not delivered), so the websocket layer can close with 1001. Subscriptions opened later
        end at once too.
        """
        self._closed = True
        for sub in list(self._subscriptions):
            sub._detach()
