"""The order power-loss durability needs, held by recording the calls (issue 29).

A SIGKILL keeps the page cache, so no crash test can see a missing ``fsync``: with every sync in
the store turned into a no-op the whole suite used to pass. These tests record each sync of a
file (``os.fsync`` or ``os.fdatasync``: either is "the sync of the file"), each rename and each
publication, with what the file held when it was synced, and check the order:

- a document: write the temporary file → sync it → rename it over the document → sync the
  directory;
- a journal (the event log, the idempotency journal): the line is in the file when it is
  synced, and the append returns (or the event is published) only after that sync returned;
- a compaction or a rotation: the new file is synced before the rename, the directory after.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from codexd_trio.base.contracts import Event, RecentEvents
from codexd_trio.base.files import append_synced, atomic_write_bytes
from codexd_trio.core.hub import EventHub
from codexd_trio.store.documents import JsonDocument
from codexd_trio.store.eventlog import EventLog
from codexd_trio.store.idempotency import IdempotencyRecord, IdempotencyStore


@dataclass(frozen=True)
class Call:
    what: str  # "sync", "rename", "publish", "returned"
    inode: int = 0
    is_dir: bool = False
    content: bytes = b""
    src: str = ""
    dst: str = ""
    note: str = ""


class Recorder:
    """Wraps ``os.fsync``/``os.fdatasync``/``os.replace``/``os.rename`` (thread-safe)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def add(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def syncs_of(self, path: Path) -> list[int]:
        """Indexes of the syncs of the file now at ``path`` (or of its directory)."""
        st = path.stat()
        return [i for i, c in enumerate(self.calls)
                if c.what == "sync" and c.inode == st.st_ino]

    def index(self, what: str, **match: object) -> int:
        for i, c in enumerate(self.calls):
            if c.what == what and all(getattr(c, k) == v for k, v in match.items()):
                return i
        raise AssertionError(f"no {what} {match} in {self.calls}")


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    real_fsync, real_fdatasync = os.fsync, os.fdatasync
    real_replace, real_rename = os.replace, os.rename

    def sync_with(real: object) -> object:
        def sync(fd: int) -> None:
            st = os.fstat(fd)
            is_dir = stat.S_ISDIR(st.st_mode)
            content = b"" if is_dir else os.pread(fd, st.st_size, 0)
            real(fd)  # type: ignore[operator]
            # Recorded once the sync returned: what came before it is durable.
            rec.add(Call("sync", inode=st.st_ino, is_dir=is_dir, content=content))
        return sync

    def rename_with(real: object, name: str) -> object:
        def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            real(src, dst)  # type: ignore[operator]
            rec.add(Call("rename", src=os.fspath(src), dst=os.fspath(dst), note=name))
        return rename

    monkeypatch.setattr(os, "fsync", sync_with(real_fsync))
    monkeypatch.setattr(os, "fdatasync", sync_with(real_fdatasync))
    monkeypatch.setattr(os, "replace", rename_with(real_replace, "replace"))
    monkeypatch.setattr(os, "rename", rename_with(real_rename, "rename"))
    return rec


def _assert_atomic_replace(rec: Recorder, path: Path, data: bytes, since: int = 0) -> None:
    """write tmp → sync tmp (holding ``data``) → rename over ``path`` → sync the directory."""
    calls = rec.calls[since:]
    renames = [i for i, c in enumerate(calls) if c.what == "rename" and c.dst == str(path)]
    assert renames, f"{path} was never renamed into place: {calls}"
    rename = renames[-1]
    ino = path.stat().st_ino
    file_syncs = [i for i, c in enumerate(calls) if c.what == "sync" and c.inode == ino]
    assert file_syncs, "the new file was never synced"
    assert file_syncs[0] < rename, "the new file must be synced before the rename"
    assert calls[file_syncs[0]].content == data, "synced before it held the whole document"
    dir_ino = path.parent.stat().st_ino
    dir_syncs = [i for i, c in enumerate(calls) if c.what == "sync" and c.inode == dir_ino]
    assert any(i > rename for i in dir_syncs), "the directory must be synced after the rename"


def test_atomic_write_syncs_the_file_renames_then_syncs_the_directory(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(b"old\n")
    atomic_write_bytes(path, b"new contents\n")
    assert path.read_bytes() == b"new contents\n"
    _assert_atomic_replace(recorder, path, b"new contents\n")


def test_a_synced_append_is_in_the_file_when_it_is_synced(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "journal.jsonl"
    with path.open("w+b") as f:
        append_synced(f, b"one\n", 0)
        append_synced(f, b"two\n", 4)
    syncs = [recorder.calls[i] for i in recorder.syncs_of(path)]
    assert [c.content for c in syncs] == [b"one\n", b"one\ntwo\n"]


async def test_a_document_flush_returns_after_its_atomic_replace(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "recent-events.json"
    doc = JsonDocument(path, RecentEvents, RecentEvents(), pretty=False)
    doc.set(RecentEvents(events=[_event(1)]))
    await doc.flush()
    recorder.add(Call("returned"))
    _assert_atomic_replace(recorder, path, path.read_bytes())
    assert recorder.index("rename", dst=str(path)) < recorder.index("returned")


def _event(seq: int) -> Event:
    return Event(seq=seq, at="2026-01-01T00:00:00.000Z", type="test.event",
                 message=f"event {seq}", detail={"n": seq})


def _line_of(seq: int) -> bytes:
    return f'"seq":{seq},'.encode()


async def test_an_event_is_published_only_after_the_sync_that_holds_it(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    recent = JsonDocument(tmp_path / "recent.json", RecentEvents, RecentEvents())
    hub = EventHub(log, recent)
    real_publish = log.on_durable
    assert real_publish is not None

    def publish(batch: list[Event]) -> None:
        for event in batch:
            recorder.add(Call("publish", note=str(event.seq)))
        real_publish(batch)

    log.on_durable = publish
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                async with hub.subscribe(after=None) as sub:
                    for _ in range(3):
                        for _ in range(5):
                            hub.emit("test.event", message="x")
                        await trio.lowlevel.checkpoint()
                    seen = []
                    async for item in sub:
                        seen.append(item.seq)
                        recorder.add(Call("returned", note=str(item.seq)))
                        if item.seq == 15:
                            break
                nursery.cancel_scope.cancel()
    finally:
        log.close()
    assert seen == list(range(1, 16))
    syncs = recorder.syncs_of(path)
    assert syncs, "the event log was never synced"
    for seq in range(1, 16):
        published = recorder.index("publish", note=str(seq))
        delivered = recorder.index("returned", note=str(seq))
        holding = [i for i in syncs if _line_of(seq) in recorder.calls[i].content]
        assert holding, f"event {seq} was never in a synced file"
        assert holding[0] < published < delivered, (
            f"event {seq} was published before the sync that made it durable returned")


async def test_a_rotation_seals_a_synced_file_and_syncs_the_directory_after_the_rename(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=1024, retain_segments=10)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                for seq in range(1, 41):
                    log.append(_event(seq))
                    await log.flush()
                nursery.cancel_scope.cancel()
    finally:
        log.close()
    sealed = [c for c in recorder.calls if c.what == "rename" and c.src == str(path)]
    assert sealed, "no rotation happened"
    dir_ino = tmp_path.stat().st_ino
    for call in sealed:
        rename = recorder.calls.index(call)
        sealed_ino = Path(call.dst).stat().st_ino
        before = [c for c in recorder.calls[:rename]
                  if c.what == "sync" and c.inode == sealed_ino]
        assert before, f"{call.dst} was renamed before its last lines were synced"
        assert before[-1].content.rstrip(b"\0") == Path(call.dst).read_bytes().rstrip(b"\0")
        assert any(c.what == "sync" and c.inode == dir_ino
                   for c in recorder.calls[rename + 1:]), "directory not synced after sealing"


def _record(key: str) -> IdempotencyRecord:
    return IdempotencyRecord(key=key, route="POST /v1/codexd/turn", bodyHash="0" * 64,
                             status=202, response=b'{"ok":true}',
                             contentType="application/json", createdAt=1.0e9)


async def test_an_idempotency_answer_is_recorded_only_after_its_line_is_synced(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "idempotency.jsonl"
    store = IdempotencyStore.open(path, clock=lambda: 1.0e9)
    journal = store.journal
    try:
        for n in range(3):
            await journal.put(_record(f"key-{n}"))
            recorder.add(Call("returned", note=f"key-{n}"))
        syncs = recorder.syncs_of(path)
        for n in range(3):
            holding = [i for i in syncs if f"key-{n}".encode() in recorder.calls[i].content]
            assert holding, f"key-{n} was never in a synced journal"
            assert holding[0] < recorder.index("returned", note=f"key-{n}")
        # Compaction: the new journal is synced whole, then renamed, then the directory.
        since = len(recorder.calls)
        await journal.compact()
        _assert_atomic_replace(recorder, path, path.read_bytes(), since)
    finally:
        journal.close()
