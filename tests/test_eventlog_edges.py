"""The event log at its edges: what a commit does when the disk, the OS or the run misbehave.

Each test here holds a promise that the mutation run of issue 29 (``docs/testing.md``) showed no
other test held: a change to the code that breaks it left the rest of the suite green.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from codexd_trio.store import _eventlog_segment as segment
from codexd_trio.store.eventlog import EventLog
from tests.test_eventlog import lines_on_disk, make_event


def test_a_commit_that_returns_after_the_run_ended_is_dropped_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stop that gave up on a hung sync (the final flush's deadline) ends the Trio run with the
    # commit's thread still in the kernel. When the sync returns there is no run to settle it
    # on: the thread must end quietly, not die with a traceback on the daemon's stderr.
    log = EventLog.open(tmp_path / "events.jsonl")
    gate, delivered = threading.Event(), threading.Event()
    raised: list[BaseException] = []
    real_write, real_deliver = log._write_batch, log._deliver

    def held(data: bytes, start: int) -> None:
        gate.wait()
        real_write(data, start)

    def deliver(token: trio.lowlevel.TrioToken, commit: object, outcome: object) -> None:
        try:
            real_deliver(token, commit, outcome)  # type: ignore[arg-type]
        except BaseException as exc:  # recorded for the assertion below
            raised.append(exc)
        finally:
            delivered.set()

    monkeypatch.setattr(log, "_write_batch", held)
    monkeypatch.setattr(log, "_deliver", deliver)

    async def stop_while_the_commit_hangs() -> None:
        async with trio.open_nursery() as nursery:
            log.append(make_event(1))
            nursery.start_soon(log.flush)
            await trio.testing.wait_all_tasks_blocked()  # the commit waits in its thread
            nursery.cancel_scope.cancel(reason="the stop gave up on it")

    try:
        trio.run(stop_while_the_commit_hangs)
        gate.set()
        assert delivered.wait(timeout=30)
        assert raised == []
    finally:
        gate.set()
        log.close()
    assert [e.seq for e in lines_on_disk(tmp_path / "events.jsonl")] == [1]


async def test_a_commit_whose_accounting_fails_is_logged_and_its_waiters_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")

    def broken_subscriber(events: object) -> None:
        raise RuntimeError("a bug downstream of the log")

    log.on_durable = broken_subscriber
    try:
        log.append(make_event(1))
        with trio.fail_after(20):
            await log.flush()
        assert log.durable_seq == 1
        assert "event log: settling a commit failed" in caplog.messages
        log.append(make_event(2))
        with trio.fail_after(20):
            await log.flush()
        assert log.durable_seq == 2
    finally:
        log.close()


async def test_a_commit_thread_that_cannot_start_fails_only_that_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoThreads(RuntimeError):
        pass

    def refuse(*args: object, **kwargs: object) -> None:
        raise NoThreads("can't start new thread")

    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    try:
        log.append(make_event(1))
        with monkeypatch.context() as patched:
            patched.setattr(trio.lowlevel, "start_thread_soon", refuse)
            with pytest.raises(NoThreads):  # the cause, not an error of the clean-up
                await log.flush()
        assert log.durable_seq == 0
        with trio.fail_after(20):  # no commit is left "in flight", no token is left held
            await log.flush()
        assert log.durable_seq == 1
        assert [e.seq for e in lines_on_disk(path)] == [1]
    finally:
        log.close()


async def test_a_commit_syncs_its_data_only_where_the_os_has_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 27: bytes written into reserved space need a data-only sync (no journal commit of
    # metadata); fsync is the fallback where there is no fdatasync (and macOS uses F_FULLFSYNC).
    if segment._FULLFSYNC is not None:
        pytest.skip("macOS syncs with F_FULLFSYNC")
    calls: list[tuple[str, int]] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        calls.append(("fdatasync", fd))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    log = EventLog.open(tmp_path / "events.jsonl")
    try:
        fd = log._file.fileno()
        calls.clear()
        log.append(make_event(1))
        await log.flush()
        assert calls == [("fdatasync", fd)]

        calls.clear()
        monkeypatch.delattr(os, "fdatasync")
        log.append(make_event(2))
        await log.flush()
        assert calls == [("fsync", fd)]
        assert log.durable_seq == 2
    finally:
        log.close()
    assert [e.seq for e in lines_on_disk(tmp_path / "events.jsonl")] == [1, 2]


async def test_a_commit_the_os_writes_in_short_pieces_lands_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pwrite may write less than it was given (a signal, a full pipe of a FUSE filesystem).
    real_pwrite = os.pwrite
    pieces: list[int] = []

    def short(fd: int, data: bytes, offset: int) -> int:
        pieces.append(offset)
        return real_pwrite(fd, bytes(memoryview(data)[:7]), offset)

    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    try:
        monkeypatch.setattr(os, "pwrite", short)
        for seq in range(1, 6):
            log.append(make_event(seq))
        with trio.fail_after(20):
            await log.flush()
        assert len(pieces) > 5
    finally:
        monkeypatch.undo()
        log.close()
    assert [e.seq for e in lines_on_disk(path)] == [1, 2, 3, 4, 5]


async def test_a_failed_commit_reports_the_write_error_even_when_cutting_back_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What readiness shows ("No space left on device") is the cause, not the clean-up's error.
    def no_space(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def broken_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    try:
        log.append(make_event(1))
        with monkeypatch.context() as patched:
            patched.setattr(os, "pwrite", no_space)
            patched.setattr(os, "ftruncate", broken_truncate)
            with pytest.raises(OSError, match="No space left on device") as failed:
                await log.flush()
        assert failed.value.errno == errno.ENOSPC
        await log.flush()  # the disk is back: the same event is written, once
        assert log.durable_seq == 1
    finally:
        log.close()
    assert [e.seq for e in lines_on_disk(path)] == [1]


def test_appending_to_a_closed_log_is_a_programming_error_that_says_so(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")
    log.close()
    with pytest.raises(AssertionError, match=r"^append to a closed event log$"):
        log.append(make_event(1))


async def test_a_log_task_that_wakes_to_an_empty_buffer_keeps_running(tmp_path: Path) -> None:
    # A flush made everything durable before the task looked: it finds nothing to commit and
    # must wait for the next event, not end (events would then never be committed again).
    log = EventLog.open(tmp_path / "events.jsonl")
    try:
        log.append(make_event(1))
        await log.flush()  # the task has not run yet: it will wake to an empty buffer
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            await trio.testing.wait_all_tasks_blocked()
            log.append(make_event(2))
            with trio.fail_after(20):
                await log.wait_durable(2)  # committed by the task alone
            nursery.cancel_scope.cancel()
    finally:
        log.close()


async def test_non_ascii_events_of_any_length_are_read_from_bisected_segments_and_the_active_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Offsets are bytes. Lines of varying length put the bisection's probes anywhere, inside a
    # multi-byte character too, and the active file holds data when it is read: a file read as
    # text would fail to decode there, or count characters as bytes and read past the data.
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=256 * 1024, retain_segments=10)

    def message(seq: int) -> str:
        return "é" * (40 + seq % 23) + "✓" * (seq % 5)

    try:
        seq = 0
        while len(log._segments) < 2 or log.last_seq - log._active_first < 50:
            seq += 1
            log.append(msgspec.structs.replace(make_event(seq), message=message(seq)))
            if seq % 100 == 0:
                await log.flush()
        await log.flush()
        assert log._durable_end > 0  # the active file holds events
        last = log.last_seq
        first_segment_end = log._segments[1][0] - 1
        for after in (first_segment_end // 2, first_segment_end // 3 + 7, last - 30):
            got = await log.read_after(after, limit=40)
            assert [e.seq for e in got] == list(range(after + 1, min(after + 41, last + 1)))
            assert [e.message for e in got] == [message(e.seq) for e in got]
        assert [e.seq for e in await log.read_after(last - 5)] == list(
            range(last - 4, last + 1))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        log.close()
