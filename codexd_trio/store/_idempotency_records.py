"""The idempotency journal's records and its file, read and written whole: the line format,
opening, the scan at start-up (cutting a torn tail), the one-time import of the old
``idempotency.json``, and temporary files (private: see :mod:`codexd_trio.store.idempotency`)."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from pathlib import Path
from typing import BinaryIO, NamedTuple

import msgspec

from codexd_trio.base.files import atomic_write_bytes

logger = logging.getLogger(__name__)

RETENTION_S = 24 * 3600.0
MAX_RECORDS = 20_000
# Compact once the journal holds more than COMPACT_RATIO lines per live record and at least
# this many lines: a small journal is not worth rewriting.
COMPACT_MIN_LINES = 4096
COMPACT_RATIO = 2
# A failing disk must not spin the background task: appends are retried at this pace and a
# failed compaction only after the longer pause (the journal stays correct meanwhile).
WRITE_RETRY_S = 1.0
COMPACT_RETRY_S = 60.0
FINAL_FLUSH_TIMEOUT_S = 5.0


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded answer (a line of the journal; ``response`` is base64 in JSON)."""

    key: str
    route: str
    bodyHash: str
    status: int
    response: bytes
    contentType: str
    createdAt: float


class IdempotencyBook(msgspec.Struct, frozen=True, kw_only=True):
    """The shape of the old ``idempotency.json`` (read once, for the migration)."""

    records: list[IdempotencyRecord] = msgspec.field(default_factory=list)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(IdempotencyRecord)


def _encode_line(record: IdempotencyRecord) -> bytes:
    return _encoder.encode(record) + b"\n"


class _Entry(NamedTuple):
    """A record as kept in memory: its journal line, decoded only when the key is asked for."""

    # Keeping the line (about as big as the decoded record) lets a compaction copy bytes
    # instead of re-encoding every record (~2 µs each with the GIL held, which stalls the
    # event loop even from a worker thread).
    createdAt: float
    line: bytes


class _Scan(NamedTuple):
    records: collections.OrderedDict[str, _Entry]
    lines: int
    end: int




def open_file(path: Path) -> BinaryIO:
    # Read/write without O_APPEND: appends go to a known offset, so a failed one can be
    # truncated away and retried.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    return os.fdopen(fd, "r+b")


def scan(path: Path, file: BinaryIO, horizon: float) -> _Scan:
    records: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
    # (offset, ok) of the lines read, to cut back through a damaged tail.
    offsets: list[tuple[int, bool]] = []
    bad_inside = 0
    offset = 0
    file.seek(0)
    for line in file:
        record: IdempotencyRecord | None = None
        if line.endswith(b"\n"):
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                record = _decoder.decode(line)
        offsets.append((offset, record is not None))
        offset += len(line)
        if record is None:
            bad_inside += 1
            continue
        # A key recorded again after its record expired: the newer record, at the back.
        records.pop(record.key, None)
        if record.createdAt >= horizon:
            records[record.key] = _Entry(record.createdAt, line)
    end = offset
    # Only the last append can be torn, and it must go: the next one starts at a line
    # boundary. An undecodable line inside the file is skipped (and compacted away later).
    cut = 0
    while offsets and not offsets[-1][1]:
        end = offsets.pop()[0]
        cut += 1
    bad_inside -= cut
    if cut:
        logger.warning(
            "idempotency journal %s: cut %d torn/undecodable trailing line(s) from byte %d",
            path, cut, end,
        )
        file.truncate(end)
        file.flush()
        os.fsync(file.fileno())
    if bad_inside:
        logger.warning(
            "idempotency journal %s: skipped %d undecodable line(s)", path, bad_inside
        )
    return _Scan(records=records, lines=len(offsets), end=end)


def import_old_book(path: Path, scan: _Scan, old: IdempotencyBook, horizon: float) -> _Scan:
    merged: collections.OrderedDict[str, _Entry] = collections.OrderedDict(
        (r.key, _Entry(r.createdAt, _encode_line(r)))
        for r in sorted(old.records, key=lambda r: r.createdAt)
        if r.createdAt >= horizon
    )
    imported = len(merged)
    for key, entry in scan.records.items():
        merged.pop(key, None)
        merged[key] = entry
    data = b"".join(entry.line for entry in merged.values())
    atomic_write_bytes(path, data)
    logger.info(
        "idempotency: imported %d live record(s) of %d from the old idempotency.json",
        imported, len(old.records),
    )
    return _Scan(records=merged, lines=len(merged), end=len(data))


def discard(tmp: tuple[BinaryIO, str]) -> None:
    file, name = tmp
    file.close()
    with contextlib.suppress(OSError):
        os.unlink(name)
