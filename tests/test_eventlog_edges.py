"""The event log at its edges: what a commit does when the disk, the OS or the run misbehave.

Each test here holds a promise that the mutation run of issue 29 (``docs/testing.md``) showed no
other test held: a change to the code that breaks it left the rest of the suite green.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from codexd_trio.store import _eventlog_files as files_module
from codexd_trio.store import _eventlog_segment as segment
from codexd_trio.store import eventlog as eventlog_module
from codexd_trio.store._eventlog_files import INDEX_EVERY, MAX_CUT_LINES, find_segments
from codexd_trio.store.eventlog import EventLog, EventLogCorrupt
from tests.test_eventlog import lines_on_disk, make_event, write_log


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


async def test_the_index_built_while_appending_is_the_one_a_restart_builds(tmp_path: Path) -> None:
    # The active file's sparse index (a line every INDEX_EVERY) is built two ways: as events are
    # appended, and by scanning the file at start-up. A read seeks by either, so they must agree.
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    try:
        for seq in range(1, 1201):
            log.append(msgspec.structs.replace(make_event(seq), message="x" * (seq % 37)))
            if seq % 150 == 0:
                await log.flush()
        await log.flush()
        live = (list(log._index_seqs), list(log._index_offsets), log._lines_since_index)
        assert len(live[0]) == 1200 // INDEX_EVERY + 1
        for after in (0, 255, 256, 700, 1100):
            assert [e.seq for e in await log.read_after(after, limit=3)] == [
                after + 1, after + 2, after + 3]
    finally:
        log.close()
    reopened = EventLog.open(path)
    try:
        assert (reopened._index_seqs, reopened._index_offsets,
                reopened._lines_since_index) == live
    finally:
        reopened.close()


def test_segment_names_are_read_back_to_their_first_seq(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for name in ("events-000000000001.jsonl", "events-123456789012.jsonl",
                 "events-notaseq.jsonl", "other-000000000002.jsonl"):
        (tmp_path / name).write_bytes(b"")
    assert find_segments(path) == [(1, tmp_path / "events-000000000001.jsonl"),
                                   (123456789012, tmp_path / "events-123456789012.jsonl")]


def test_a_log_holding_a_single_event_keeps_it_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    log.append(make_event(1))
    log.close()
    reopened = EventLog.open(path)
    try:
        assert reopened.last_seq == reopened.durable_seq == 1
    finally:
        reopened.close()
    assert [e.seq for e in lines_on_disk(path)] == [1]


def test_a_crash_that_left_only_reserved_space_is_opened_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A crash right after a rotation (or before the first event) leaves an active file that is
    # all reserved zeros: nothing was torn, so start-up cuts it back without warning anyone.
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    assert path.stat().st_size > 0  # space reserved ahead of the (no) data
    log._file.close()  # the crash: no close(), no cut
    reopened = EventLog.open(path)
    try:
        assert reopened.last_seq == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        reopened.close()


def test_closing_writes_whats_buffered_and_says_it_is_durable(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")
    for seq in (1, 2, 3):
        log.append(make_event(seq))
    log.close()
    assert log.durable_seq == 3
    assert log.waiting == 0


def test_a_stop_that_cannot_cut_the_reserved_space_warns_and_keeps_the_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    log.append(make_event(1))

    def broken_cut(file: object, end: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(segment, "cut", broken_cut)
    log.close()
    assert f"event log: cannot cut {path} back to its data" in caplog.messages
    assert [e.seq for e in lines_on_disk(path)] == [1]  # the data ends at the first zero


def test_a_stop_that_finds_a_write_stuck_in_the_kernel_gives_up_on_the_file_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(eventlog_module, "FINAL_FLUSH_TIMEOUT_S", 0.01)
    log = EventLog.open(tmp_path / "events.jsonl")
    log._io_lock.acquire()  # what a commit thread stuck in a hung sync holds
    try:
        log.close()
        assert "event log: a write is stuck in the kernel; giving up on the file" in (
            caplog.messages)
        assert not log._closed  # a later close, once the write came back, still closes it
    finally:
        log._io_lock.release()
    log.close()
    assert log._closed


def test_a_new_log_file_is_rw_for_its_owner_only_writable(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        log = EventLog.open(tmp_path / "events.jsonl")
        log.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "events.jsonl").stat().st_mode) == 0o644


async def test_a_disk_too_full_to_reserve_space_is_logged_once_per_episode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Commits go on without the reservation (the file grows with each write); the operator is
    # told once when reserving starts failing, and again only after it worked in between.
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=64 * 1024 * 1024)
    real_reserve = segment.reserve
    full = True

    def reserve(file: object, allocated: int, end: int, limit: int) -> int:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_reserve(file, allocated, end, limit)  # type: ignore[arg-type]

    monkeypatch.setattr(segment, "reserve", reserve)
    warning = ("event log: cannot reserve space in events.jsonl (No space left on device); "
               "commits grow the file until a reservation succeeds")
    big = "y" * (segment.RESERVE_STEP // 4)
    try:
        seq = 0
        for episode in range(2):
            for _ in range(6):  # past the reserved space: every commit wants a reservation
                seq += 1
                log.append(msgspec.structs.replace(make_event(seq), message=big))
                await log.flush()
            assert caplog.messages.count(warning) == episode + 1
            full = False
            seq += 1
            log.append(make_event(seq))
            await log.flush()  # reserves again: the next failure is a new episode
            full = True
        assert log.durable_seq == seq
    finally:
        log.close()
    assert [e.seq for e in lines_on_disk(path)] == list(range(1, seq + 1))


def test_up_to_max_cut_lines_damaged_lines_are_a_torn_tail_and_one_more_is_corruption(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    write_log(path, 3)
    whole = path.read_bytes()
    damage = b"not json\n" * (MAX_CUT_LINES - 1) + b'{"seq": 4, "torn'
    with path.open("ab") as f:
        f.write(damage)
    log = EventLog.open(path)  # MAX_CUT_LINES lines cut, as the warning says, exactly
    try:
        assert log.last_seq == 3
    finally:
        log.close()
    assert caplog.messages == [
        f"event log {path}: cut {MAX_CUT_LINES} torn/undecodable trailing line(s), "
        f"{len(damage)} bytes from offset {len(whole)}; continuing after seq 3"]
    with path.open("ab") as f:
        f.write(b"not json\n" * (MAX_CUT_LINES + 1))
    with pytest.raises(EventLogCorrupt, match="damaged lines"):
        EventLog.open(path)


def test_without_fallocate_space_is_reserved_by_writing_zeros_up_to_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # macOS has no posix_fallocate: the reservation writes zeros, from wherever the data ends
    # (not a multiple of the write size) to exactly the step.
    monkeypatch.delattr(os, "posix_fallocate", raising=False)
    path = tmp_path / "events.jsonl"
    with path.open("w+b") as f:
        f.write(b"x" * 100)
        f.flush()
        assert segment.reserve(f, 100, 101, 64 * 1024 * 1024) == segment.RESERVE_STEP
        assert os.fstat(f.fileno()).st_size == segment.RESERVE_STEP
    data = path.read_bytes()
    assert data[:100] == b"x" * 100
    assert data[100:] == bytes(segment.RESERVE_STEP - 100)


class CountingReads:
    """The files a module of the event log opens by name (replays, the tail read at start-up)
    and the bytes read from each: what "a replay reads only near what it wants" is held by."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *modules: object) -> None:
        self.opened: list[str] = []
        self.read: dict[str, int] = {}
        counts = self

        class Raw(io.FileIO):
            # Every way a buffered reader reads its raw file: readinto, and read/readall for
            # read() without a size.
            def _count(self, n: int) -> None:
                name = Path(str(self.name)).name
                counts.read[name] = counts.read.get(name, 0) + n

            def readinto(self, buffer: Any) -> int | None:
                n = super().readinto(buffer)
                self._count(n or 0)
                return n

            def read(self, size: int | None = -1, /) -> bytes:
                data = super().read(size)
                self._count(len(data))
                return data

            def readall(self) -> bytes:
                data = super().readall()
                self._count(len(data))
                return data

        def counting_open(file: Any, mode: str = "r") -> io.BufferedReader:
            assert mode == "rb"
            counts.opened.append(Path(file).name)
            return io.BufferedReader(Raw(file, "r"))

        for module in modules:
            monkeypatch.setattr(module, "open", counting_open, raising=False)

    def reset(self) -> None:
        self.opened.clear()
        self.read.clear()


