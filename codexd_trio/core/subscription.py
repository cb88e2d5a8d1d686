"""Subscribers of the event hub (:class:`~codexd_trio.core.hub.EventHub`): replay, then live.

Replay and the live handoff
---------------------------
A :class:`Subscription` has a *cursor*: every event with ``seq <= cursor`` has been handed to the
consumer, is waiting in the subscription's small local buffer, or was filtered out. It is in one
of two modes:

* **replaying** — not registered for live events at all. When its local buffer runs dry it first
  tries to *attach* (below); if it cannot, it reads the next page (``replay_page`` events) after
  the cursor from the log with :meth:`EventLog.read_after`, which returns exactly the events in
  ``(cursor, durable_seq at call]``, and advances the cursor.
* **live** — registered with a bounded memory channel that publishing feeds.

The hub keeps an in-memory *tail* of the last ``tail_size`` published events. A subscription can
attach as soon as its cursor is within that tail (or at ``published_seq``): in one synchronous
step (no checkpoint, so no publish can interleave) it copies the tail events after its cursor
into its local buffer, moves its cursor to ``published_seq`` and registers its channel. Every
later publish goes to the channel, so the handoff has no gap and no duplicate, however fast
events are being committed.

Memory is bounded per subscriber by ``max(replay_page, tail_size)`` buffered events plus
``queue_size`` queued ones (plus one commit, see Overflow): a subscriber replaying a million
events holds one page at a time and is not registered for live events until it has caught up.
Replay reads run in worker threads, so they never slow ``emit``; if events arrive faster than a
replay can read them, the replay keeps paging (bounded memory, unbounded patience).

Encoding once: publishing encodes each event to its JSON text once; the tail, the live queues
and :meth:`Subscription.next_batch` carry that text beside the event, so ten websocket
subscribers share one encoding instead of encoding the event ten times (the profile of issue 16
had that at 8 % of codexd's CPU during a burst).

Overflow: when a commit is published to a live subscriber that still holds ``queue_size`` or
more events from earlier commits, the subscriber is dropped at once and its next ``__anext__``
raises :class:`Overflowed` carrying the last seq it reached (``lastDeliveredSeq``);
reconnecting with ``after=`` that seq loses nothing. With a session filter that position is
still in the global seq numbering. The bound is checked per commit, not per
event: the log sizes a commit by load (a 5 000-delta burst makes commits of 1 000+ events while
the loop is busy), and the hub hands a commit over in one synchronous step, so a per-event bound
dropped every subscriber, the fast ones included, whenever one commit alone outgrew the queue
(issue 16). A subscriber that keeps up takes each commit before the next one; one that does not
is dropped. A queue holds at most ``queue_size`` events plus one commit's worth, references to
the events the hub shares among all subscribers.
"""

from __future__ import annotations

import collections
import math
from types import TracebackType
from typing import TYPE_CHECKING

import msgspec
import trio

from codexd_trio.base.contracts import Event

if TYPE_CHECKING:
    from codexd_trio.core.hub import EventHub

__all__ = ["BATCH_MAX_BYTES", "BATCH_MAX_EVENTS", "Overflowed", "Published", "Subscription",
           "encode_published"]

# The most one ``?batch=1`` frame holds (see Subscription.next_batch).
BATCH_MAX_EVENTS = 4096
BATCH_MAX_BYTES = 512 * 1024

# An event and its compact JSON text (the websocket frame's payload), encoded once on publish.
Published = tuple[Event, str]

_encoder = msgspec.json.Encoder()


def encode_published(event: Event) -> Published:
    """The event with its compact JSON text, encoded once for every subscriber."""
    return event, _encoder.encode(event).decode()


def _utf8_len(text: str) -> int:
    # str.isascii() is O(1) for CPython's compact strings, and almost every event is ASCII.
    return len(text) if text.isascii() else len(text.encode())


class Overflowed(Exception):
    """A subscriber fell too far behind and was dropped.

    Attributes:
        last_delivered_seq: The seq the subscriber had reached: every (matching) event up to it
            was handed over. Resubscribe with ``after=last_delivered_seq``.
    """

    def __init__(self, last_delivered_seq: int) -> None:
        super().__init__(f"subscriber overflowed after seq {last_delivered_seq}")
        self.last_delivered_seq = last_delivered_seq


