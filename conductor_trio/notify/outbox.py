"""The notification outbox: durable before the first try, sent once, bounded.

One append-only journal, ``<state>/conductor/notify/outbox.jsonl``, one JSON object a line:

* ``{"op":"add","entry":{id, sink, message, addedAt}}`` — a notification for one sink; its
  ``id`` is ``<message key>:<sink id>`` (``e<seq>:<sink>`` for a codexd event), so the same
  event read twice never adds the same notification twice (dedup by event seq and sink);
* ``{"op":"sent","id":…}`` — written after the sink accepted it;
* ``{"op":"dropped","id":…}`` — pushed out by the bound (oldest first), and counted;
* ``{"op":"cursor","seq":N}`` — the notifier has decided every codexd event up to ``N``.

An event's adds and the cursor that passes it are one append and one ``fsync``: after a crash
either both are there or neither, and an event after the cursor is decided again (its adds, if
they made it, are recognised by id). A sender records ``sent`` after each success: a SIGKILL
between a sink's answer and that record is the only way a notification goes out twice; a
notification never goes out zero times once added. At start the journal is read back (a torn
last line is ignored) and rewritten compactly when it has grown.

**Resource handling:** writes run in a worker thread under the outbox's own limiter (one
token): never the proxy's, never the event log's. The file is opened per write.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import msgspec
import trio

from codexd_trio.base.contracts import now_iso
from codexd_trio.base.files import append_synced, atomic_write_bytes
from conductor_trio.notify.messages import Message

__all__ = ["Entry", "Outbox", "new_entry"]

# Rewrite the journal at start when it is larger than this.
COMPACT_BYTES = 1024 * 1024


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    sink: str
    message: Message
    addedAt: str


class _Add(msgspec.Struct, frozen=True, tag_field="op", tag="add"):
    entry: Entry


class _Sent(msgspec.Struct, frozen=True, tag_field="op", tag="sent"):
    id: str


class _Dropped(msgspec.Struct, frozen=True, tag_field="op", tag="dropped"):
    id: str


class _Cursor(msgspec.Struct, frozen=True, tag_field="op", tag="cursor"):
    seq: int


_Line = _Add | _Sent | _Dropped | _Cursor
_decoder = msgspec.json.Decoder(_Line)
_encoder = msgspec.json.Encoder()


class Outbox:
    """Pending notifications per sink, and the notifier's cursor, over the journal.

    Args:
        path: the journal file.
        max_pending: notifications kept waiting at most; beyond, the oldest are dropped.
    """

    def __init__(self, path: Path, *, max_pending: int) -> None:
        self.path = path
        self.max_pending = max_pending
        self.cursor: int | None = None
        self.pending: OrderedDict[str, Entry] = OrderedDict()
        # Every id added since the journal was last compacted (pending, sent or dropped).
        self._known: set[str] = set()
        self._limiter = trio.CapacityLimiter(1)
        self._lock = trio.Lock()
        self._changed = trio.Event()
        self.dropped_by_sink: dict[str, int] = {}
        self._size = 0

    # -- start ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the journal back (blocking; at start) and compact it if it grew."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        self._size = len(raw)
        for line in raw.splitlines():
            try:
                item = _decoder.decode(line)
            except msgspec.MsgspecError:
                continue  # a torn last line (SIGKILL mid-append): never acknowledged
            if isinstance(item, _Add):
                self._known.add(item.entry.id)
                self.pending[item.entry.id] = item.entry
            elif isinstance(item, _Sent | _Dropped):
                self.pending.pop(item.id, None)
            else:
                self.cursor = item.seq
        if len(raw) > COMPACT_BYTES or (not raw.endswith(b"\n") and raw):
            self._compact()

    def _compact(self) -> None:
        lines: list[_Line] = [] if self.cursor is None else [_Cursor(self.cursor)]
        lines += [_Add(entry) for entry in self.pending.values()]
        data = b"".join(_encoder.encode(x) + b"\n" for x in lines)
        atomic_write_bytes(self.path, data)
        self._size = len(data)
        # Ids at or below the cursor are never decided again; the pending ones stay known.
        self._known = set(self.pending)

    # -- reading -------------------------------------------------------------------------------

    def knows(self, entry_id: str) -> bool:
        return entry_id in self._known

    def first_for(self, sink: str) -> Entry | None:
        return next((e for e in self.pending.values() if e.sink == sink), None)

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- writing -------------------------------------------------------------------------------

    async def add(self, entries: Iterable[Entry], cursor: int | None) -> list[Entry]:
        """Append new entries (those not known already) and the cursor, durably, in one write;
        then drop the oldest beyond the bound. Returns the entries dropped.

        **Cancellation:** the write finishes in its thread; memory changes only after it.
        """
        async with self._lock:
            fresh = [e for e in entries if e.id not in self._known]
            fresh = list({e.id: e for e in fresh}.values())
            overflow = max(0, len(self.pending) + len(fresh) - self.max_pending)
            victims = (list(self.pending.values()) + fresh)[:overflow]
            lines: list[_Line] = [_Add(e) for e in fresh]
            lines += [_Dropped(e.id) for e in victims]
            if cursor is not None and cursor != self.cursor:
                lines.append(_Cursor(cursor))
            if lines:
                await self._append(lines)
            for entry in fresh:
                self._known.add(entry.id)
                self.pending[entry.id] = entry
            for entry in victims:
                self.pending.pop(entry.id, None)
                self.dropped_by_sink[entry.sink] = self.dropped_by_sink.get(entry.sink, 0) + 1
            if cursor is not None:
                self.cursor = cursor
            if fresh:
                self._signal()
            await self._maybe_compact()
            return victims

    async def mark_sent(self, entry_id: str) -> None:
        """Record that the sink accepted ``entry_id`` (durable before it leaves the pending)."""
        async with self._lock:
            await self._append([_Sent(entry_id)])
            self.pending.pop(entry_id, None)
            await self._maybe_compact()

    async def _maybe_compact(self) -> None:
        # Under the lock, after memory caught up with the journal.
        if self._size > 4 * COMPACT_BYTES:
            await trio.to_thread.run_sync(self._compact, limiter=self._limiter)

    async def save_cursor(self, cursor: int) -> None:
        if cursor != self.cursor:
            await self.add((), cursor)

    async def _append(self, lines: list[_Line]) -> None:
        data = b"".join(_encoder.encode(x) + b"\n" for x in lines)
        await trio.to_thread.run_sync(self._append_blocking, data, limiter=self._limiter)

    def _append_blocking(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as file:
            end = file.seek(0, os.SEEK_END)
            append_synced(file, data, end)
            self._size = end + len(data)

    async def reset(self, cursor: int) -> None:
        """codexd's event log started over (a new state dir): forget ids keyed by old seqs,
        keep what is pending, and continue from ``cursor``."""
        async with self._lock:
            self.cursor = cursor
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(self._compact, limiter=self._limiter)


def new_entry(message: Message, sink: str) -> Entry:
    return Entry(id=f"{message.key}:{sink}", sink=sink, message=message, addedAt=now_iso())

