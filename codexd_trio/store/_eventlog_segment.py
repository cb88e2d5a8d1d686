"""The active segment of the event log on disk: space reserved ahead of the data, a commit's
write and sync, and cutting the file back to its data (private: see
:mod:`codexd_trio.store.eventlog`).

Why reserve space (issue 27): a sync that must also make a new file size or a new block
allocation durable is a metadata sync, and on a journaling filesystem (ext4, XFS, APFS) that
means a journal commit for the whole filesystem — shared with whatever else syncs at that moment
(the Codex child syncs its rollout and SQLite state exactly when a turn starts). A sync of
bytes written inside space the file already owns needs no metadata, so ``fdatasync`` is enough.
Write-ahead logs do the same: etcd preallocates its 64 MB WAL segments, PostgreSQL zero-fills
its WAL segments. Measured on a journaled ext4 (``bench/bench_sync_strategies.py``): one journal
commit per append growing the file, 0.08 per append into ``posix_fallocate``d space (the first
write into each 4 KiB block converts an "unwritten" extent), none into zero-filled space.

The framing this needs: reserved space reads as zero bytes, and a JSON line never holds a raw
zero byte, so **the data ends at the first zero byte of the file** (see
``_eventlog_files.scan_active``). Space is reserved in steps of :data:`RESERVE_STEP` ahead of the
data (at most one step is ever unused), never beyond what a write would make durable on its own:
the step's new size reaches the disk with the next commit's ``fdatasync`` (which flushes a
size change, as it must for the data to be readable). A sealed segment, and the active file
after a clean stop, are cut back to their data, so old files keep no reserved tail and a
stopped node's ``events.jsonl`` is plain JSON lines.

Every sync of the event log goes through :func:`_sync_data`, :func:`_sync_file` or
:func:`_sync_dir` here (tests record their order: write, sync, rename, sync the directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
from pathlib import Path
from typing import BinaryIO

from codexd_trio.base.files import fsync_dir

logger = logging.getLogger("codexd_trio.store.eventlog")

# Space is reserved this far ahead of the data: one reservation (a metadata sync) per 4 MiB of
# events instead of one per commit, and a crashed node wastes at most this much per log.
RESERVE_STEP = 4 * 1024 * 1024
_ZEROS = bytes(64 * 1024)
# macOS: fsync() leaves the bytes in the drive's cache; only F_FULLFSYNC flushes them to the
# medium. It is the honest sync there (and costs milliseconds). None elsewhere.
_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None) if sys.platform == "darwin" else None


def _sync_data(fd: int) -> None:
    """Make the bytes written to ``fd`` durable: a commit's sync (data, and a size change)."""
    if _FULLFSYNC is not None:
        try:
            fcntl.fcntl(fd, _FULLFSYNC)
            return
        except OSError:
            pass  # a filesystem that refuses it (a network share): the plain sync below
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def _sync_file(fd: int) -> None:
    """Make ``fd``'s data *and* metadata durable (after cutting a file back to its data)."""
    if _FULLFSYNC is not None:
        try:
            fcntl.fcntl(fd, _FULLFSYNC)
            return
        except OSError:
            pass
    os.fsync(fd)


def _sync_dir(directory: Path) -> None:
    """Make a directory's entries durable (a rename, a new segment); best effort."""
    fsync_dir(directory)


def reserve(file: BinaryIO, allocated: int, end: int, limit: int) -> int:
    """Reserve space in ``file`` up to ``end`` rounded up to :data:`RESERVE_STEP`, but not past
    ``limit`` (the segment's size: it is sealed there), when ``end`` is past ``allocated``;
    returns the new reserved size.

    Reserved space reads as zeros. ``os.posix_fallocate`` where the platform has it (Linux,
    FreeBSD; glibc falls back to writing zeros on a filesystem without ``fallocate``), else
    zeros written (macOS). Raises ``OSError`` when the disk has no room: the caller carries on
    without the reservation (the file then grows with each write, synced the same way).
    """
    target = min(-(-end // RESERVE_STEP) * RESERVE_STEP, limit)
    if target <= allocated:
        return allocated
    fd = file.fileno()
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, allocated, target - allocated)
    else:
        offset = allocated
        while offset < target:
            offset += os.pwrite(fd, _ZEROS[: target - offset], offset)
    return target


def write_synced(file: BinaryIO, data: bytes, start: int) -> None:
    """Write a commit's ``data`` at ``start`` and sync it (worker thread).

    On failure whatever part of ``data`` landed is cut off again (the file is truncated at
    ``start``, so everything after the data reads as zeros once more; the reservation is gone
    and the caller must make it again), so a retry never leaves a torn line in the log.
    """
    fd = file.fileno()
    try:
        view = memoryview(data)
        offset = start
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written
        _sync_data(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def cut(file: BinaryIO, end: int) -> None:
    """Cut ``file`` back to its data (``end`` bytes) and sync that: a sealed segment, a clean
    stop, a torn or zero tail found at start-up."""
    fd = file.fileno()
    os.ftruncate(fd, end)
    _sync_file(fd)
