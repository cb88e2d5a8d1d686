"""The durable, append-only event log (``events.jsonl``) with group commit.

One compact JSON object per line (:class:`~codexd_trio.contracts.Event`), ``\\n`` terminated,
strictly increasing ``seq``. :meth:`EventLog.append` only buffers; the :meth:`EventLog.run` task
writes and fsyncs everything buffered in one worker-thread call a few milliseconds after the first
event of a batch arrives (group commit), so a burst of events costs one ``fsync`` and an event is
on disk well within 50 ms.

Crash safety: a crash can tear only the tail of the last write. :meth:`EventLog.open` cuts a last
line that has no newline or does not decode (and logs it), so ``seq`` continues from the last
whole event.

Replay: :meth:`EventLog.open` builds a sparse index (``seq -> byte offset`` every
:data:`INDEX_EVERY` lines, extended as events are appended) so :meth:`EventLog.read_after` can
seek close to any position instead of scanning the file from the start. Events not yet durable
are kept in memory until their commit and are served from there, so a reader always sees one
contiguous sequence up to :attr:`EventLog.last_seq`.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import BinaryIO

import msgspec
import trio

from codexd_trio.contracts import Event
from codexd_trio.store import fsync_dir

__all__ = ["INDEX_EVERY", "EventLog", "EventLogCorrupt"]

logger = logging.getLogger(__name__)

INDEX_EVERY = 256
# Group commit: wait this long after the first buffered event so a burst shares one fsync.
COMMIT_WINDOW_S = 0.030
WRITE_RETRY_S = 1.0
FINAL_FLUSH_TIMEOUT_S = 5.0
# How many undecodable lines at the end of the file open() cuts before calling the file corrupt
# rather than torn: a torn write damages the tail of one write, never pages of events.
MAX_CUT_LINES = 64

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)


class _Head(msgspec.Struct):
    """The part of an event a replay needs to decide whether to decode the rest."""

    seq: int
    sessionId: str | None = None


_head_decoder = msgspec.json.Decoder(_Head)


class EventLogCorrupt(Exception):
    """The log cannot be opened: damaged beyond a torn last write (message says where)."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


def _encode_line(event: Event) -> bytes:
    return _encoder.encode(event) + b"\n"


