"""The durable, append-only event log (``events.jsonl``) with group commit.

One compact JSON object per line (:class:`~codexd_trio.base.contracts.Event`), ``\\n`` terminated,
strictly increasing ``seq``. :meth:`EventLog.append` only buffers; the :meth:`EventLog.run` task
writes and syncs everything buffered in one worker-thread call as soon as the appending tasks
have yielded (group commit without a fixed window): an idle log commits at once, and under load
the events appended while one commit is in the worker thread share the next sync. Each
committed batch is handed to :attr:`EventLog.on_durable`: subscribers only ever see durable
events, so a seq a client has seen is never taken back or reused by a crash.

Disk format: the active file reserves space ahead of its data (zero bytes, see
``_eventlog_segment``) so a commit is a pure data sync (``fdatasync``); **the data ends at the
first zero byte**. Sealed segments, and the active file after a clean stop, are cut back to their
data: plain JSON lines.

Crash safety: a crash can tear only the tail of the last write. :meth:`EventLog.open` finds the
end of the data (the first zero byte), cuts a last line that has no newline or does not decode
(and logs it) and cuts the file back to what remains, so ``seq`` continues from the last whole
event and everything after it reads as zeros again.

Retention: the active file is ``events.jsonl``. Once it holds ``segment_bytes`` it is sealed —
renamed to ``events-<first seq, 12 digits>.jsonl`` — and a new active file starts; only the
newest ``retain_segments`` sealed segments are kept, so the log's size is bounded for a daemon
that runs for months. :attr:`EventLog.first_seq` is the oldest event still retained.

Replay: :meth:`EventLog.open` builds a sparse index (``seq -> byte offset`` every
:data:`INDEX_EVERY` lines, extended as events are appended) so :meth:`EventLog.read_after` can
seek close to any position instead of scanning the file from the start. Readers see durable
events only: one contiguous sequence up to :attr:`EventLog.durable_seq`.

Threads: commits use :func:`~codexd_trio.base.limiters.journal_limiter` and reads
:func:`~codexd_trio.base.limiters.reads_limiter`, so a wave of replays cannot delay a commit.
A commit runs in a worker thread the log owns: one at a time, never abandoned; a cancelled
caller stops waiting, the commit goes on and is accounted for when it returns (see
:class:`_Commit`).
"""

from __future__ import annotations

import bisect
import collections
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import trio

from codexd_trio.base.contracts import Event
from codexd_trio.base.limiters import reads_limiter
from codexd_trio.store import _eventlog_segment as segment
from codexd_trio.store._eventlog_commit import GroupCommit, _Commit
from codexd_trio.store._eventlog_files import (
    INDEX_EVERY,
    EventLogCorrupt,
    _encode_line,
    find_segments,
    last_seq_of,
    read_lines,
    scan_active,
)

__all__ = [
    "DEFAULT_RETAIN_SEGMENTS",
    "DEFAULT_SEGMENT_BYTES",
    "INDEX_EVERY",
    "EventLog",
    "EventLogCorrupt",
]

logger = logging.getLogger(__name__)

WRITE_RETRY_S = 1.0
FINAL_FLUSH_TIMEOUT_S = 5.0
# Defaults: 64 MiB segments, 16 of them kept -> about 1 GiB of history.
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_RETAIN_SEGMENTS = 16
# While the disk refuses writes, events wait in memory; past this many bytes the producer is
# told to stop (see EventLog.room) so a long outage cannot grow codexd without limit.
DEFAULT_BACKLOG_BYTES = 64 * 1024 * 1024