class Subscription:
    """One consumer's view of the event stream: replay after a seq, then live.

    Use it as ``async with hub.subscribe(...) as sub: async for event in sub: ...``. Events come
    in seq order without gaps or duplicates (among those matching the session filter). Not safe
    for two tasks to iterate at once.

    Attributes:
        last_seq: The hub's ``published_seq`` when subscribed (``hello.lastSeq``).
        replay_from: The first seq that can be delivered (``hello.replayFrom``).
        session_id: The session filter, or ``None`` for every event.
    """

    def __init__(self, hub: EventHub, *, after: int | None, session_id: str | None,
                 queue_size: int) -> None:
        """Internal; use :meth:`EventHub.subscribe`."""
        self._hub = hub
        self.session_id = session_id
        self.last_seq = hub.published_seq
        # Replay cannot start before the oldest retained event (older segments were dropped);
        # ``replay_from`` tells the client where it really starts.
        cursor = hub.published_seq if after is None else max(after, hub._log.first_seq - 1, 0)
        self.replay_from = cursor + 1
        self._cursor = cursor
        self._delivered = cursor
        self._buffer: collections.deque[Published] = collections.deque()
        self._queue_size = max(1, queue_size)
        self._send: trio.MemorySendChannel[Published] | None = None
        self._recv: trio.MemoryReceiveChannel[Published] | None = None
        self._overflowed = False
        self._ended = False

    # -- hub side (synchronous, Trio thread) ---------------------------------------------------

    def _matches(self, event: Event) -> bool:
        return self.session_id is None or event.sessionId == self.session_id

    def _try_attach(self) -> bool:
        hub = self._hub
        if self._cursor < hub.published_seq:
            tail = hub._tail
            if not tail or tail[0][0].seq > self._cursor + 1:
                return False
            self._buffer.extend(p for p in tail if p[0].seq > self._cursor and self._matches(p[0]))
            self._cursor = hub.published_seq
        # A cursor beyond published_seq (``after`` in the future) stays: live events up to it
        # are not offered.
        # Unbounded: the bound is checked per commit in _offer_batch (see the module docstring).
        self._send, self._recv = trio.open_memory_channel[Published](math.inf)
        hub._live.add(self)
        return True

    def _offer_batch(self, items: list[Published]) -> None:
        send = self._send
        assert send is not None
        if send.statistics().current_buffer_used >= self._queue_size:
            self._overflowed = True
            self._detach()
            return
        cursor, session_id = self._cursor, self.session_id
        for item in items:
            event = item[0]
            if event.seq > cursor and (session_id is None or event.sessionId == session_id):
                send.send_nowait(item)

    def _detach(self) -> None:
        self._hub._live.discard(self)
        if self._send is not None:
            self._send.close()

    def _end(self) -> None:
        self._ended = True
        self._detach()
        self._hub._subscriptions.discard(self)

    # -- consumer side --------------------------------------------------------------------------

    async def _read_page(self) -> None:
        hub = self._hub
        page_size = hub._replay_page
        # read_after snapshots the log before its first checkpoint, so ``upto`` is exactly the
        # end of the range it covers (durable_seq, which is published_seq).
        upto = hub.published_seq
        page = await hub._log.read_after(self._cursor, limit=page_size, session_id=self.session_id)
        self._buffer.extend(encode_published(e) for e in page)
        if len(page) >= page_size:
            self._cursor = page[-1].seq
        else:
            self._cursor = max(self._cursor, upto)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        """The next event.

        Raises:
            Overflowed: The subscriber fell behind and was dropped.
            StopAsyncIteration: The hub closed its subscribers (graceful shutdown), or the
                subscription was exited.

        Cancellation:
            Safe: no event is lost; a cancelled call hands nothing over, and the next call
            continues where this one stopped.
        """
        return (await self._next())[0]

    async def next_batch(self, *, max_events: int = BATCH_MAX_EVENTS,
                         max_bytes: int = BATCH_MAX_BYTES) -> list[Published]:
        """The next event (waiting for it) plus every following one available right now.

        What a websocket frame of ``?batch=1`` carries: a burst is handed over in a few batches
        rather than one event at a time. At most ``max_events``, and no event is added that
        would take the JSON texts past ``max_bytes`` of UTF-8 (the first one always comes,
        however large): a batch frame is never larger than the largest single-event frame or
        half a MiB, so a client's message size limit (trio-websocket's 1 MiB) holds for both
        framings. The budget is large because a batch must keep up with a burst: the log
        commits whatever the loop emitted meanwhile (1 000+ events a commit in a burst), and a
        subscriber that takes less than that per frame falls behind by the difference every
        commit until it overflows.

        Returns:
            ``(event, JSON text)`` pairs in seq order; an empty list once the stream ended
            normally (where ``__anext__`` raises ``StopAsyncIteration``).

        Raises:
            Overflowed: The subscriber fell behind and was dropped; events still waiting are
                not handed over (resume after ``last_delivered_seq``), as with ``__anext__``.

        Cancellation:
            Safe, as ``__anext__``: a cancelled call hands nothing over.
        """
        try:
            first = await self._next()
        except StopAsyncIteration:
            return []
        batch = [first]
        size = _utf8_len(first[1])
        while len(batch) < max_events:
            item = self._next_nowait()
            if item is None:
                break
            length = _utf8_len(item[1])
            if size + length > max_bytes:
                # Not this frame: back to the front of the local buffer, which is always read
                # before the live queue, so the order stays.
                self._buffer.appendleft(item)
                self._delivered = batch[-1][0].seq
                break
            batch.append(item)
            size += length
        return batch

    def _next_nowait(self) -> Published | None:
        # What is already here without waiting or reading the log; None otherwise. No checks of
        # overflow/close here: the next blocking call reports them.
        if self._overflowed or self._ended or self._hub._closed:
            return None
        if self._buffer:
            item = self._buffer.popleft()
        elif self._recv is not None:
            try:
                item = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return None
        else:
            return None
        self._delivered = item[0].seq
        return item

    async def _next(self) -> Published:
        await trio.lowlevel.checkpoint()
        while True:
            if self._overflowed:
                raise Overflowed(self._delivered)
            if self._ended or self._hub._closed:
                raise StopAsyncIteration
            if self._buffer:
                item = self._buffer.popleft()
                self._delivered = item[0].seq
                return item
            # Buffer empty: everything up to the cursor was handed over or filtered out.
            self._delivered = max(self._delivered, self._cursor)
            if self._recv is None:
                if not self._try_attach():
                    await self._read_page()
                continue
            try:
                item = await self._recv.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                continue  # overflowed or closed: the checks above say which
            self._delivered = item[0].seq
            return item

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._end()
        if self._recv is not None:
            await self._recv.aclose()