async def test_a_replay_opens_only_the_files_it_needs_and_reads_near_what_it_wants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 22's transcripts read the newest turns of a log of gigabytes: a replay must not read
    # segments that hold nothing it wants, nor a whole segment to find where to start — it
    # bisects a sealed segment (down to 64 KiB) and seeks the active file by its sparse index.
    # Bounds in bytes, with room for the 8 KiB read buffer and the bisection's probes.
    path = tmp_path / "events.jsonl"
    mib = 1024 * 1024
    log = EventLog.open(path, segment_bytes=mib, retain_segments=10)
    filler = "z" * 400
    seq = 0

    async def append(count: int) -> None:
        nonlocal seq
        for _ in range(count):
            seq += 1
            log.append(msgspec.structs.replace(make_event(seq), message=filler))
        await log.flush()

    try:
        while len(log._segments) < 3:
            await append(1)  # one at a time: the rotation leaves the active file empty
        assert log._durable_end == 0
        _, s2_first, s3_first = (first for first, _ in log._segments)
        _, s2, s3 = (segment_path.name for _, segment_path in log._segments)
        reads = CountingReads(monkeypatch, eventlog_module, files_module)

        async def replay(after: int) -> list[int]:
            reads.reset()
            return [e.seq for e in await log.read_after(after, limit=5)]

        # An empty active file (right after a rotation) is not opened at all.
        middle = (s3_first + log.last_seq) // 2
        assert await replay(middle) == list(range(middle + 1, middle + 6))
        assert reads.opened == [s3]
        assert reads.read[s3] <= 160 * 1024  # bisected, not read from its start (~512 KiB)

        await append(3 * INDEX_EVERY)  # the active file holds events and an index
        active = path.name
        assert await replay(middle) == list(range(middle + 1, middle + 6))
        assert reads.opened == [s3, active]  # the segments before the wanted one stay shut
        assert reads.read[s3] <= 160 * 1024
        assert reads.read.get(active, 0) == 0  # the limit was reached before it

        # Wanting what follows a segment's last event: that segment is not opened.
        assert await replay(s2_first - 1) == list(range(s2_first, s2_first + 5))
        assert reads.opened == [s2, s3, active]
        # A segment wanted from its first event is read from its start, not bisected.
        assert reads.read[s2] <= 16 * 1024

        # The active file is read from the index entry at or before the wanted event.
        indexed = log._index_seqs[2]
        for after in (indexed - 1, indexed, indexed + 1):
            assert await replay(after) == list(range(after + 1, after + 6))
            assert reads.opened == [active]
            assert reads.read[active] <= 16 * 1024  # 256 lines apart are ~130 KiB

        # Start-up finds the seq to continue from in the newest segment's tail, not its whole.
        while log._durable_end:
            await append(1)
        newest = log._segments[-1][1].name
    finally:
        log.close()
    reads.reset()
    reopened = EventLog.open(path, segment_bytes=mib, retain_segments=10)
    try:
        assert reopened.last_seq == seq
        assert reads.opened == [newest]
        assert reads.read[newest] <= 72 * 1024  # a 64 KiB window first
    finally:
        reopened.close()
