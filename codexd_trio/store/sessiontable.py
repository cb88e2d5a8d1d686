"""The sessions of one codexd in little memory: a few hot objects, the rest packed.

A node that runs for months gathers sessions: 100 000 of them as :class:`Session` objects cost
about 1.1 kB each (a struct and eight or more separate strings), over 100 MB. The table keeps the
sessions touched lately as objects (an LRU of :data:`HOT_SESSIONS`: a running turn's session is
looked up for every notification) and packs the others into one ``bytes`` each (msgpack, fields
by position, about 330 bytes). Unpacking one costs a couple of microseconds, on the rare read of a
cold session.

The registry snapshot (``session-registry.json``) is written from a :meth:`SessionTable.freeze`
copy (taken on the Trio thread, cheap: the packed bytes are immutable and shared) by a worker
thread that encodes one session at a time, so the event loop keeps its turns while a big registry
is written. :func:`read_registry` decodes the file one session at a time for the same reason: the
whole registry never exists as objects at once, so start-up does not leave a high-water mark.
"""

from __future__ import annotations

import bisect
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import msgspec

from codexd_trio.base.contracts import QueueSnapshot, Session, SessionRegistry
from codexd_trio.store.documents import StoreCorrupt

__all__ = [
    "HOT_SESSIONS", "ActivityIndex", "FrozenTable", "RegistryFile", "SessionTable",
    "activity_time", "open_registry", "read_registry",
]

HOT_SESSIONS = 4096

_FIELDS = msgspec.structs.fields(Session)
_NAMES = tuple(f.name for f in _FIELDS)
# The same fields as an array: no field names in every packed record.
_Packed = msgspec.defstruct(
    "_PackedSession", [(f.name, f.type) for f in _FIELDS], array_like=True, gc=False
)
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(_Packed).decode
_json = msgspec.json.Encoder().encode


def pack(session: Session) -> bytes:
    return _pack(msgspec.structs.astuple(session))


def unpack(data: bytes) -> Session:
    return Session(**msgspec.structs.asdict(_unpack(data)))


class FrozenTable:
    """A consistent copy of the table for a writer thread: the order and the two stores."""

    def __init__(self, order: list[str], cold: dict[str, bytes], hot: dict[str, Session]) -> None:
        self._order = order
        self._cold = cold
        self._hot = hot

    def sessions(self) -> Iterator[Session]:
        for sid in self._order:
            session = self._hot.get(sid)
            yield session if session is not None else unpack(self._cold[sid])

    def registry_json(self, last_seq: int, queue: QueueSnapshot | None = None) -> bytes:
        """The registry document, encoded one session at a time (the GIL is released between
        them, so the event loop is not held for the whole encoding); ``queue``: the turn
        queues captured with the table."""
        head = _json(SessionRegistry(lastSeq=last_seq, queue=queue or QueueSnapshot()))
        # '{"version":1,"lastSeq":N,"queue":{…},"sessions":[]}' -> open the list and fill it.
        assert head.endswith(b"[]}"), head
        parts = [head[:-2]]
        parts.append(b",".join(_json(s) for s in self.sessions()))
        parts.append(b"]}\n")
        return b"".join(parts)


class SessionTable:
    """``session id -> Session`` in creation order, most of it packed."""

    def __init__(self, hot_size: int = HOT_SESSIONS) -> None:
        self._hot: OrderedDict[str, Session] = OrderedDict()
        self._cold: dict[str, bytes] = {}
        self._hot_size = hot_size
        # Creation order: sessions are never removed, so a position is a stable page cursor.
        self.order: list[str] = []

    def __len__(self) -> int:
        return len(self.order)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._hot or session_id in self._cold

    def get(self, session_id: str) -> Session | None:
        session = self._hot.get(session_id)
        if session is not None:
            self._hot.move_to_end(session_id)
            return session
        data = self._cold.get(session_id)
        if data is None:
            return None
        session = unpack(data)
        self._warm(session)
        return session

    def __getitem__(self, session_id: str) -> Session:
        session = self.get(session_id)
        if session is None:
            raise KeyError(session_id)
        return session

    def put(self, session: Session) -> None:
        """Insert or replace (a new session goes to the end of the order)."""
        sid = session.sessionId
        if sid not in self:
            self.order.append(sid)
        self._warm(session)

    def load(self, sessions: Iterable[Session]) -> None:
        """Add sessions straight to the packed store (start-up: none of them is hot yet)."""
        for session in sessions:
            sid = session.sessionId
            if sid not in self:
                self.order.append(sid)
            self._hot.pop(sid, None)
            self._cold[sid] = pack(session)

    def _warm(self, session: Session) -> None:
        sid = session.sessionId
        self._cold.pop(sid, None)
        self._hot[sid] = session
        self._hot.move_to_end(sid)
        while len(self._hot) > self._hot_size:
            old_sid, old = self._hot.popitem(last=False)
            self._cold[old_sid] = pack(old)

    def values(self) -> Iterator[Session]:
        """Every session in creation order (unpacks the cold ones; O(sessions))."""
        return self.freeze().sessions()

    def freeze(self) -> FrozenTable:
        return FrozenTable(list(self.order), dict(self._cold), dict(self._hot))


