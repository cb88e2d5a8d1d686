"""The append-only idempotency journal (private: see :mod:`codexd_trio.store.idempotency`)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import trio

from codexd_trio.base.files import append_synced, fsync_dir
from codexd_trio.base.limiters import documents_limiter, journal_limiter
from codexd_trio.store._idempotency_records import (
    COMPACT_MIN_LINES,
    COMPACT_RATIO,
    COMPACT_RETRY_S,
    FINAL_FLUSH_TIMEOUT_S,
    MAX_RECORDS,
    RETENTION_S,
    WRITE_RETRY_S,
    IdempotencyBook,
    IdempotencyRecord,
    _decoder,
    _encode_line,
    _Entry,
    _Scan,
    discard,
    import_old_book,
    logger,
    open_file,
    scan,
)
from codexd_trio.store.documents import StoreWriteError, read_document


class IdempotencyJournal:
    """The recorded answers: in memory, and durable in an append-only journal file.

    Create it with :meth:`open`, start :meth:`run` in the store nursery (it compacts the file and
    retries failed appends), and :meth:`close` it after :meth:`run` has ended.

    Attributes:
        path: The journal file.
        clock: Wall-clock seconds, for ``createdAt`` and the retention.
        compactions: How many compactions completed (for tests and diagnostics).
    """

    def __init__(
        self,
        path: Path,
        file: BinaryIO,
        scan: _Scan,
        *,
        clock: Callable[[], float],
        compact_min_lines: int,
    ) -> None:
        """Internal; use :meth:`open`."""
        self.path = path
        self.clock = clock
        self.compactions = 0
        self._compact_min_lines = compact_min_lines
        # Oldest first. An OrderedDict (not a dict) because pruning pops from the front, which
        # it does in O(1); a plain dict rescans the deleted slots at its front on every pop.
        self._records = scan.records
        self._file = file
        # Lines (whole, fsynced) and bytes in the file.
        self._lines = scan.lines
        self._end = scan.end
        # Encoded lines not yet durable, oldest first; ``_queued``/``_written`` count lines ever
        # queued/made durable, so a caller knows its line is on disk once _written >= its ticket.
        self._pending: list[bytes] = []
        self._queued = 0
        self._written = 0
        # Lines made durable while a compaction's snapshot is written (they go after it), and
        # the last ticket queued before the snapshot (those records are in it already).
        self._since_snapshot: list[bytes] | None = None
        self._snapshot_ticket = 0
        self._write_lock = trio.Lock()
        self._compact_lock = trio.Lock()
        # Guards the file object between worker threads and close() on the Trio thread.
        self._io_lock = threading.Lock()
        self._wakeup = trio.Event()
        self._compacted = trio.Event()
        self._compact_not_before = float("-inf")
        self._closed = False

    # ----------------------------------------------------------------------------------------
    # Opening

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        legacy_path: Path | None = None,
        compact_min_lines: int = COMPACT_MIN_LINES,
    ) -> IdempotencyJournal:
        """Open (creating if needed) the journal, cutting a torn tail and importing the old file.

        Blocking (reads the whole journal once): call it at startup, or through
        ``trio.to_thread.run_sync``.

        Args:
            path: The journal, e.g. ``state/codexd/idempotency.jsonl``; parents are created.
            clock: Wall-clock seconds.
            legacy_path: The old whole-file store; default ``path`` with the suffix ``.json``.
                If it exists its live records are imported (journal records win), the merged
                journal is written atomically, and then the old file is removed — a crash in
                between imports it again, harmlessly.
            compact_min_lines: Never compact a journal of fewer lines.

        Returns:
            The open journal; expired records are not loaded.

        Raises:
            StoreCorrupt: The old file exists but cannot be read.
            OSError: The journal cannot be created, read or written.

        Resource handling:
            The returned journal owns an open file; call :meth:`close`.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        legacy = path.with_suffix(".json") if legacy_path is None else legacy_path
        horizon = clock() - RETENTION_S
        file = open_file(path)
        try:
            # A freshly created journal must survive a crash together with its first appends.
            fsync_dir(path.parent)
            found = scan(path, file, horizon)
            old = read_document(legacy, IdempotencyBook)
            if old is not None:
                found = import_old_book(path, found, old, horizon)
                file.close()
                file = open_file(path)
                legacy.unlink()
                fsync_dir(legacy.parent)
            journal = cls(path, file, found, clock=clock, compact_min_lines=compact_min_lines)
        except BaseException:
            file.close()
            raise
        journal.prune()
        return journal


    # ----------------------------------------------------------------------------------------
    # Records

    def __len__(self) -> int:
        """The number of live records (in memory)."""
        return len(self._records)

    @property
    def lines(self) -> int:
        """Lines in the journal file (durable), live or not."""
        return self._lines

    def get(self, key: str) -> IdempotencyRecord | None:
        """The record of ``key``, if any (call :meth:`prune` first to drop expired ones)."""
        entry = self._records.get(key)
        return None if entry is None else _decoder.decode(entry.line)

    def prune(self) -> None:
        """Forget expired records and those beyond :data:`MAX_RECORDS`, oldest first.

        O(records dropped): it stops at the first live record. Their lines stay in the file
        until the next compaction.
        """
        horizon = self.clock() - RETENTION_S
        records = self._records
        while records:
            first = next(iter(records.values()))
            if first.createdAt >= horizon and len(records) <= MAX_RECORDS:
                break
            records.popitem(last=False)
        self._request_compaction_if_due()

    async def put(self, record: IdempotencyRecord) -> None:
        """Record ``record`` and return once its line is durable.

        The record counts at once (a later :meth:`get` sees it): the request it answers has
        already had its effect, so a retry must replay it even if this append fails.

        Raises:
            StoreWriteError: The append failed; the line stays queued and :meth:`run` retries it.

        Cancellation:
            The record stays recorded and its line queued; :meth:`run` (or a later append, or
            :meth:`close`) writes it.
        """
        line = _encode_line(record)
        self._records.pop(record.key, None)
        self._records[record.key] = _Entry(record.createdAt, line)
        self._pending.append(line)
        self._queued += 1
        ticket = self._queued
        try:
            await self._commit(ticket)
        finally:
            if self._written < ticket:
                self._wakeup.set()

    # ----------------------------------------------------------------------------------------
    # Writing

    async def _commit(self, ticket: int) -> None:
        """Make every line up to ``ticket`` durable; one write serves every line queued by then."""
        async with self._write_lock:
            if self._written >= ticket or not self._pending:
                return
            count = len(self._pending)
            data = b"".join(self._pending[:count])
            try:
                # The journal limiter, not the default one: replays holding the read threads
                # must not delay an acknowledgement.
                await trio.to_thread.run_sync(
                    self._append, data, self._end, limiter=journal_limiter()
                )
            except OSError as exc:
                raise StoreWriteError(self.path, f"cannot append to {self.path}: {exc}") from exc
            if self._since_snapshot is not None:
                # Lines queued before the snapshot are in it (their records were in memory).
                first = max(0, self._snapshot_ticket - self._written)
                self._since_snapshot.extend(self._pending[first:count])
            # New lines may have been queued during the write: only drop what was written.
            del self._pending[:count]
            self._written += count
            self._lines += count
            self._end += len(data)
        self._request_compaction_if_due()

    def _append(self, data: bytes, start: int) -> None:
        # Worker thread. Writes at the known end; on failure cuts whatever part landed, so the
        # retry does not leave a torn line in the middle of the journal.
        with self._io_lock:
            if self._closed:
                raise OSError("the idempotency journal is closed")
            append_synced(self._file, data, start)

    async def flush(self) -> None:
        """Return once every line queued so far is durable.

        Raises:
            StoreWriteError: The append failed; the lines stay queued.
        """
        await self._commit(self._queued)

    # ----------------------------------------------------------------------------------------
    # Compaction

    @property
    def compaction_due(self) -> bool:
        """True when the file holds over twice as many lines as live records (and enough)."""
        return (
            self._lines >= self._compact_min_lines
            and self._lines > COMPACT_RATIO * len(self._records)
        )

    def _request_compaction_if_due(self) -> None:
        if self.compaction_due:
            self._wakeup.set()

    async def compact(self) -> None:
        """Rewrite the journal with only the live records; appends wait only for the swap.

        The live records are written to a temporary file and fsynced without holding the
        append lock; then, under it, the lines appended meanwhile are added, the file is
        fsynced and renamed over the journal.

        Raises:
            StoreWriteError: The rewrite failed; the journal is unchanged and still in use.

        Cancellation:
            Safe: the journal is unchanged unless the rename happened; a temporary file is
            removed.

        Resource handling:
            The temporary file is closed and removed on any failure; after the swap the journal
            owns the new file and the old one is closed.
        """
        async with self._compact_lock:
            self.prune()
            snapshot = [entry.line for entry in self._records.values()]
            self._since_snapshot = []
            self._snapshot_ticket = self._queued
            tmp: tuple[BinaryIO, str] | None = None
            try:
                # The bulk of the work, on the documents' threads: the journal's stay free
                # for appends, which go on meanwhile.
                tmp = await trio.to_thread.run_sync(
                    self._write_snapshot, snapshot, limiter=documents_limiter()
                )
                async with self._write_lock:
                    tail = self._since_snapshot
                    end = await trio.to_thread.run_sync(
                        self._swap, tmp, b"".join(tail), limiter=journal_limiter()
                    )
                    tmp = None  # renamed: it is the journal now
                    self._lines = len(snapshot) + len(tail)
                    self._end = end
            except OSError as exc:
                raise StoreWriteError(self.path, f"cannot compact {self.path}: {exc}") from exc
            finally:
                self._since_snapshot = None
                if tmp is not None:
                    discard(tmp)
            self.compactions += 1
            self._compacted.set()
            self._compacted = trio.Event()
        logger.info(
            "idempotency journal compacted to %d line(s) (%d live record(s))",
            self._lines, len(self._records),
        )

    async def wait_compacted(self, count: int) -> None:
        """Return once at least ``count`` compactions have completed (for tests and tools)."""
        while self.compactions < count:
            await self._compacted.wait()

    def _write_snapshot(self, lines: list[bytes]) -> tuple[BinaryIO, str]:
        # Worker thread. The file stays open (positioned at its end) for _swap's tail.
        fd, name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        file = os.fdopen(fd, "r+b")
        try:
            file.write(b"".join(lines))
            file.flush()
            os.fsync(file.fileno())
        except BaseException:
            discard((file, name))
            raise
        return file, name

    def _swap(self, tmp: tuple[BinaryIO, str], tail: bytes) -> int:
        # Worker thread, under the append lock: no append can land in the old file from now on.
        file, name = tmp
        with self._io_lock:
            if self._closed:
                raise OSError("the idempotency journal is closed")
            if tail:
                file.write(tail)
                file.flush()
                os.fsync(file.fileno())
            end = file.tell()
            os.replace(name, self.path)
            old, self._file = self._file, file
        old.close()
        fsync_dir(self.path.parent)
        return end

    # ----------------------------------------------------------------------------------------
    # Lifetime

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The journal's background task: compaction, and retries of failed appends.

        A ``nursery.start`` target, ready at once. Compacts when :attr:`compaction_due` (checked
        after every append and prune); failures are logged, never raised: appends are retried
        every second, a compaction after a minute.

        Cancellation:
            On cancellation queued lines get a final write under a shielded scope with its own
            deadline (~5 s); then the journal is closed and ``Cancelled`` propagates.

        Resource handling:
            Closes the journal on the way out (:meth:`close` stays safe to call again).
        """
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                try:
                    await self.flush()
                except StoreWriteError:
                    logger.exception("idempotency append failed; retrying in %.1f s",
                                     WRITE_RETRY_S)
                    await trio.sleep(WRITE_RETRY_S)
                    self._wakeup.set()
                    continue
                if self.compaction_due and trio.current_time() >= self._compact_not_before:
                    try:
                        await self.compact()
                    except StoreWriteError:
                        logger.exception("idempotency compaction failed; next try in %.0f s",
                                         COMPACT_RETRY_S)
                        self._compact_not_before = trio.current_time() + COMPACT_RETRY_S
        finally:
            with trio.move_on_after(FINAL_FLUSH_TIMEOUT_S, shield=True) as scope:
                try:
                    await self.flush()
                except StoreWriteError:
                    logger.exception("final idempotency flush failed")
            if scope.cancelled_caught:
                # A worker thread may still hold the file: closing now would block on it.
                logger.error("final idempotency flush did not finish in time")
            else:
                try:
                    self.close()
                except OSError:
                    logger.exception("closing the idempotency journal failed")

    def close(self) -> None:
        """Close the file, first writing (synchronously) any queued line. Idempotent.

        Call after :meth:`run` has ended (it closes the journal itself when it ends normally).

        Raises:
            OSError: The final write failed (the file is closed anyway).

        Resource handling:
            Releases the journal's file; appends fail afterwards.
        """
        with self._io_lock:
            if self._closed:
                return
            try:
                if self._pending:
                    data = b"".join(self._pending)
                    self._file.seek(self._end)
                    self._file.write(data)
                    self._file.flush()
                    os.fsync(self._file.fileno())
                    self._written += len(self._pending)
                    self._lines += len(self._pending)
                    self._end += len(data)
                    self._pending.clear()
            finally:
                self._closed = True
                self._file.close()


