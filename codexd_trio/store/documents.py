"""Atomic JSON documents with coalescing writers.

Every small state file of codexd (``identity.json``, ``daemon-state.json``,
``session-registry.json``, ``recent-events.json``) is a :class:`JsonDocument`: the daemon keeps
the current value in memory, calls :meth:`JsonDocument.set` as often as it likes, and one writer
task per document replaces the file atomically with the newest value shortly afterwards. A
hundred ``set`` calls in a burst cost a handful of writes, and a reader of the file (a person
with ``cat``, a restarted daemon) only ever sees a whole old or a whole new document.

Writes run in a worker thread (``trio.to_thread.run_sync``) so ``fsync`` never blocks the event
loop; the threads come from :func:`~codexd_trio.base.limiters.documents_limiter`, so replays holding
other threads cannot hold the writers up. A writer may be overtaken by a newer one; every write
carries a version number and a write older than what is already on disk is skipped, so the file
never goes backwards.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Generic, TypeVar

import msgspec
import trio

from codexd_trio.base.files import atomic_write_bytes
from codexd_trio.base.limiters import documents_limiter

__all__ = [
    "JsonDocument",
    "StoreCorrupt",
    "StoreError",
    "StoreWriteError",
    "encode_document",
    "read_document",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)

# How long the writer waits after the first ``set`` of a burst before writing: long enough to
# fold a burst of updates into one write, short enough that a person watching the file sees it
# change "at once".
DEFAULT_COALESCE_S = 0.05
# A failing disk must not spin the writer; it retries at this pace (and logs every failure).
WRITE_RETRY_S = 1.0
# Own deadline of the final, shielded write when the writer task is cancelled.
FINAL_WRITE_TIMEOUT_S = 5.0


class StoreError(Exception):
    """Base class of the store's errors; ``path`` names the file concerned."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class StoreCorrupt(StoreError):
    """A document exists but cannot be read or decoded; the message says which file and why."""


class StoreWriteError(StoreError):
    """A document could not be written durably (disk full, permissions, ...)."""


def encode_document(value: object, *, pretty: bool = True) -> bytes:
    """The on-disk form of a document plus a newline: indented JSON for the small documents
    people read, compact JSON for the big ones (indenting a 10 000-session registry costs ~15 ms
    with the GIL held; compact encoding ~3 ms)."""
    data = msgspec.json.encode(value)
    return (msgspec.json.format(data, indent=2) if pretty else data) + b"\n"