def activity_time(updated_at: str) -> float:
    """``updatedAt`` as epoch seconds (0 for a value that is not an ISO time)."""
    try:
        return datetime.fromisoformat(updated_at).timestamp()
    except ValueError:
        return 0.0


class ActivityIndex:
    """Session ids by last activity: ``(updatedAt, sessionId)`` ascending, newest last.

    Two flat arrays (16 bytes a session) searched with ``bisect``: a page from any point is
    O(log n + page), moving a session is one memmove.
    """

    def __init__(self) -> None:
        self._times = array("d")
        self._ids: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def load(self, times: array[float], ids: list[str]) -> None:
        """Take the keys of the sessions read at start-up, in any order.

        They are gathered as flat arrays while the registry is read (no object per session
        that would leave holes in the heap between the packed sessions); the sort's temporary
        keys are allocated together afterwards and freed together.
        """
        # By time only (a float key per session, not a tuple), then the rare runs of equal
        # times by id.
        order = sorted(range(len(ids)), key=times.__getitem__)
        self._times = array("d", (times[i] for i in order))
        self._ids = [ids[i] for i in order]
        del order
        start = 0
        for end in range(1, len(self._ids) + 1):
            if end == len(self._ids) or self._times[end] != self._times[start]:
                if end - start > 1:
                    self._ids[start:end] = sorted(self._ids[start:end])
                start = end

    def _position(self, t: float, sid: str) -> int:
        # The first key >= (t, sid): the times first, then the ids within equal times.
        lo = bisect.bisect_left(self._times, t)
        hi = bisect.bisect_right(self._times, t, lo)
        return bisect.bisect_left(self._ids, sid, lo, hi)

    def move(self, sid: str, old: float | None, new: float) -> None:
        """Record that ``sid``'s activity time went from ``old`` (None: new session) to ``new``."""
        if old is not None:
            i = self._position(old, sid)
            if i < len(self._ids) and self._ids[i] == sid:
                del self._times[i]
                del self._ids[i]
        i = self._position(new, sid)
        self._times.insert(i, new)
        self._ids.insert(i, sid)

    def newest_first(self, before: tuple[float, str] | None = None
                     ) -> Iterator[tuple[float, str]]:
        """Keys from the newest down, starting below ``before`` when given."""
        end = len(self._ids) if before is None else self._position(*before)
        for i in range(end - 1, -1, -1):
            yield self._times[i], self._ids[i]


class RegistryFile(NamedTuple):
    """What :func:`open_registry` read: the seq it reflects, its sessions (decoded lazily, one
    by one) and the turn queues."""

    last_seq: int
    sessions: Iterator[Session]
    queue: QueueSnapshot


def read_registry(path: Path) -> tuple[int, Iterator[Session]]:
    """Open ``session-registry.json``: its ``lastSeq`` and its sessions, decoded one by one.

    Raises:
        StoreCorrupt: see :func:`open_registry`.
    """
    registry = open_registry(path)
    return registry.last_seq, registry.sessions


def open_registry(path: Path) -> RegistryFile:
    """Open ``session-registry.json``: its ``lastSeq``, its sessions decoded one by one, and
    the turn queues (empty in a registry written before there were queues).

    Raises:
        StoreCorrupt: The file cannot be read or does not hold a registry (a session that does
            not decode raises it too, from the iterator).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return RegistryFile(0, iter(()), QueueSnapshot())
    except OSError as exc:
        raise StoreCorrupt(path, f"cannot read {path}: {exc}") from exc
    try:
        head = msgspec.json.decode(data, type=_RegistryHead)
    except msgspec.ValidationError as exc:
        raise StoreCorrupt(path, f"{path} does not have the expected shape: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise StoreCorrupt(path, f"{path} is not valid JSON: {exc}") from exc
    del data  # the Raw items keep the buffer until the last one is decoded

    def sessions() -> Iterator[Session]:
        decode = msgspec.json.Decoder(Session).decode
        raws = head.sessions
        for index in range(len(raws)):
            raw, raws[index] = raws[index], _EMPTY
            try:
                yield decode(raw)
            except msgspec.ValidationError as exc:
                raise StoreCorrupt(
                    path, f"{path}: session {index} does not have the expected shape: {exc}"
                ) from exc

    return RegistryFile(head.lastSeq, sessions(), head.queue)


_EMPTY = msgspec.Raw()


class _RegistryHead(msgspec.Struct, kw_only=True):
    version: int = 1
    lastSeq: int = 0
    queue: QueueSnapshot = msgspec.field(default_factory=QueueSnapshot)
    sessions: list[msgspec.Raw] = msgspec.field(default_factory=list)
