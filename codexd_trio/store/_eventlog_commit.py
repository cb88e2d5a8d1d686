"""The writing half of :class:`~codexd_trio.store.eventlog.EventLog`: group commits in a worker
thread the log owns, and the rotation that seals the active file and drops old segments.

A mixin only for size: :class:`GroupCommit` holds no state of its own (the attributes below are
the log's, set in ``EventLog.__init__``). See :class:`_Commit` for the invariants.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import trio

from codexd_trio.base.contracts import Event
from codexd_trio.base.limiters import journal_limiter
from codexd_trio.store import _eventlog_segment as segment
from codexd_trio.store._eventlog_files import INDEX_EVERY

logger = logging.getLogger("codexd_trio.store.eventlog")


class _Commit:
    """One write + sync (``fdatasync``) of the buffered events, in a worker thread the log owns.

    Why not ``trio.to_thread.run_sync(..., abandon_on_cancel=True)``: an abandoned thread's
    result was lost, so a later commit wrote the same events again and a rotation could follow;
    the abandoned thread, once it got the file lock, then wrote its stale batch at its old offset
    into the *new* active file (a hole of zeros, then old events: ``last_seq`` went backwards at
    the next start and seqs were readable twice), and it kept a journal-limiter token while the
    next commit took another.

    Now the invariants are:

    * At most one commit is in flight per log (:attr:`EventLog._committing`), and while it is,
      no other commit and no rotation starts. So a commit always writes to the file it started
      on, at the offset its bytes belong, and the log holds at most one journal-limiter token.
    * A commit is never abandoned, only waited for. Its thread's outcome is handed back to the
      Trio thread (``run_sync_soon``) and settled there whether or not anyone still waits:
      ``durable_seq`` moves, the hub publishes, the token is released.
    * Only :meth:`EventLog.close` (after the writer task ended) may write while a commit is in
      flight; it marks the log closed, and a closed log settles nothing.
    """

    __slots__ = ("batch", "done", "error", "limiter", "size", "started")

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter
        self.batch: list[tuple[Event, bytes]] = []
        self.size = 0
        self.started = 0.0
        # Set by the worker thread before it delivers (read on the Trio thread after ``done``).
        self.error: BaseException | None = None
        self.done = trio.Event()


class GroupCommit:
    """Committing and rotating, for :class:`~codexd_trio.store.eventlog.EventLog`."""

    path: Path
    last_seq: int
    durable_seq: int
    on_durable: Callable[[list[Event]], None] | None
    on_commit: Callable[[float], None] | None
    _segments: list[tuple[int, Path]]
    _segment_bytes: int
    _retain_segments: int
    _active_first: int
    _rotating: trio.Event | None
    _file: BinaryIO
    _durable_end: int
    _allocated: int
    _reserve_failed: bool
    _append_end: int
    _index_seqs: list[int]
    _index_offsets: list[int]
    _lines_since_index: int
    _unsynced: collections.deque[tuple[Event, bytes]]
    _unsynced_bytes: int
    _durable_changed: trio.Event
    _commit_lock: trio.Lock
    _committing: _Commit | None
    _io_lock: threading.Lock
    _closed: bool

    @property
    def first_seq(self) -> int:
        """The oldest retained event's seq (``last_seq + 1`` while the log is empty)."""
        return self._segments[0][0] if self._segments else self._active_first

    def _sealed_path(self, first_seq: int) -> Path:
        return self.path.with_name(f"{self.path.stem}-{first_seq:012d}{self.path.suffix}")

    def _index_line(self, seq: int, line: bytes) -> None:
        if self._lines_since_index >= INDEX_EVERY:
            self._index_offsets.append(self._append_end)
            self._index_seqs.append(seq)
            self._lines_since_index = 0
        self._lines_since_index += 1
        self._append_end += len(line)

    def _write_batch(self, data: bytes, start: int) -> None:
        # Worker thread. Writes at the known durable end, into reserved space when it can (so
        # the sync is a pure data sync); on failure cuts whatever part of the batch landed so
        # the retry does not leave a torn line in the middle of the log.
        with self._io_lock:
            if self._closed:
                raise OSError("event log is closed")
            self._reserve_ahead(start + len(data))
            try:
                segment.write_synced(self._file, data, start)
            except OSError:
                self._allocated = start  # cut back at ``start``: reserve again next time
                raise

    def _reserve_ahead(self, end: int) -> None:
        """Reserve space up to ``end`` if the file has not got it (under ``_io_lock``, or before
        the log is shared). Best effort: without it a commit grows the file, which is as
        durable, only slower (a metadata sync)."""
        try:
            self._allocated = segment.reserve(self._file, self._allocated, end,
                                             self._segment_bytes)
        except OSError as exc:
            if not self._reserve_failed:
                logger.warning("event log: cannot reserve space in %s (%s); commits grow the "
                               "file until a reservation succeeds", self.path.name,
                               exc.strerror or exc)
            self._reserve_failed = True
        else:
            self._reserve_failed = False

    async def flush(self) -> None:
        """Write and sync everything appended so far, now.

        Concurrent flushes share commits: each waits for the commit in flight, then starts the
        next one if its own events were not in it.

        Raises:
            OSError: The write failed; the events stay buffered for a retry.

        Cancellation:
            Cancelling a flush abandons only its *wait*, never the commit: the commit's worker
            thread goes on and is settled on the Trio thread when it returns, whoever is still
            waiting (see :class:`_Commit`). So a flush returns at once even while the thread is
            stuck in a hung sync, and every deadline on a commit (the final flush's ~5 s)
            really bounds it.
        """
        target = self.last_seq
        async with self._commit_lock:
            while True:
                commit = self._committing
                if commit is None:
                    if self._durable_end >= self._segment_bytes:
                        # Also a rotation the previous committer was cancelled before doing.
                        await self._rotate()
                    if self.durable_seq >= target or not self._unsynced:
                        return
                    commit = await self._start_commit()
                await commit.done.wait()
                if commit.error is not None:
                    raise commit.error

    async def _start_commit(self) -> _Commit:
        """Start writing everything buffered in a worker thread (under the commit lock, with
        no commit in flight). Returns once the thread is started."""
        commit = _Commit(journal_limiter())
        # Its own limiter: every acknowledgement waits on this commit, so replays holding the
        # read threads must not delay it. Cancellable: until it has a token nothing started.
        await commit.limiter.acquire_on_behalf_of(commit)
        try:
            commit.batch = list(self._unsynced)
            data = b"".join(line for _, line in commit.batch)
            commit.size = len(data)
            commit.started = time.perf_counter()
            token = trio.lowlevel.current_trio_token()
            self._committing = commit
            trio.lowlevel.start_thread_soon(
                functools.partial(self._commit_in_thread, commit, data, self._durable_end),
                functools.partial(self._deliver, token, commit),
                name=f"codexd event log commit {self.path.name}",
            )
        except BaseException:
            self._committing = None
            commit.limiter.release_on_behalf_of(commit)
            raise
        return commit

    def _commit_in_thread(self, commit: _Commit, data: bytes, start: int) -> None:
        # Worker thread. Keeps the outcome on the commit: whoever waits reads it from there.
        try:
            self._write_batch(data, start)
        except BaseException as exc:  # re-raised to the waiters by flush()
            commit.error = exc

    def _deliver(self, token: trio.lowlevel.TrioToken, commit: _Commit, _: object) -> None:
        # Worker thread, once the commit's write returned: settle it on the Trio thread.
        with contextlib.suppress(trio.RunFinishedError):  # the run, and the log, are gone
            token.run_sync_soon(self._settle, commit)

    def _settle(self, commit: _Commit) -> None:
        """Account for a finished commit (Trio thread, a ``run_sync_soon`` callback: it must
        not raise, or the whole run fails)."""
        self._committing = None
        commit.limiter.release_on_behalf_of(commit)
        try:
            if commit.error is None and not self._closed:
                self._made_durable(commit)
        except Exception:
            logger.exception("event log: settling a commit failed")
        finally:
            commit.done.set()

    def _made_durable(self, commit: _Commit) -> None:
        batch = commit.batch
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - commit.started)
        # No other commit ran meanwhile and close() (which marks the log closed) did not take
        # the events: the batch is still the head of the buffer.
        for _ in batch:
            self._unsynced.popleft()
        self._unsynced_bytes -= commit.size
        self._durable_end += commit.size
        self.durable_seq = batch[-1][0].seq
        self._durable_changed.set()
        self._durable_changed = trio.Event()
        # In the same step as durable_seq moves: readers of durable_seq and the hub's
        # published events never disagree.
        if self.on_durable is not None:
            self.on_durable([event for event, _ in batch])

    async def _rotate(self) -> None:
        """Seal the active file and start a new one; drop segments beyond the retention.

        Called under the commit lock with no commit in flight, so the active file holds exactly
        the durable events ``[_active_first, durable_seq]``.
        """
        sealed = self._sealed_path(self._active_first)
        self._rotating = trio.Event()
        try:
            await trio.to_thread.run_sync(self._swap_files, sealed, limiter=journal_limiter())
            self._segments.append((self._active_first, sealed))
            self._active_first = self.durable_seq + 1
            self._durable_end = 0
            # Re-index what is still buffered: it will be written to the new file from byte 0.
            # New lists, not cleared ones: a reader works on its own snapshot of the old ones.
            self._index_seqs, self._index_offsets = [], []
            self._lines_since_index = INDEX_EVERY
            self._append_end = 0
            for event, line in self._unsynced:
                self._index_line(event.seq, line)
            expired = self._segments[: max(0, len(self._segments) - self._retain_segments)]
            self._segments = self._segments[len(expired):]
        finally:
            self._rotating.set()
            self._rotating = None
        logger.info("event log: sealed %s; retained %d segment(s) from seq %d",
                    sealed.name, len(self._segments), self.first_seq)
        if expired:
            await trio.to_thread.run_sync(
                self._delete, [p for _, p in expired], limiter=journal_limiter()
            )

    def _swap_files(self, sealed: Path) -> None:
        # Worker thread. Readers that opened the old file keep reading it under its new name.
        # Exception-safe: until the new file is open nothing has changed (a failed rename used
        # to leave the log writing to a closed file, and a ValueError took the daemon down);
        # an OSError here is a failed commit like any other, and the next commit retries.
        with self._io_lock:
            # Sealed, a segment holds its data only (no reserved tail), synced before the
            # segment gets its new name.
            segment.cut(self._file, self._durable_end)
            self._allocated = self._durable_end
            os.rename(self.path, sealed)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                os.rename(sealed, self.path)
                raise
            old, self._file = self._file, os.fdopen(fd, "r+b")
            old.close()
            # The new segment starts with its reserved space; its size reaches the disk with
            # its first commit's sync, its name with the directory's sync below.
            self._allocated = 0
            self._reserve_ahead(1)
            segment._sync_dir(self.path.parent)

    @staticmethod
    def _delete(paths: list[Path]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            logger.info("event log: removed %s (beyond retention)", path.name)
