"""Atomic JSON documents: atomic replace, coalescing writer, flush and cancel semantics."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from codexd_trio.base.files import append_synced, atomic_write_bytes
from codexd_trio.base.limiters import documents_limiter, journal_limiter, reads_limiter
from codexd_trio.store.documents import (
    JsonDocument,
    StoreCorrupt,
    StoreWriteError,
    encode_document,
    read_document,
)


@asynccontextmanager
async def all_tokens_held(*limiters: trio.CapacityLimiter) -> AsyncIterator[None]:
    """Hold every token of ``limiters`` with a worker thread blocked until the block ends: what
    a wave of slow replays does to the limiter they use."""
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        try:
            for limiter in limiters:
                for _ in range(int(limiter.total_tokens)):
                    nursery.start_soon(partial(trio.to_thread.run_sync, gate.wait, limiter=limiter))
            await trio.testing.wait_all_tasks_blocked()
            for limiter in limiters:
                assert limiter.borrowed_tokens == limiter.total_tokens
            yield
        finally:
            gate.set()


class Counter(msgspec.Struct, frozen=True):
    n: int = 0
    label: str = ""


def test_atomic_write_leaves_no_temp_file_and_readers_never_see_a_mix(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "doc.json"
    old, new = b'{"v": "old"}' * 2000, b'{"v": "new"}' * 3000
    atomic_write_bytes(path, old)
    seen: set[bytes] = set()
    done = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not done.is_set():
                seen.add(path.read_bytes())
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(60):
            atomic_write_bytes(path, new if i % 2 == 0 else old)
    finally:
        done.set()
        t.join()
    assert not errors
    assert seen <= {old, new}
    assert path.read_bytes() == old  # the last write (i == 59)
    assert os.listdir(path.parent) == ["doc.json"]


def test_read_document_missing_invalid_and_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    assert read_document(path, Counter) is None
    path.write_bytes(b'{"n": 3, "label": "x"}')
    assert read_document(path, Counter) == Counter(n=3, label="x")
    path.write_bytes(b'{"n": 3, "lab')
    with pytest.raises(StoreCorrupt, match="not valid JSON") as info:
        read_document(path, Counter)
    assert info.value.path == path
    assert str(path) in str(info.value)
    path.write_bytes(b'{"n": "three"}')
    with pytest.raises(StoreCorrupt, match="expected shape") as info:
        read_document(path, Counter)
    assert info.value.path == path
    folder = tmp_path / "folder.json"
    folder.mkdir()  # there, but not a file that can be read
    with pytest.raises(StoreCorrupt, match=r"cannot read .*folder\.json") as info:
        read_document(folder, Counter)
    assert info.value.path == folder


async def test_set_does_not_write_until_flushed(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    doc = JsonDocument(path, Counter, Counter())
    doc.set(Counter(n=1))
    doc.set(Counter(n=2))
    assert doc.value == Counter(n=2)
    assert not path.exists()
    assert doc.dirty
    await doc.flush()
    assert read_document(path, Counter) == Counter(n=2)
    assert not doc.dirty
    assert doc.writes == 1
    await doc.flush()  # nothing new: no write
    assert doc.writes == 1
    doc.set(Counter(n=3))
    await doc.flush()
    assert doc.writes == 2


async def test_writer_writes_on_its_own_and_coalesces(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "doc.json"
    doc = JsonDocument(path, Counter, Counter(), coalesce_s=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(doc.run)
        for i in range(1, 11):
            doc.set(Counter(n=i))
        # Virtual time passes the coalescing window; the writer takes the write lock and
        # starts writing before we get to run again, so the flush below only waits for it.
        await trio.sleep(1)
        await doc.flush()
        assert doc.writes == 1
        assert read_document(path, Counter) == Counter(n=10)

        for i in range(11, 111):
            doc.set(Counter(n=i))
            await trio.sleep(0.001)
        await doc.flush()
        assert read_document(path, Counter) == Counter(n=110)
        # 100 sets over 0.1 virtual seconds: a couple of coalesced writes plus the flush.
        assert doc.writes <= 6
        nursery.cancel_scope.cancel()


async def test_flush_while_writer_runs_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    doc = JsonDocument(path, Counter, Counter(), coalesce_s=10.0)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(doc.run)
            doc.set(Counter(n=7, label="a"))
            async with trio.open_nursery() as flushers:
                for _ in range(5):
                    flushers.start_soon(doc.flush)
            assert read_document(path, Counter) == Counter(n=7, label="a")
            assert doc.writes == 1  # five concurrent flushes shared one write
            nursery.cancel_scope.cancel()


async def test_cancel_performs_a_final_write(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    # A long coalescing window: only the cancellation path can write in time.
    doc = JsonDocument(path, Counter, Counter(), coalesce_s=3600.0)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(doc.run)
            doc.set(Counter(n=42))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert read_document(path, Counter) == Counter(n=42)
    assert not doc.dirty


async def test_cancel_with_nothing_dirty_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    doc = JsonDocument(path, Counter, Counter())
    async with trio.open_nursery() as nursery:
        await nursery.start(doc.run)
        nursery.cancel_scope.cancel()
    assert not path.exists()
    assert doc.writes == 0


def test_write_now_is_synchronous_and_durable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "doc.json"
    doc = JsonDocument(path, Counter, Counter(n=5))
    doc.write_now()  # writes even a value that was never set (startup: create the file)
    assert read_document(path, Counter) == Counter(n=5)
    doc.set(Counter(n=6))
    doc.write_now()
    assert read_document(path, Counter) == Counter(n=6)
    assert not doc.dirty


async def test_write_failure_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    doc = JsonDocument(blocker / "doc.json", Counter, Counter())
    doc.set(Counter(n=1))
    with pytest.raises(StoreWriteError, match=r"cannot write .*doc\.json") as info:
        await doc.flush()
    assert info.value.path == blocker / "doc.json"
    assert doc.dirty
    with pytest.raises(StoreWriteError, match=r"cannot write .*doc\.json") as info:
        doc.write_now()
    assert info.value.path == blocker / "doc.json"


def test_a_document_on_disk_is_indented_json_unless_asked_otherwise(tmp_path: Path) -> None:
    indented, compact = b'{\n  "n": 1,\n  "label": ""\n}\n', b'{"n":1,"label":""}\n'
    assert encode_document(Counter(n=1)) == indented
    assert encode_document(Counter(n=1), pretty=False) == compact
    JsonDocument(tmp_path / "a.json", Counter, Counter(n=1)).write_now()
    JsonDocument(tmp_path / "b.json", Counter, Counter(n=1), pretty=False).write_now()
    assert (tmp_path / "a.json").read_bytes() == indented
    assert (tmp_path / "b.json").read_bytes() == compact


async def _until_written(doc: JsonDocument[Counter]) -> None:
    # Waits on the condition (the writer's own write); the bound is a hang guard.
    with trio.fail_after(20):
        while doc.dirty:  # noqa: ASYNC110 - written from a worker thread, bounded
            await trio.sleep(0.01)


async def test_the_writer_writes_on_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "doc.json"
    doc = JsonDocument(path, Counter, Counter(), coalesce_s=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(doc.run)
        doc.set(Counter(n=1))
        await _until_written(doc)  # no flush: the writer alone
        assert read_document(path, Counter) == Counter(n=1)
        nursery.cancel_scope.cancel()


async def test_the_writer_keeps_running_after_a_flush_wrote_what_woke_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    doc = JsonDocument(tmp_path / "doc.json", Counter, Counter(), coalesce_s=1.0)
    ended = trio.Event()

    async def writer(task_status: trio.TaskStatus[None]) -> None:
        await doc.run(task_status=task_status)
        ended.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(writer)
        doc.set(Counter(n=1))
        await trio.testing.wait_all_tasks_blocked()  # the writer waits out its coalescing
        doc.set(Counter(n=2))  # wakes the writer again, later
        await doc.flush()  # ... but this writes everything first
        await trio.sleep(5)  # virtual: the writer wakes to nothing left to do
        assert not ended.is_set()
        nursery.cancel_scope.cancel()


async def test_a_value_changed_in_place_is_written_after_touch(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    doc = JsonDocument(path, Counter, Counter())
    kept = [Counter(n=1)]
    doc.capture = lambda: partial(encode_document, kept[0])
    for n in (1, 2):  # a couple of writes first: the version is past 1
        doc.set(Counter(n=n))
        await doc.flush()
    kept[0] = Counter(n=9)
    doc.touch()
    assert doc.dirty
    await doc.flush()
    assert read_document(path, Counter) == Counter(n=9)


async def test_the_writer_logs_a_failed_write_and_retries_until_it_lands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where a directory should be")
    doc = JsonDocument(blocker / "doc.json", Counter, Counter(), coalesce_s=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(doc.run)
        doc.set(Counter(n=1))
        with trio.fail_after(20):
            while "store write failed; retrying in 1.0 s" not in caplog.messages:  # noqa: ASYNC110
                await trio.sleep(0.01)
        blocker.unlink()  # the disk is back: the next retry (a second later) writes
        await _until_written(doc)
        assert read_document(blocker / "doc.json", Counter) == Counter(n=1)
        nursery.cancel_scope.cancel()


async def test_a_failed_final_write_is_logged_with_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where a directory should be")
    doc = JsonDocument(blocker / "doc.json", Counter, Counter(), coalesce_s=3600.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(doc.run)
        doc.set(Counter(n=1))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert f"final write of {blocker / 'doc.json'} failed" in caplog.messages


async def test_a_final_write_that_hangs_is_given_up_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "doc.json"
    doc = JsonDocument(path, Counter, Counter(), coalesce_s=3600.0)
    doc.before_write = trio.sleep_forever  # the write never gets its turn
    async with trio.open_nursery() as nursery:
        await nursery.start(doc.run)
        doc.set(Counter(n=1))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert f"final write of {path} did not finish in time" in caplog.messages
    assert doc.dirty


async def test_limiters_are_per_run_and_separate() -> None:
    limiters = [journal_limiter(), documents_limiter(), reads_limiter()]
    assert len({id(x) for x in limiters}) == 3
    assert trio.to_thread.current_default_thread_limiter() not in limiters
    assert journal_limiter() is limiters[0]  # one per Trio run, created on first use
    assert reads_limiter().total_tokens == 8


async def test_a_document_write_completes_while_replays_hold_every_other_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "doc.json"
    doc = JsonDocument(path, Counter, Counter())
    with trio.fail_after(30):
        async with all_tokens_held(
            trio.to_thread.current_default_thread_limiter(), reads_limiter()
        ):
            doc.set(Counter(n=1))
            await doc.flush()
            assert read_document(path, Counter) == Counter(n=1)


def test_atomic_write_creates_missing_folders_and_writes_beside_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a" / "b" / "doc.json"
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src: str, dst: str) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    atomic_write_bytes(path, b"{}\n")
    assert path.read_bytes() == b"{}\n"
    [(src, dst)] = renames
    assert dst == str(path)
    assert Path(src).parent == path.parent  # the same folder: the rename is atomic
    assert Path(src).name.startswith(".doc.json.")
    assert Path(src).name.endswith(".tmp")


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(b"old")

    def refuse(src: object, dst: object) -> None:
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="Permission denied"):
        atomic_write_bytes(path, b"new")
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_bytes() == b"old"


def test_a_failed_synced_append_cuts_what_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"one\n")
    with path.open("r+b") as file:

        def no_sync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", no_sync)
        with pytest.raises(OSError, match="Input/output error"):
            append_synced(file, b"two\n", 4)
    assert path.read_bytes() == b"one\n"
