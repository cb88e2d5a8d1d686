"""The child's log files: its stderr drained into a capped log, and the capped, rolled-over log
file itself (also the app-server client's stdout log)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

import trio

from codexd_trio.base.limiters import drains_limiter

__all__ = ["CHILD_LOG_MAX_BYTES", "CappedLog", "drain_stderr", "open_append"]

log = logging.getLogger("codexd_trio.protocol.child")

READ_CHUNK = 256 * 1024

# A child's stderr/stdout log is cut at this size and kept as one older file (``<name>.1``), so
# a chatty Codex cannot fill the disk of a node that runs for months: at most twice this.
CHILD_LOG_MAX_BYTES = 32 * 1024 * 1024


class CappedLog:
    """An append-only log file that rolls over to ``<name>.1`` past ``max_bytes``.

    Blocking (each call is a small file operation): use it from a worker thread.
    """

    def __init__(self, path: Path, max_bytes: int = CHILD_LOG_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _open_for_append(path)
        self._size = self._file.seek(0, os.SEEK_END)

    def write(self, data: bytes | bytearray) -> None:
        if self._size and self._size + len(data) > self.max_bytes:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._file = _open_for_append(self.path)
            self._size = 0
        self._file.write(data)
        self._size += len(data)

    def close(self) -> None:
        # Unbuffered and no fsync: closing cannot block on the disk.
        self._file.close()


def _open_for_append(path: Path) -> BinaryIO:
    return open(path, "ab", buffering=0)


def open_append(path: Path) -> CappedLog:
    """Open a child's log file for appends, capped (blocking: call it in a worker thread)."""
    return CappedLog(path)


async def drain_stderr(
    stream: trio.abc.ReceiveStream, log_path: Path | None, done: trio.Event
) -> None:
    """Copy the child's stderr to ``log_path`` (appending) or discard it, until EOF.

    Draining continuously matters: a child that fills the stderr pipe blocks, and then so does
    its stdout. A failing log file must not stop the draining either, so write errors are
    logged once and the rest is discarded. The pipe itself is read by Trio's I/O loop (no
    thread); only the log file's open and writes use threads, from
    :func:`~codexd_trio.base.limiters.drains_limiter`, so a saturated default thread limiter cannot
    stop the drain.
    """
    sink: CappedLog | None = None
    try:
        if log_path is not None:
            try:
                # Not abandoned on cancel, so a cancel cannot leak the opened file.
                sink = await trio.to_thread.run_sync(
                    open_append, log_path, limiter=drains_limiter()
                )
            except OSError as exc:
                log.warning("cannot open stderr log %s: %s; discarding child stderr", log_path, exc)
        while True:
            try:
                chunk = await stream.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not chunk:
                return
            if sink is not None:
                try:
                    # Not abandoned on cancel: an abandoned write could race the close below,
                    # and one chunk appended to a local file is short.
                    await trio.to_thread.run_sync(sink.write, chunk, limiter=drains_limiter())
                except OSError as exc:
                    log.warning("writing stderr log %s failed: %s; discarding", log_path, exc)
                    sink.close()
                    sink = None
    finally:
        done.set()
        if sink is not None:
            # Unbuffered and no fsync: closing cannot block on the disk.
            sink.close()