def read_document(path: Path, type_: type[T]) -> T | None:
    """Read and decode a JSON document.

    Args:
        path: The document's file.
        type_: The msgspec-compatible type to decode into.

    Returns:
        The decoded value, or ``None`` when the file does not exist.

    Raises:
        StoreCorrupt: The file exists but cannot be read, is not JSON, or has the wrong shape.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreCorrupt(path, f"cannot read {path}: {exc}") from exc
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise StoreCorrupt(path, f"{path} does not have the expected shape: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise StoreCorrupt(path, f"{path} is not valid JSON: {exc}") from exc


class JsonDocument(Generic[T]):
    """One JSON file kept in memory and written to disk by a coalescing writer task.

    Typical wiring::

        doc = JsonDocument(path, SessionRegistry, read_document(path, SessionRegistry) or initial)
        await nursery.start(doc.run)
        doc.set(new_value)          # cheap, any number of times
        await doc.flush()           # before telling a client "201 Created"

    Attributes:
        path: The document's file.
        value: The newest value set (what the file will hold once the writer catches up).
        writes: How many times the file was actually written (for tests and diagnostics).
    """

    def __init__(
        self,
        path: Path,
        type_: type[T],
        initial: T,
        *,
        coalesce_s: float = DEFAULT_COALESCE_S,
        pretty: bool = True,
    ) -> None:
        """Create the document in memory; it neither reads nor writes the file.

        Args:
            path: The document's file.
            type_: The value's type (kept for symmetry with :func:`read_document`).
            initial: The starting value; it counts as already on disk until the first ``set``.
            coalesce_s: How long the writer waits after a ``set`` before writing.
            pretty: Indent the JSON (for small documents people read).
        """
        self.path = path
        self.type_ = type_
        self.value: T = initial
        self.writes = 0
        self.coalesce_s = coalesce_s
        self._pretty = pretty
        # ``_version`` counts sets; ``_disk_version`` is the newest version known durable. Both
        # only grow. ``_disk_version`` is updated under ``_io_lock`` by whichever thread wrote.
        self._version = 0
        self._disk_version = 0
        self._io_lock = threading.Lock()
        self._dirty = trio.Event()
        self._write_lock = trio.Lock()
        # Set for a document kept elsewhere (the session table): called on the Trio thread at
        # write time, it returns the encoding job for the writer thread; ``value`` is not used.
        self.capture: Callable[[], Callable[[], bytes]] | None = None
        # Set for a snapshot of a journal (the session table over the event log): awaited after
        # each capture, before the write, until what was captured may be on disk.
        self.before_write: Callable[[], Awaitable[None]] | None = None

    @property
    def dirty(self) -> bool:
        """True while a value set in memory is not yet durable on disk."""
        return self._disk_version < self._version

    def set(self, value: T) -> None:
        """Make ``value`` the document's value; the writer task writes it soon.

        Never blocks and never raises for I/O reasons. Must be called from the Trio thread.
        """
        self.value = value
        self._version += 1
        self._dirty.set()

    def touch(self) -> None:
        """The value changed in place (a document with a ``capture``): write it soon."""
        self._version += 1
        self._dirty.set()

    def _capture(self) -> Callable[[], bytes]:
        # On the Trio thread: what to encode, as a job for the writer thread.
        if self.capture is not None:
            return self.capture()
        return functools.partial(encode_document, self.value, pretty=self._pretty)

    def _write_version(self, encode: Callable[[], bytes], version: int) -> None:
        # Runs in a worker thread (or synchronously from write_now). msgspec holds the GIL while
        # it encodes, so this still pauses the event loop for the encoding time: big documents
        # are written compact (pretty=False) to keep that pause short.
        data = encode()
        with self._io_lock:
            if version <= self._disk_version:
                return  # a newer value already landed; writing this one would go backwards
            atomic_write_bytes(self.path, data)
            self._disk_version = version
            self.writes += 1

    async def _write_pending(self, target: int) -> None:
        """Make every version up to ``target`` durable (writing the newest value if needed)."""
        async with self._write_lock:
            # Whoever held the lock before us may already have written a newer value.
            if self._disk_version >= target:
                return
            encode, version = self._capture(), self._version
            if self.before_write is not None:
                await self.before_write()
            try:
                await trio.to_thread.run_sync(
                    self._write_version, encode, version, limiter=documents_limiter()
                )
            except OSError as exc:
                raise StoreWriteError(self.path, f"cannot write {self.path}: {exc}") from exc

    async def flush(self) -> None:
        """Return once every value set so far is durable on disk.

        Writes immediately instead of waiting for the coalescing delay; concurrent flushes share
        one write. Works whether or not the writer task is running.

        Raises:
            StoreWriteError: The write failed (the value stays dirty; the writer keeps retrying).

        Cancellation:
            Safe: a write already started in the worker thread completes (the file is never left
            half-written); the document simply stays dirty if the cancel came first.
        """
        target = self._version
        while self._disk_version < target:
            await self._write_pending(target)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: write the newest value shortly after each burst of ``set`` calls.

        A ``nursery.start`` target; ready immediately. Write failures are logged and retried
        every second, they never crash the task.

        Cancellation:
            On cancellation a dirty value gets one final write under a shielded scope with its
            own deadline (~5 s); then ``Cancelled`` propagates.
        """
        task_status.started()
        try:
            while True:
                await self._dirty.wait()
                self._dirty = trio.Event()
                if not self.dirty:
                    continue  # a flush() already wrote it
                await trio.sleep(self.coalesce_s)
                try:
                    await self._write_pending(self._version)
                except StoreWriteError:
                    logger.exception("store write failed; retrying in %.1f s", WRITE_RETRY_S)
                    self._dirty.set()
                    await trio.sleep(WRITE_RETRY_S)
        finally:
            if self.dirty:
                with trio.move_on_after(FINAL_WRITE_TIMEOUT_S, shield=True) as scope:
                    try:
                        await self._write_pending(self._version)
                    except StoreWriteError:
                        logger.exception("final write of %s failed", self.path)
                if scope.cancelled_caught:
                    logger.error("final write of %s did not finish in time", self.path)

    def write_now(self) -> None:
        """Write the current value durably, synchronously, on the calling thread.

        For startup (create a missing file) and the very end of shutdown, when no writer task
        runs; it blocks on disk I/O, so do not use it while serving. Always writes, even when the
        value is not dirty.

        Raises:
            StoreWriteError: The write failed.
        """
        # Bump the version so this write is never skipped as "already on disk".
        self._version += 1
        try:
            self._write_version(self._capture(), self._version)
        except OSError as exc:
            raise StoreWriteError(self.path, f"cannot write {self.path}: {exc}") from exc