class EventLog(GroupCommit):
    """The append-only ``events.jsonl`` of one codexd.

    Create it with :meth:`open`, start :meth:`run` in the store nursery, :meth:`close` it after
    the writer has stopped.

    Attributes:
        path: The log file.
        last_seq: The seq of the last appended event (durable or still buffered); 0 when empty.
        durable_seq: The seq of the last event known to be synced.
    """

    def __init__(self, path: Path, file: BinaryIO, *, last_seq: int, end: int,
                 index: list[tuple[int, int]], lines_since_index: int,
                 segments: list[tuple[int, Path]], segment_bytes: int,
                 retain_segments: int, allocated: int,
                 backlog_bytes: int = DEFAULT_BACKLOG_BYTES) -> None:
        """Internal; use :meth:`open`."""
        self.path = path
        self.last_seq = last_seq
        # Sealed segments, oldest first: (first seq, path).
        self._segments = segments
        self._segment_bytes = segment_bytes
        self._retain_segments = retain_segments
        self._active_first = index[0][0] if index and end > 0 else last_seq + 1
        # Set while a rotation is in progress; readers wait for it before taking a snapshot.
        self._rotating: trio.Event | None = None
        self.durable_seq = last_seq
        # The last commit's failure while it lasts (the disk is full, say), else None.
        self.write_error: str | None = None
        # Called with each batch once it is synced (the hub publishes durable events only).
        self.on_durable: Callable[[list[Event]], None] | None = None
        # Called with each commit's duration in seconds (write + sync, thread hop included).
        self.on_commit: Callable[[float], None] | None = None
        self._file = file
        # Byte offset up to which the file holds whole, synced lines.
        self._durable_end = end
        # The file's size: its data, then reserved space (zeros) up to here. Changed only by
        # whoever holds _io_lock (commit threads, rotation, close).
        self._allocated = allocated
        # A reservation failed (full disk): logged once until one succeeds again.
        self._reserve_failed = False
        # Byte offset the next appended line will have (durable end + pending bytes).
        self._append_end = end
        self._index_seqs = [seq for seq, _ in index]
        self._index_offsets = [off for _, off in index]
        self._lines_since_index = lines_since_index
        # Appended but not yet durable, oldest first: (event, encoded line).
        self._unsynced: collections.deque[tuple[Event, bytes]] = collections.deque()
        self._unsynced_bytes = 0
        self.backlog_bytes = backlog_bytes
        self._pending = trio.Event()
        self._durable_changed = trio.Event()
        self._commit_lock = trio.Lock()
        # The commit whose worker thread is running, if any (see _Commit).
        self._committing: _Commit | None = None
        # Guards the file object between the Trio thread (close) and commit worker threads.
        self._io_lock = threading.Lock()
        self._closed = False

    # ----------------------------------------------------------------------------------------
    # Opening

    @classmethod
    def open(cls, path: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
             retain_segments: int = DEFAULT_RETAIN_SEGMENTS) -> EventLog:
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
        # Binary read/write without O_APPEND: commits write at known offsets (into reserved
        # space), and a failed write can be cut away and retried.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        file = os.fdopen(fd, "r+b")
        # A freshly created log must survive a crash together with its first commits.
        segment._sync_dir(path.parent)
        try:
            return cls._scan(path, file, segment_bytes=segment_bytes,
                             retain_segments=retain_segments)
        except BaseException:
            file.close()
            raise

    @classmethod
    def _scan(cls, path: Path, file: BinaryIO, *, segment_bytes: int,
              retain_segments: int) -> EventLog:
        index, since_index, last_seq, end = scan_active(path, file)
        size = os.fstat(file.fileno()).st_size
        if size != end:
            # A torn line, or the reserved zeros a crash (or an old version) left: everything
            # after the data must read as zeros again before anything is appended, or a later
            # crash could find stale bytes right after new data.
            segment.cut(file, end)
        segments = find_segments(path)
        if end == 0 and segments:
            # A fresh active file right after a rotation: seq continues from the newest segment.
            last_seq = last_seq_of(segments[-1][1])
        log = cls(path, file, last_seq=last_seq, end=end, index=index,
                  lines_since_index=since_index, segments=segments,
                  segment_bytes=segment_bytes, retain_segments=retain_segments,
                  allocated=end)
        log._reserve_ahead(end + 1)
        return log

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
        self._index_line(event.seq, line)
        self._unsynced.append((event, line))
        self._unsynced_bytes += len(line)
        self.last_seq = event.seq
        self._pending.set()

    @property
    def waiting(self) -> int:
        """Events appended but not durable yet (they grow while writes fail)."""
        return len(self._unsynced)

    @property
    def backlogged(self) -> bool:
        """The events waiting to become durable hold ``backlog_bytes`` or more."""
        return self._unsynced_bytes >= self.backlog_bytes

    async def room(self) -> None:
        """Return once the backlog is below ``backlog_bytes`` (at once, without a checkpoint,
        in the normal case).

        The producer of events (the JSON-RPC reader) awaits this before taking more from Codex:
        while the disk fails, memory stays bounded and Codex waits on a full pipe; nothing
        already accepted is dropped.
        """
        while self._unsynced_bytes >= self.backlog_bytes:
            await self._durable_changed.wait()

    async def wait_durable(self, seq: int) -> None:
        """Return once the event with ``seq`` (and every earlier one) is synced.

        Needs :meth:`run` (or a :meth:`flush`) to make progress.
        """
        while self.durable_seq < seq:
            await self._durable_changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The group-commit writer; a ``nursery.start`` target, ready at once.

        Sleeps while nothing is buffered; after the first appended event it waits only until
        the appending tasks yielded, then writes and syncs the whole buffer in one worker-thread
        call.
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
                # Let the tasks that are appending right now finish their step, so one burst
                # shares one sync; never wait for events that may not come.
                await trio.lowlevel.checkpoint()
                try:
                    await self.flush()
                except OSError as exc:
                    logger.exception("event log write failed; retrying in %.1f s", WRITE_RETRY_S)
                    # Readiness reports it: nothing new becomes durable (or visible) meanwhile.
                    self.write_error = f"{exc.strerror or exc}"
                    self._pending.set()
                    await trio.sleep(WRITE_RETRY_S)
                else:
                    self.write_error = None
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

    def _open_parts(self, after_seq: int, end: int) -> list[tuple[BinaryIO, int, int]]:
        """Open (on the Trio thread, so no rename can intervene) every file holding events with
        ``seq > after_seq`` that are durable: ``(file, start offset, end offset)``, oldest first.
        A start of -1 means "find it by bisecting the file" (sealed segments have no index)."""
        parts: list[tuple[BinaryIO, int, int]] = []
        try:
            for i, (first, path) in enumerate(self._segments):
                following = (self._segments[i + 1][0] if i + 1 < len(self._segments)
                             else self._active_first)
                if following - 1 <= after_seq:
                    continue
                segment: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by read_lines
                size = os.fstat(segment.fileno()).st_size
                parts.append((segment, 0 if first > after_seq else -1, size))
            if end > 0 and self.durable_seq > after_seq:
                i = bisect.bisect_right(self._index_seqs, after_seq + 1) - 1
                start = self._index_offsets[i] if i >= 0 else 0
                parts.append((open(self.path, "rb"), start, end))  # noqa: SIM115
        except BaseException:
            for opened, _, _ in parts:
                opened.close()
            raise
        return parts

    async def read_after(self, after_seq: int, *, limit: int | None = None,
                         session_id: str | None = None) -> list[Event]:
        """Durable events with ``seq > after_seq``, in order, as the log stands at the call.

        Reads from disk in a worker thread (seeking via the sparse index). Events committed
        after the call started are not included, so the result covers exactly
        ``(after_seq, durable_seq at call]``; buffered events are never returned (a reader
        must not see an event a crash could take back).

        Args:
            after_seq: Only events with a larger seq.
            limit: At most this many events (counted after the session filter).
            session_id: Only events of this session.

        Returns:
            The events, oldest first.

        Cancellation:
            Safe; nothing is changed.
        """
        while self._rotating is not None:
            await self._rotating.wait()
        # Snapshot before the first checkpoint: bytes below ``end`` are on disk for good.
        end = self._durable_end
        durable_seq = self.durable_seq
        if limit is not None and limit <= 0:
            await trio.lowlevel.checkpoint()
            return []
        out: list[Event] = []
        if after_seq < durable_seq:
            parts = self._open_parts(after_seq, end)
            try:
                # Bounded apart from the writers: a wave of replays only queues behind itself.
                out = await trio.to_thread.run_sync(
                    read_lines, parts, after_seq, limit, session_id,
                    limiter=reads_limiter())
            except BaseException:
                # Cancelled while queued for a read thread, the worker never took the files.
                for f, _, _ in parts:
                    f.close()
                raise
            if limit is not None and len(out) >= limit:
                return out
        else:
            await trio.lowlevel.checkpoint()
        return out

    def close(self) -> None:
        """Close the file, first writing (synchronously) anything still buffered and cutting
        the reserved space off.

        Call after :meth:`run` has ended. Idempotent.

        Resource handling:
            Releases the log's file handle; the log cannot be used afterwards.
        """
        # Bounded: a commit thread stuck in a hung sync (its waiters gave up) holds this lock;
        # then the file is left to the OS rather than hanging the exit (the events were never
        # acknowledged). A commit in flight that has not taken the lock yet finds the log
        # closed and writes nothing: these same events are written here, at the same offset.
        if not self._io_lock.acquire(timeout=FINAL_FLUSH_TIMEOUT_S):
            # Not marked closed: a later close() (once the write came back) still closes it.
            logger.error("event log: a write is stuck in the kernel; giving up on the file")
            return
        try:
            if self._closed:
                return
            try:
                if self._unsynced:
                    data = b"".join(line for _, line in self._unsynced)
                    segment.write_synced(self._file, data, self._durable_end)
                    self._durable_end += len(data)
                    self.durable_seq = self._unsynced[-1][0].seq
                    self._unsynced.clear()
                    self._unsynced_bytes = 0
                # A clean stop leaves plain JSON lines (no reserved tail) for whoever reads the
                # file next; a leftover tail would be harmless (the data ends at the first zero).
                if os.fstat(self._file.fileno()).st_size != self._durable_end:
                    try:
                        segment.cut(self._file, self._durable_end)
                    except OSError:
                        logger.warning("event log: cannot cut %s back to its data", self.path)
            finally:
                self._closed = True
                self._file.close()
        finally:
            self._io_lock.release()
