"""The conversation store's files (blocking helpers, for worker threads and start-up).

Layout under ``logs/codexd/conversation/``:

* ``records-<n, 6 digits>.jsonl``: the records, one JSON line each, append-only. A turn's
  line ``{"k":"t","s":session,"o":ordinal,"q":seq,"turn":{…}}`` (the turn as a page shows it,
  every item capped) follows one ``{"k":"i","s":…,"t":turn,"item":{…}}`` line per item that was
  cut, holding it whole. Sealed at the segment size; the oldest are removed past the count kept.
* ``index.jsonl``: one line per record, ``{"s","t","o","g","p","n","f"}`` (session, turn,
  ordinal, segment, offset, length, and ``[[item, segment, offset, length]]`` of the whole
  items), and ``{"s","rm":[turn ids]}`` for a rollback. Read whole at start: ~150 bytes a turn.
* ``checkpoint.json``: ``{"resumeSeq": N}``: every turn whose events are all at or below the
  event log's seq N has its record here; start-up folds the log after N again.

Records and their index lines are written and fsynced before the checkpoint that claims them,
so after a crash the checkpoint never claims a record that is not on disk; what is on disk past
it (written, not yet claimed) is cut at start and folded again from the log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from codexd_trio.base.files import atomic_write_bytes, fsync_dir

__all__ = [
    "CHECKPOINT",
    "INDEX",
    "Entry",
    "Loaded",
    "load",
    "segment_path",
]

INDEX = "index.jsonl"
CHECKPOINT = "checkpoint.json"
_SEGMENT = re.compile(r"\Arecords-(\d{6})\.jsonl\Z")

_json = msgspec.json.Encoder()
_decode_any = msgspec.json.Decoder()


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    version: int = 1
    resumeSeq: int = 0


@dataclass
class Entry:
    """Where one turn's record is: the session's ``ordinal``-th record (never reused), in
    segment ``segment`` at ``offset``, ``length`` bytes; its cut items' whole versions."""

    turn_id: str
    ordinal: int
    segment: int
    offset: int
    length: int
    full: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def index_line(self, session_id: str) -> bytes:
        line = {"s": session_id, "t": self.turn_id, "o": self.ordinal, "g": self.segment,
                "p": self.offset, "n": self.length,
                "f": [[item, *where] for item, where in self.full.items()]}
        return _json.encode(line) + b"\n"


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"records-{number:06d}.jsonl"


def _segments(directory: Path) -> dict[int, Path]:
    out = {}
    for path in directory.iterdir():
        found = _SEGMENT.match(path.name)
        if found:
            out[int(found.group(1))] = path
    return out


@dataclass
class Loaded:
    sessions: dict[str, list[Entry]]
    next_ordinal: dict[str, int]
    segments: list[int]
    active_end: int
    index_end: int
    resume_seq: int
    dropped_lines: int = 0


def _entry(raw: dict[str, Any]) -> tuple[str, Entry] | None:
    try:
        full = {str(f[0]): (int(f[1]), int(f[2]), int(f[3])) for f in raw.get("f") or ()}
        return str(raw["s"]), Entry(turn_id=str(raw["t"]), ordinal=int(raw["o"]),
                                     segment=int(raw["g"]), offset=int(raw["p"]),
                                     length=int(raw["n"]), full=full)
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def load(directory: Path) -> Loaded:
    """Read the index and the checkpoint, cut what a crash left unclaimed (blocking)."""
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint()
    try:
        checkpoint = msgspec.json.decode((directory / CHECKPOINT).read_bytes(), type=Checkpoint)
    except FileNotFoundError:
        pass
    except (msgspec.DecodeError, OSError):
        # A derived file: refold the whole retained log rather than refuse to start.
        checkpoint = Checkpoint()
    segments = _segments(directory)
    sizes = {n: p.stat().st_size for n, p in segments.items()}
    sessions: dict[str, list[Entry]] = {}
    next_ordinal: dict[str, int] = {}
    seen: dict[str, set[str]] = {}
    index_path = directory / INDEX
    data = index_path.read_bytes() if index_path.exists() else b""
    good_end, dropped = 0, 0
    position = 0
    for line in data.splitlines(keepends=True):
        position += len(line)
        if not line.endswith(b"\n"):
            break  # a torn last line
        try:
            raw = _decode_any.decode(line)
        except msgspec.DecodeError:
            break
        good_end = position
        if not isinstance(raw, dict):
            continue
        if "rm" in raw:
            removed = set(raw.get("rm") or ())
            sid = str(raw.get("s"))
            if sid in sessions:
                sessions[sid] = [e for e in sessions[sid] if e.turn_id not in removed]
            seen.get(sid, set()).difference_update(removed)
            continue
        parsed = _entry(raw)
        if parsed is None:
            continue
        sid, entry = parsed
        next_ordinal[sid] = max(next_ordinal.get(sid, 0), entry.ordinal + 1)
        # A rewrite of the index (retention) can meet a line that was still to be appended.
        if entry.turn_id in seen.setdefault(sid, set()):
            continue
        seen[sid].add(entry.turn_id)
        wheres = [(entry.segment, entry.offset, entry.length), *entry.full.values()]
        if any(sizes.get(g, -1) < p + n for g, p, n in wheres):
            dropped += 1  # its segment was removed by retention
            continue
        sessions.setdefault(sid, []).append(entry)
    numbers = sorted(segments) or [1]
    active = numbers[-1]
    # The active segment ends where the last claimed record ends: anything after it was written
    # but never indexed, and is folded from the event log again.
    active_end = 0
    for entries in sessions.values():
        for e in entries:
            for g, p, n in [(e.segment, e.offset, e.length), *e.full.values()]:
                if g == active:
                    active_end = max(active_end, p + n)
    if sizes.get(active, 0) > active_end:
        with open(segment_path(directory, active), "r+b") as f:
            f.truncate(active_end)
            os.fsync(f.fileno())
    if len(data) > good_end:
        with open(index_path, "r+b") as f:
            f.truncate(good_end)
            os.fsync(f.fileno())
    return Loaded(sessions=sessions, next_ordinal=next_ordinal, segments=numbers,
                  active_end=active_end, index_end=good_end, resume_seq=checkpoint.resumeSeq,
                  dropped_lines=dropped)


def append_at(path: Path, start: int, data: bytes) -> None:
    """Write ``data`` at ``start`` of ``path`` (created if missing) and fsync it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, start)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(directory: Path, resume_seq: int) -> None:
    atomic_write_bytes(directory / CHECKPOINT, _json.encode(Checkpoint(resumeSeq=resume_seq)))


def rewrite_index(directory: Path, sessions: dict[str, list[Entry]]) -> int:
    """Replace the index with the entries still held (after retention removed segments)."""
    data = b"".join(e.index_line(sid) for sid, entries in sessions.items() for e in entries)
    atomic_write_bytes(directory / INDEX, data)
    return len(data)


def remove_segments(directory: Path, numbers: list[int]) -> None:
    for number in numbers:
        segment_path(directory, number).unlink(missing_ok=True)
    fsync_dir(directory)


def read_at(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"short read: {len(data)} of {length} bytes at {offset}")
    return data
