"""``events.jsonl`` on disk, read: the line format, finding sealed segments and their last seq,
and reading a seq range through the sparse index (private: see :mod:`codexd_trio.store.eventlog`).
The readers run in worker threads on file handles the event log opened."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from codexd_trio.base.contracts import Event

logger = logging.getLogger("codexd_trio.store.eventlog")

INDEX_EVERY = 256
# How many undecodable lines at the end of the file open() cuts before calling the file corrupt
# rather than torn: a torn write damages the tail of one write, never pages of events.
MAX_CUT_LINES = 64
# Start-up reads the active file in chunks this big (the data, then at most one chunk of the
# reserved zeros after it).
_SCAN_CHUNK = 1 << 20

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



def find_segments(path: Path) -> list[tuple[int, Path]]:
    found: list[tuple[int, Path]] = []
    for candidate in path.parent.glob(f"{path.stem}-*{path.suffix}"):
        digits = candidate.name[len(path.stem) + 1 : -len(path.suffix) or None]
        if digits.isdigit():
            found.append((int(digits), candidate))
    return sorted(found)


def last_seq_of(segment: Path) -> int:
    """The seq of the last whole line of a sealed segment (read from its tail)."""
    with open(segment, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        chunk = 1 << 16
        while True:
            start = max(0, size - chunk)
            f.seek(start)
            lines = f.read(size - start).split(b"\n")
            for line in reversed(lines[1:] if start > 0 else lines):
                with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                    if line:
                        return _head_decoder.decode(line).seq
            if start == 0:
                return 0
            chunk *= 4


def bisect_offset(f: BinaryIO, size: int, after_seq: int) -> int:
    """Offset of a line at or before the first event with ``seq > after_seq``."""
    lo, hi = 0, size
    while hi - lo > 1 << 16:
        mid = (lo + hi) // 2
        f.seek(mid)
        f.readline()  # skip to the next line start
        line = f.readline()
        try:
            seq = _head_decoder.decode(line).seq
        except (msgspec.ValidationError, msgspec.DecodeError):
            break
        if seq <= after_seq:
            lo = mid
        else:
            hi = mid
    if lo == 0:
        return 0
    f.seek(lo)
    f.readline()
    return f.tell()


def read_lines(parts: list[tuple[BinaryIO, int, int]], after_seq: int,
               limit: int | None, session_id: str | None) -> list[Event]:
    # Worker thread, on file handles opened by the Trio thread; closes them all.
    out: list[Event] = []
    try:
        for f, start, end in parts:
            if start < 0:
                start = bisect_offset(f, end, after_seq)
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
                    if session_id is not None and head.sessionId != session_id:
                        continue
                    out.append(_event_decoder.decode(line))
                except (msgspec.ValidationError, msgspec.DecodeError):
                    logger.warning("event log %s: skipping undecodable line at byte %d",
                                   f.name, pos - len(line))
                    continue
                if limit is not None and len(out) >= limit:
                    return out
        return out
    finally:
        for f, _, _ in parts:
            f.close()


def iter_data_lines(file: BinaryIO, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of the data in ``file`` from ``start``: every line with its newline,
    up to the first zero byte (the reserved, zero-filled rest of an active segment; a JSON line
    never holds one). The last piece has no newline when the data ends torn."""
    file.seek(start)
    offset = start
    pending = b""
    while True:
        chunk = file.read(_SCAN_CHUNK)
        if not chunk:
            break
        zero = chunk.find(b"\0")
        if zero >= 0:
            chunk = chunk[:zero]
        pieces = (pending + chunk).split(b"\n")
        pending = pieces.pop()
        for piece in pieces:
            yield offset, piece + b"\n"
            offset += len(piece) + 1
        if zero >= 0:
            break
    if pending:
        yield offset, pending


def scan_active(path: Path, file: BinaryIO) -> tuple[list[tuple[int, int]], int, int, int]:
    """Scan the active file at start-up: ``(sparse index, lines since the last index entry,
    last seq, end offset)``.

    The data ends at the first zero byte (the framing of a segment with reserved space, see
    ``_eventlog_segment``); a torn or undecodable tail before it (at most ``MAX_CUT_LINES``
    lines) is cut too. Nothing is changed on disk: the caller cuts the file back to ``end``.
    """
    index: list[tuple[int, int]] = []
    since_index = INDEX_EVERY  # index the first line
    # (offset, line) of the last lines, to cut back through a damaged tail.
    tail: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=MAX_CUT_LINES + 1)
    offset = 0
    for offset, line in iter_data_lines(file):
        if since_index >= INDEX_EVERY and line.endswith(b"\n"):
            try:
                index.append((_head_decoder.decode(line).seq, offset))
                since_index = 0
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass  # damaged line: sample the next one instead
        since_index += 1
        tail.append((offset, line))
    data_end = tail[-1][0] + len(tail[-1][1]) if tail else 0
    end = data_end
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
    if end != data_end:
        logger.warning(
            "event log %s: cut %d torn/undecodable trailing line(s), %d bytes from offset %d; "
            "continuing after seq %d",
            path, cut, data_end - end, end, last_seq,
        )
        while index and index[-1][1] >= end:
            index.pop()
        since_index = 0
    return index, since_index, last_seq, end
