"""The per-node conversation store: one compact record per settled turn, indexed by session.

What a record holds and how it is folded from the event log is :mod:`codexd_trio.core.conversation`;
this module keeps the bytes (file layout: :mod:`._conversation_files`).

* :meth:`ConversationStore.append` is synchronous and never blocks: the record is buffered and
  readable at once; the :meth:`ConversationStore.run` task writes and fsyncs buffered records
  with their index lines in a worker thread, then the checkpoint that claims them.
* Reads go by the index in memory: the last N turns of a session cost N reads of known offsets,
  never a scan (:meth:`ConversationStore.page` on the Trio thread, then :meth:`read`).
* Retention: segments are sealed at ``segment_bytes``; past ``retain_segments`` the oldest is
  removed with the records in it (the oldest turns of the node, whatever their session), and
  the index is rewritten without them.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
import trio

from codexd_trio.base.limiters import documents_limiter, reads_limiter
from codexd_trio.base.transcript import TranscriptItem, TranscriptTurn
from codexd_trio.store._conversation_files import (
    INDEX,
    Entry,
    append_at,
    load,
    read_at,
    remove_segments,
    rewrite_index,
    segment_path,
    write_checkpoint,
)

__all__ = ["DEFAULT_RETAIN_SEGMENTS", "DEFAULT_SEGMENT_BYTES", "ConversationStore", "PageRefs"]

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_RETAIN_SEGMENTS = 64
WRITE_RETRY_S = 1.0
FINAL_WRITE_TIMEOUT_S = 5.0

_json = msgspec.json.Encoder()


class _TurnLine(msgspec.Struct, frozen=True):
    turn: TranscriptTurn


class _ItemLine(msgspec.Struct, frozen=True):
    t: str
    item: TranscriptItem


_turn_line = msgspec.json.Decoder(_TurnLine)
_item_line = msgspec.json.Decoder(_ItemLine)


@dataclass(frozen=True)
class PageRefs:
    """A page of a session's records, taken on the Trio thread: read with :meth:`read`."""

    entries: list[Entry]
    # The ordinal to continue from (asc: the next to show; desc: the last shown), or None.
    next_ordinal: int | None
    # Bytes of records not yet on disk, by (segment, offset).
    buffered: dict[tuple[int, int], bytes]