class EventLog:
    """The append-only ``events.jsonl`` of one codexd.

    Create it with :meth:`open`, start :meth:`run` in the store nursery, :meth:`close` it after
    the writer has stopped.

    Attributes:
        path: The log file.
        last_seq: The seq of the last appended event (durable or still buffered); 0 when empty.
        durable_seq: The seq of the last event known to be fsynced.
    """

    def __init__(self, path: Path, file: BinaryIO, *, last_seq: int, end: int,
                 index: list[tuple[int, int]], lines_since_index: int) -> None:
        """Internal; use :meth:`open`."""
        self.path = path
        self.last_seq = last_seq
        self.durable_seq = last_seq
        self._file = file
        # Byte offset up to which the file holds whole, fsynced lines.
        self._durable_end = end
        # Byte offset the next appended line will have (durable end + pending bytes).
        self._append_end = end
        self._index_seqs = [seq for seq, _ in index]
        self._index_offsets = [off for _, off in index]
        self._lines_since_index = lines_since_index
        # Appended but not yet durable, oldest first: (event, encoded line).
        self._unsynced: collections.deque[tuple[Event, bytes]] = collections.deque()
        self._pending = trio.Event()
        self._durable_changed = trio.Event()
        self._commit_lock = trio.Lock()
        # Guards the file object between the Trio thread (close) and commit worker threads.
        self._io_lock = threading.Lock()
        self._closed = False

    # ----------------------------------------------------------------------------------------
    # Opening

    @classmethod
    def open(cls, path: Path) -> EventLog:
        """Open (creating if needed) the log, cutting a torn last line.

        Blocking (reads the whole file once to find the last seq and build the index): call it
        at startup, or through ``trio.to_thread.run_sync``.

        Args:
            path: The log file; its parent directories are created.

        Returns:
            The open log, positioned to append after the last whole event.

        Raises:
            EventLogCorrupt: More than a torn tail is damaged.
            OSError: The file cannot be created or opened.

        Resource handling:
            The returned log owns an open file; call :meth:`close`.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        # Binary read/write without O_APPEND so a failed write can be truncated away and retried.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        file = os.fdopen(fd, "r+b")
        # A freshly created log must survive a crash together with its first commits.
        fsync_dir(path.parent)
        try:
            return cls._scan(path, file)
        except BaseException:
            file.close()
            raise

    @classmethod
    def _scan(cls, path: Path, file: BinaryIO) -> EventLog:
        index: list[tuple[int, int]] = []
        since_index = INDEX_EVERY  # index the first line
        # (offset, line) of the last lines, to cut back through a damaged tail.
        tail: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=MAX_CUT_LINES + 1)
        offset = 0
        file.seek(0)
        for line in file:
            if since_index >= INDEX_EVERY and line.endswith(b"\n"):
                try:
                    index.append((_head_decoder.decode(line).seq, offset))
                    since_index = 0
                except (msgspec.ValidationError, msgspec.DecodeError):
                    pass  # damaged line: sample the next one instead
            since_index += 1
            tail.append((offset, line))
            offset += len(line)
        end = offset
        last_seq = 0
        cut = 0
        while tail:
            line_offset, line = tail[-1]
            if line.endswith(b"\n"):
                try:
                    last_seq = _head_decoder.decode(line).seq
                    break
                except (msgspec.ValidationError, msgspec.DecodeError):
                    pass
            tail.pop()
            end = line_offset
            cut += 1
            if cut > MAX_CUT_LINES:
                raise EventLogCorrupt(
                    path,
                    f"{path}: more than {MAX_CUT_LINES} damaged lines at the end "
                    f"(from byte {line_offset}); refusing to cut them",
                )
        if end != offset:
            logger.warning(
                "event log %s: cut %d torn/undecodable trailing line(s), %d bytes from offset %d; "
                "continuing after seq %d",
                path, cut, offset - end, end, last_seq,
            )
            file.truncate(end)
            file.flush()
            os.fsync(file.fileno())
            while index and index[-1][1] >= end:
                index.pop()
            since_index = 0
        return cls(path, file, last_seq=last_seq, end=end, index=index,
                   lines_since_index=since_index)

    # ----------------------------------------------------------------------------------------
    # Appending

    def append(self, event: Event) -> None:
        """Buffer ``event`` for the next group commit. Never blocks.

        Args:
            event: The next event; ``event.seq`` must be ``last_seq + 1``.
        """
        assert event.seq == self.last_seq + 1, (event.seq, self.last_seq)
        assert not self._closed, "append to a closed event log"
        line = _encode_line(event)
        if self._lines_since_index >= INDEX_EVERY:
            # Offsets first: a reader thread bisecting ``_index_seqs`` must always find the
            # matching offset already there.
            self._index_offsets.append(self._append_end)
            self._index_seqs.append(event.seq)
            self._lines_since_index = 0
        self._lines_since_index += 1
        self._append_end += len(line)
        self._unsynced.append((event, line))
        self.last_seq = event.seq
        self._pending.set()

    def _write_batch(self, data: bytes, start: int) -> None:
        # Worker thread. Writes at the known durable end; on failure cuts whatever part of the
        # batch landed so the retry does not leave a torn line in the middle of the log.
        with self._io_lock:
            if self._closed:
                raise OSError("event log is closed")
            try:
                self._file.seek(start)
                self._file.write(data)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    self._file.truncate(start)
                    self._file.flush()
                raise

    async def flush(self) -> None:
        """Write and fsync everything appended so far, now.

        Raises:
            OSError: The write failed; the events stay buffered for a retry.

        Cancellation:
            A commit already handed to the worker thread completes and is accounted for.
        """
        async with self._commit_lock:
            if not self._unsynced:
                return
            batch = list(self._unsynced)
            data = b"".join(line for _, line in batch)
            await trio.to_thread.run_sync(self._write_batch, data, self._durable_end)
            for _ in batch:
                self._unsynced.popleft()
            self._durable_end += len(data)
            self.durable_seq = batch[-1][0].seq
            self._durable_changed.set()
            self._durable_changed = trio.Event()

    async def wait_durable(self, seq: int) -> None:
        """Return once the event with ``seq`` (and every earlier one) is fsynced.

        Needs :meth:`run` (or a :meth:`flush`) to make progress.
        """
        while self.durable_seq < seq:
            await self._durable_changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The group-commit writer; a ``nursery.start`` target, ready at once.

        Sleeps while nothing is buffered; after the first appended event it waits a short commit
        window (~30 ms) and then writes and fsyncs the whole buffer in one worker-thread call.
        A failed write is logged and retried every second.

        Cancellation:
            On cancellation whatever is buffered gets a final write under a shielded scope with
            its own deadline (~5 s); then ``Cancelled`` propagates.
        """
        task_status.started()
        try:
            while True:
                await self._pending.wait()
                self._pending = trio.Event()
                if not self._unsynced:
                    continue
                await trio.sleep(COMMIT_WINDOW_S)
                try:
                    await self.flush()
                except OSError:
                    logger.exception("event log write failed; retrying in %.1f s", WRITE_RETRY_S)
                    self._pending.set()
                    await trio.sleep(WRITE_RETRY_S)
        finally:
            if self._unsynced:
                with trio.move_on_after(FINAL_FLUSH_TIMEOUT_S, shield=True) as scope:
                    try:
                        await self.flush()
                    except OSError:
                        logger.exception("final event log flush failed")
                if scope.cancelled_caught:
                    logger.error("final event log flush did not finish in time")

    # ----------------------------------------------------------------------------------------
    # Reading

    def _read_disk(self, after_seq: int, end: int, limit: int | None,
                   session_id: str | None) -> tuple[list[Event], int]:
        # Worker thread: a private read-only handle, so it never races the committer's seeks.
        # Only bytes below ``end`` (durable at call time) are read.
        i = bisect.bisect_right(self._index_seqs, after_seq + 1) - 1
        start = self._index_offsets[i] if i >= 0 else 0
        out: list[Event] = []
        last_seen = after_seq
        if start >= end:
            return out, last_seen
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            for line in f:
                if pos >= end:
                    break
                pos += len(line)
                try:
                    head = _head_decoder.decode(line)
                    if head.seq <= after_seq:
                        continue
                    last_seen = head.seq
                    if session_id is not None and head.sessionId != session_id:
                        continue
                    out.append(_event_decoder.decode(line))
                except (msgspec.ValidationError, msgspec.DecodeError):
                    logger.warning("event log %s: skipping undecodable line at byte %d",
                                   self.path, pos - len(line))
                    continue
                if limit is not None and len(out) >= limit:
                    break
        return out, last_seen

    async def read_after(self, after_seq: int, *, limit: int | None = None,
                         session_id: str | None = None) -> list[Event]:
        """Events with ``seq > after_seq``, in order, as the log stands at the call.

        Reads the durable part from disk in a worker thread (seeking via the sparse index) and
        adds the events still buffered in memory. Events appended after the call started are
        not included, so the result covers exactly ``(after_seq, last_seq at call]``.

        Args:
            after_seq: Only events with a larger seq.
            limit: At most this many events (counted after the session filter).
            session_id: Only events of this session.

        Returns:
            The events, oldest first.

        Cancellation:
            Safe; nothing is changed.
        """
        # Snapshot before the first checkpoint: bytes below ``end`` are on disk for good, and
        # every later event is in ``unsynced`` (contiguous with them).
        end = self._durable_end
        durable_seq = self.durable_seq
        unsynced = [ev for ev, _ in self._unsynced if ev.seq > after_seq]
        if limit is not None and limit <= 0:
            await trio.lowlevel.checkpoint()
            return []
        out: list[Event] = []
        if after_seq < durable_seq:
            out, _ = await trio.to_thread.run_sync(
                self._read_disk, after_seq, end, limit, session_id)
            if limit is not None and len(out) >= limit:
                return out
        else:
            await trio.lowlevel.checkpoint()
        for ev in unsynced:
            if ev.seq <= durable_seq:
                continue
            if session_id is not None and ev.sessionId != session_id:
                continue
            out.append(ev)
            if limit is not None and len(out) >= limit:
                break
        return out

    def close(self) -> None:
        """Close the file, first writing (synchronously) anything still buffered.

        Call after :meth:`run` has ended. Idempotent.

        Resource handling:
            Releases the log's file handle; the log cannot be used afterwards.
        """
        with self._io_lock:
            if self._closed:
                return
            try:
                if self._unsynced:
                    data = b"".join(line for _, line in self._unsynced)
                    self._file.seek(self._durable_end)
                    self._file.write(data)
                    self._file.flush()
                    os.fsync(self._file.fileno())
                    self._durable_end += len(data)
                    self.durable_seq = self._unsynced[-1][0].seq
                    self._unsynced.clear()
            finally:
                self._closed = True
                self._file.close()
