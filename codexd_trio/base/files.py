"""Durable file primitives: atomic replacement, synced appends, directory fsync.

Standard library only and blocking: call them from a worker thread in async code. Used by the
store (documents, event log, idempotency journal) and by the conductor's lease and mode files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

__all__ = ["append_synced", "atomic_write_bytes", "fsync_dir"]


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable; best effort. A path that is
    not a directory is left alone (``O_DIRECTORY``), never opened and synced as a file."""
    # The rename is only durable once the directory entry is; some platforms refuse to open or
    # fsync a directory, and there is nothing better to do there than carry on.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def append_synced(file: BinaryIO, data: bytes, start: int) -> None:
    """Write ``data`` at ``start`` of an append-only journal and fsync it (worker thread).

    On failure whatever part of ``data`` landed is cut off again, so a retry never leaves a torn
    line in the middle of the journal. Shared by the event log and the idempotency journal.
    """
    try:
        file.seek(start)
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    except OSError:
        with contextlib.suppress(OSError):
            file.truncate(start)
            file.flush()
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix.

    Writes a temporary file in the same directory, fsyncs it, renames it over ``path`` with
    :func:`os.replace` and fsyncs the directory. Creates the parent directory if needed.
    Blocking: call it from a worker thread in async code.

    Args:
        path: The file to replace.
        data: Its complete new content.

    Raises:
        OSError: The write failed; ``path`` still holds its previous content.

    Resource handling:
        The temporary file is removed if anything fails before the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)