class ConversationStore:
    """The records of every session of one codexd.

    **Resource handling:** :meth:`open` reads the index; :meth:`run` (in the store nursery)
    writes; :meth:`close` writes what is still buffered, synchronously.
    """

    def __init__(self, directory: Path, *, segment_bytes: int, retain_segments: int) -> None:
        """Internal; use :meth:`open`."""
        loaded = load(directory)
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._retain = max(1, retain_segments)
        self._sessions = loaded.sessions
        self._ordinals: dict[str, list[int]] = {
            sid: [e.ordinal for e in entries] for sid, entries in self._sessions.items()}
        self._turns: dict[str, set[str]] = {
            sid: {e.turn_id for e in entries} for sid, entries in self._sessions.items()}
        self._next_ordinal = loaded.next_ordinal
        self._segments = loaded.segments
        self._active = self._segments[-1]
        self._end = loaded.active_end
        self._index_end = loaded.index_end
        #: Where start-up folds the event log from (every turn settled at or below is here).
        self.resume_seq = loaded.resume_seq
        # Appended, not yet on disk: record lines by position, index lines in order.
        self._buffered: dict[tuple[int, int], bytes] = {}
        self._pending_records: list[tuple[int, int, bytes]] = []
        self._pending_index: list[bytes] = []
        self._dirty = trio.Event()
        self._write_lock = trio.Lock()
        # What the next checkpoint claims (the fold's resume point; set by the fold's owner).
        self.claim: Callable[[], int] = lambda: self.resume_seq
        self.write_error: str | None = None

    @classmethod
    def open(cls, directory: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
             retain_segments: int = DEFAULT_RETAIN_SEGMENTS) -> ConversationStore:
        """Open (creating if needed) the store; blocking: call it at start-up."""
        return cls(directory, segment_bytes=segment_bytes, retain_segments=retain_segments)

    # ----------------------------------------------------------------------------------------
    # Writing (Trio thread, synchronous)

    def has(self, session_id: str, turn_id: str) -> bool:
        return turn_id in self._turns.get(session_id, ())

    def next_ordinal(self, session_id: str) -> int:
        return self._next_ordinal.get(session_id, 0)

    def count(self, session_id: str) -> int:
        return len(self._sessions.get(session_id, ()))

    def turn_ids(self, session_id: str) -> list[str]:
        return [e.turn_id for e in self._sessions.get(session_id, ())]

    def _put_line(self, line: bytes) -> tuple[int, int, int]:
        where = (self._active, self._end, len(line))
        self._buffered[(self._active, self._end)] = line
        self._pending_records.append((self._active, self._end, line))
        self._end += len(line)
        return where

    def append(self, session_id: str, turn: TranscriptTurn, whole: dict[str, TranscriptItem],
               seq: int) -> bool:
        """Buffer a settled turn's record (``turn`` as a page shows it, ``whole`` the cut items
        whole); False if the session already has it (a refold after a restart)."""
        if self.has(session_id, turn.turnId):
            return False
        full: dict[str, tuple[int, int, int]] = {}
        for item_id, item in whole.items():
            full[item_id] = self._put_line(_json.encode(
                {"k": "i", "s": session_id, "t": turn.turnId, "item": item}) + b"\n")
        ordinal = self.next_ordinal(session_id)
        segment, offset, length = self._put_line(_json.encode(
            {"k": "t", "s": session_id, "o": ordinal, "q": seq, "turn": turn}) + b"\n")
        entry = Entry(turn_id=turn.turnId, ordinal=ordinal, segment=segment, offset=offset,
                      length=length, full=full)
        self._sessions.setdefault(session_id, []).append(entry)
        self._ordinals.setdefault(session_id, []).append(ordinal)
        self._turns.setdefault(session_id, set()).add(turn.turnId)
        self._next_ordinal[session_id] = ordinal + 1
        self._pending_index.append(entry.index_line(session_id))
        self._dirty.set()
        return True

    def remove(self, session_id: str, turn_ids: list[str]) -> list[str]:
        """Take turns out of a session's history (a rollback); returns the ones it had."""
        held = self._turns.get(session_id, set())
        gone = [t for t in turn_ids if t in held]
        if not gone:
            return []
        entries = [e for e in self._sessions[session_id] if e.turn_id not in gone]
        self._sessions[session_id] = entries
        self._ordinals[session_id] = [e.ordinal for e in entries]
        held.difference_update(gone)
        self._pending_index.append(_json.encode({"s": session_id, "rm": gone}) + b"\n")
        self._dirty.set()
        return gone

    # ----------------------------------------------------------------------------------------
    # Reading

    def page(self, session_id: str, *, order: Literal["asc", "desc"], start: int | None,
             limit: int) -> PageRefs:
        """Up to ``limit`` records of a session from ordinal ``start`` (asc: at or after it;
        desc: below it; None: from the first / the newest). Synchronous: a consistent view."""
        entries = self._sessions.get(session_id, [])
        ordinals = self._ordinals.get(session_id, [])
        if order == "asc":
            i = bisect.bisect_left(ordinals, start or 0)
            chosen = entries[i:i + limit]
            following = entries[i + limit].ordinal if i + limit < len(entries) else None
        else:
            j = len(entries) if start is None else bisect.bisect_left(ordinals, start)
            chosen = entries[max(0, j - limit):j][::-1]
            following = chosen[-1].ordinal if chosen and j - limit > 0 else None
        return PageRefs(chosen, following, self._buffered_for(chosen))

    def _buffered_for(self, entries: list[Entry]) -> dict[tuple[int, int], bytes]:
        if not self._buffered:
            return {}
        out = {}
        for e in entries:
            for g, p, _ in [(e.segment, e.offset, e.length), *e.full.values()]:
                line = self._buffered.get((g, p))
                if line is not None:
                    out[(g, p)] = line
        return out

    def find_whole(self, session_id: str, item_id: str) -> PageRefs | None:
        """The record holding a cut item's whole version, if one does."""
        for e in reversed(self._sessions.get(session_id, [])):
            if item_id in e.full:
                return PageRefs([e], None, self._buffered_for([e]))
        return None

    def newest_first(self, session_id: str, batch: int, before: int | None) -> PageRefs:
        return self.page(session_id, order="desc", start=before, limit=batch)

    async def read(self, refs: PageRefs) -> list[TranscriptTurn]:
        """The turns of a page, in the page's order."""
        lines = await self._read_lines(refs, [(e.segment, e.offset, e.length)
                                              for e in refs.entries])
        return [_turn_line.decode(line).turn for line in lines]

    async def read_whole(self, refs: PageRefs, item_id: str) -> tuple[str, TranscriptItem]:
        entry = refs.entries[0]
        (line,) = await self._read_lines(refs, [entry.full[item_id]])
        got = _item_line.decode(line)
        return got.t, got.item

    async def _read_lines(self, refs: PageRefs, wheres: list[tuple[int, int, int]]
                          ) -> list[bytes]:
        # Files are opened here, on the Trio thread: retention never unlinks one under a read.
        fds: dict[int, int] = {}
        try:
            for g, p, _ in wheres:
                if (g, p) not in refs.buffered and g not in fds:
                    fds[g] = os.open(segment_path(self.directory, g), os.O_RDONLY)
            if not fds:
                await trio.lowlevel.checkpoint()
                return [refs.buffered[(g, p)] for g, p, _ in wheres]

            def read_all() -> list[bytes]:
                return [refs.buffered.get((g, p)) or read_at(fds[g], p, n) for g, p, n in wheres]

            return await trio.to_thread.run_sync(read_all, limiter=reads_limiter())
        finally:
            for fd in fds.values():
                os.close(fd)

    # ----------------------------------------------------------------------------------------
    # The writer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write buffered records soon after they are appended; a ``nursery.start`` target.

        Cancellation:
            On cancellation whatever is buffered gets a final shielded write (~5 s deadline).
        """
        task_status.started()
        try:
            while True:
                await self._dirty.wait()
                self._dirty = trio.Event()
                # Let a burst of settles share one write.
                await trio.sleep(0.05)
                try:
                    await self.flush()
                    self.write_error = None
                except OSError as exc:
                    logger.exception("conversation store write failed; retrying in %.1f s",
                                     WRITE_RETRY_S)
                    self.write_error = str(exc.strerror or exc)
                    self._dirty.set()
                    await trio.sleep(WRITE_RETRY_S)
        finally:
            with trio.move_on_after(FINAL_WRITE_TIMEOUT_S, shield=True):
                try:
                    await self.flush()
                except OSError:
                    logger.exception("final conversation store write failed")

    async def flush(self) -> None:
        """Make every appended record durable, then the checkpoint that claims them."""
        async with self._write_lock:
            records, index = self._pending_records, self._pending_index
            claim = self.claim()
            if not records and not index and claim == self.resume_seq:
                return
            self._pending_records, self._pending_index = [], []
            rotate = self._end >= self._segment_bytes
            index_end = self._index_end
            try:
                await trio.to_thread.run_sync(self._write, records, index, index_end, claim,
                                              limiter=documents_limiter())
            except BaseException:
                # Not written: keep them for the next try, oldest first.
                self._pending_records[:0] = records
                self._pending_index[:0] = index
                raise
            self._index_end += sum(len(line) for line in index)
            self.resume_seq = claim
            for g, p, _ in records:
                self._buffered.pop((g, p), None)
            if rotate:
                await self._rotate()

    def _write(self, records: list[tuple[int, int, bytes]], index: list[bytes], index_end: int,
               claim: int) -> None:
        by_segment: dict[int, list[tuple[int, bytes]]] = {}
        for g, p, line in records:
            by_segment.setdefault(g, []).append((p, line))
        for g, lines in by_segment.items():
            append_at(segment_path(self.directory, g), lines[0][0], b"".join(x for _, x in lines))
        if index:
            append_at(self.directory / INDEX, index_end, b"".join(index))
        write_checkpoint(self.directory, claim)

    async def _rotate(self) -> None:
        """Seal the active segment; remove the oldest past the count kept."""
        self._active += 1
        self._end = 0
        self._segments.append(self._active)
        drop = self._segments[:-self._retain] if len(self._segments) > self._retain else []
        if not drop:
            return
        self._segments = self._segments[len(drop):]
        gone = set(drop)
        for sid, entries in self._sessions.items():
            kept = [e for e in entries
                    if e.segment not in gone and not any(w[0] in gone for w in e.full.values())]
            if len(kept) != len(entries):
                self._sessions[sid] = kept
                self._ordinals[sid] = [e.ordinal for e in kept]
                self._turns[sid] = {e.turn_id for e in kept}
        snapshot = {sid: list(entries) for sid, entries in self._sessions.items() if entries}
        self._index_end = await trio.to_thread.run_sync(
            rewrite_index, self.directory, snapshot, limiter=documents_limiter())
        await trio.to_thread.run_sync(remove_segments, self.directory, drop,
                                      limiter=documents_limiter())
        logger.info("conversation store: removed %d old record segment(s)", len(drop))

    def close(self) -> None:
        """Write what is buffered, synchronously (after :meth:`run` ended). Idempotent."""
        if self._pending_records or self._pending_index:
            records, index = self._pending_records, self._pending_index
            self._pending_records, self._pending_index = [], []
            try:
                self._write(records, index, self._index_end, self.claim())
            except OSError:
                logger.exception("conversation store: final write failed")
                return
            self._index_end += sum(len(line) for line in index)
            self._buffered.clear()
