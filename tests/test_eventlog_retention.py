"""events.jsonl rotation and retention: the log stays bounded and replay stays gap-free."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from codexd_trio.base.contracts import RecentEvents
from codexd_trio.base.limiters import reads_limiter
from codexd_trio.core.hub import EventHub
from codexd_trio.store._eventlog_commit import GroupCommit
from codexd_trio.store.documents import JsonDocument
from codexd_trio.store.eventlog import EventLog
from tests.test_eventlog import make_event
from tests.test_store import all_tokens_held

# Each test event line is ~130 bytes: a 4 KiB segment holds ~30 of them.
SEGMENT = 4096


async def fill(log: EventLog, first: int, count: int, *, every: int = 7) -> None:
    for seq in range(first, first + count):
        log.append(make_event(seq, "s-odd" if seq % 2 else None))
        if seq % every == 0:
            await log.flush()
    await log.flush()


def sealed(path: Path) -> list[Path]:
    return sorted(path.parent.glob("events-*.jsonl"))


async def test_full_segments_are_sealed_and_old_ones_dropped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=3)
    try:
        await fill(log, 1, 600)
        segments = sealed(path)
        assert len(segments) == 3
        # Names carry each segment's first seq; the oldest retained is first_seq.
        firsts = [int(p.stem.split("-")[1]) for p in segments]
        assert firsts == sorted(firsts)
        assert log.first_seq == firsts[0] > 1
        total = sum(p.stat().st_size for p in segments) + path.stat().st_size
        assert total < 5 * SEGMENT  # bounded: 3 sealed + the active one
        # Sealed segments were cut back to their data: no reserved zeros in old files.
        assert all(b"\0" not in p.read_bytes() for p in segments)
        assert path.stat().st_size <= SEGMENT  # nothing reserved past the seal
        events = await log.read_after(0)
        assert [e.seq for e in events] == list(range(log.first_seq, 601))
    finally:
        log.close()


async def test_replay_from_inside_a_sealed_segment_and_with_a_filter(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=50)
    try:
        await fill(log, 1, 400)
        assert len(sealed(path)) > 5
        for after in (0, 1, 57, 58, 199, 333, 399, 400):
            got = await log.read_after(after)
            assert [e.seq for e in got] == list(range(after + 1, 401)), after
        odd = await log.read_after(100, session_id="s-odd", limit=10)
        assert [e.seq for e in odd] == list(range(101, 121, 2))
    finally:
        log.close()


async def test_reopen_continues_seq_after_a_rotation_left_an_empty_active_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=4)
    await fill(log, 1, 200)
    first = log.first_seq
    log.close()
    path.write_bytes(b"")  # as if the process died right after sealing
    reopened = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=4)
    try:
        newest_sealed_last = max(e.seq for e in await reopened.read_after(first - 1))
        assert reopened.last_seq == newest_sealed_last
        assert reopened.first_seq == first
        reopened.append(make_event(reopened.last_seq + 1))
        await reopened.flush()
        seqs = [e.seq for e in await reopened.read_after(0)]
        assert seqs == list(range(first, seqs[-1] + 1))
    finally:
        reopened.close()


async def test_readers_stay_gap_free_while_segments_rotate_under_them(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=1000)
    try:
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                for seq in range(1, 1501):
                    log.append(make_event(seq))
                    if seq % 5 == 0:
                        await log.flush()
                await log.flush()

            nursery.start_soon(writer)
            checks = 0
            while log.durable_seq < 1500:
                got = await log.read_after(0)
                assert [e.seq for e in got] == list(range(1, len(got) + 1))
                checks += 1
            assert checks > 1
        assert len(sealed(path)) > 20
    finally:
        log.close()


async def test_hub_replay_starts_at_the_oldest_retained_event(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=2)
    recent = JsonDocument(tmp_path / "recent.json", RecentEvents, RecentEvents())
    hub = EventHub(log, recent, tail_size=16)
    try:
        for n in range(300):
            hub.emit("test.event", message=f"event {n}")
            if n % 10 == 0:
                await log.flush()
        await log.flush()
        assert log.first_seq > 1
        async with hub.subscribe(after=0) as sub:
            assert sub.replay_from == log.first_seq
            seen = [await sub.__anext__() for _ in range(300 - log.first_seq + 1)]
        assert [e.seq for e in seen] == list(range(log.first_seq, 301))
    finally:
        log.close()


async def test_replay_bisects_large_sealed_segments(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=256 * 1024, retain_segments=10)
    try:
        await fill(log, 1, 6000, every=500)
        assert len(sealed(path)) >= 2  # segments big enough to be bisected, not scanned
        for after in (0, 1, 1234, 2000, 2001, 3999, 5998):
            got = await log.read_after(after, limit=5)
            assert [e.seq for e in got] == list(range(after + 1, min(after + 6, 6001))), after
    finally:
        log.close()


async def test_a_failed_rotation_is_a_failed_commit_the_next_one_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=50)
    real_rename = os.rename
    refusals = 0

    def rename_once_refused(src: object, dst: object) -> None:
        nonlocal refusals
        if refusals == 0:
            refusals += 1
            raise OSError(13, "Permission denied")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", rename_once_refused)
    try:
        seq = 0
        rotation_failed = False
        while not rotation_failed:  # fill until the first rotation is attempted
            seq += 1
            log.append(make_event(seq))
            try:
                await log.flush()
            except OSError:
                rotation_failed = True
        assert sealed(path) == []  # nothing moved, the active file is intact and open
        await fill(log, seq + 1, 100)  # later commits seal segments normally
        assert sealed(path)
        events = await log.read_after(0)
        assert [e.seq for e in events] == list(range(1, seq + 101))
    finally:
        log.close()


async def test_sealing_and_dropping_segments_is_logged_and_bounded_replays_stay_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="codexd_trio.store.eventlog")
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=2)
    try:
        await fill(log, 1, 300)
        sealed_lines = [m for m in caplog.messages if m.startswith("event log: sealed")]
        assert sealed_lines
        assert all(re.fullmatch(r"event log: sealed events-\d{12}\.jsonl; retained [12] "
                                r"segment\(s\) from seq \d+", m) for m in sealed_lines)
        assert sealed_lines[-1].endswith(f"retained 2 segment(s) from seq {log.first_seq}")
        removed = [m for m in caplog.messages if m.startswith("event log: removed")]
        assert removed
        assert all(re.fullmatch(r"event log: removed events-\d{12}\.jsonl \(beyond retention\)",
                                m) for m in removed)
        # Reading from inside a (small) sealed segment finds its start without tripping over
        # a partial line: nothing is logged as undecodable.
        caplog.clear()
        after = log.first_seq + 3
        assert [e.seq for e in await log.read_after(after, limit=3)] == [
            after + 1, after + 2, after + 3]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        log.close()


def test_dropping_a_segment_someone_already_removed_is_fine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="codexd_trio.store.eventlog")
    GroupCommit._delete([tmp_path / "events-000000000001.jsonl"])
    assert caplog.messages == ["event log: removed events-000000000001.jsonl (beyond retention)"]


async def test_segments_rotate_and_drop_while_every_default_and_read_thread_is_busy(
    tmp_path: Path,
) -> None:
    # Every acknowledgement waits on the commit: its rotation and the deletion of old segments
    # run on the journal's threads, never behind replays holding the others.
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=1)
    try:
        with trio.fail_after(20):
            async with all_tokens_held(
                trio.to_thread.current_default_thread_limiter(), reads_limiter()
            ):
                await fill(log, 1, 200)
        assert len(sealed(path)) == 1
    finally:
        log.close()


async def test_the_active_file_of_a_new_segment_is_rw_for_its_owner(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "events.jsonl"
        log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=5)
        try:
            await fill(log, 1, 100)
            assert sealed(path)
        finally:
            log.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


async def test_a_rotation_that_cannot_create_the_new_file_puts_the_old_one_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=50)
    real_open = os.open
    refusals = 0

    def create_once_refused(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        nonlocal refusals
        if refusals == 0 and Path(file) == path and flags & os.O_CREAT:
            refusals += 1
            raise OSError(28, "No space left on device")
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", create_once_refused)
    try:
        seq = 0
        while refusals == 0:  # fill until the first rotation is attempted
            seq += 1
            log.append(make_event(seq))
            with contextlib.suppress(OSError):
                await log.flush()
        assert sealed(path) == []  # renamed back: the active file is where it was
        assert path.exists()
        await fill(log, seq + 1, 100)  # and the log goes on, sealing segments normally
        assert sealed(path)
        assert [e.seq for e in await log.read_after(0)] == list(range(1, seq + 101))
    finally:
        log.close()


async def test_every_read_from_the_active_file_after_a_rotation_starts_on_a_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The active file's index restarts at byte 0 with each rotation; a read that starts at its
    # first entry must not begin inside a line.
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=50)
    try:
        await fill(log, 1, 400)
        for after in range(340, 400):  # the active file holds fewer than 60 of them
            assert [e.seq for e in await log.read_after(after, limit=1)] == [after + 1], after
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        log.close()


async def test_a_damaged_line_where_the_bisection_lands_does_not_break_a_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=256 * 1024, retain_segments=10)
    try:
        await fill(log, 1, 6000, every=500)
        first = sealed(path)[0]
        data = bytearray(first.read_bytes())
        start = data.index(b"\n", len(data) // 2) + 1  # the line the first probe decodes
        end = data.index(b"\n", start)
        data[start:end] = b"x" * (end - start)
        first.write_bytes(bytes(data))
        damaged_seq = int(bytes(data[:start]).count(b"\n")) + 1
        got = await log.read_after(damaged_seq + 10, limit=3)
        assert [e.seq for e in got] == [damaged_seq + 11, damaged_seq + 12, damaged_seq + 13]
        # Read across it: the damaged line is skipped, with a warning naming where; the read
        # goes on past it.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="codexd_trio.store.eventlog"):
            got = await log.read_after(damaged_seq - 2, limit=3)
        assert [e.seq for e in got] == [damaged_seq - 1, damaged_seq + 1, damaged_seq + 2]
        assert caplog.messages == [
            f"event log {first}: skipping undecodable line at byte {start}"]
    finally:
        log.close()


async def test_non_ascii_events_are_read_back_exactly_from_sealed_and_active_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Offsets are bytes: files are read as bytes, a bisection never lands inside a character.
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=256 * 1024, retain_segments=10)
    try:
        for seq in range(1, 3001):
            log.append(msgspec.structs.replace(make_event(seq), message="é" * 60 + "✓"))
            if seq % 500 == 0:
                await log.flush()
        await log.flush()
        assert sealed(path)
        for after in (0, 1500, 2990):
            got = await log.read_after(after, limit=5)
            assert [e.seq for e in got] == list(range(after + 1, min(after + 6, 3001))), after
            assert got[0].message == "é" * 60 + "✓"
        assert [e.seq for e in await log.read_after(2995)] == [2996, 2997, 2998, 2999, 3000]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert await log.read_after(0, limit=0) == []
        assert [e.seq for e in await log.read_after(0)] == list(range(1, 3001))
    finally:
        log.close()


async def test_events_appended_during_a_rotation_are_indexed_in_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=50)
    gate = threading.Event()
    real_swap = log._swap_files
    held = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def first_swap_held(sealed_path: Path) -> None:
        if not gate.is_set():
            trio.from_thread.run_sync(held.set, trio_token=token)
            gate.wait()
        real_swap(sealed_path)

    monkeypatch.setattr(log, "_swap_files", first_swap_held)
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                seq = 0
                while not held.is_set():  # until the first rotation is under way
                    seq += 1
                    log.append(make_event(seq))
                    await trio.testing.wait_all_tasks_blocked()
                for _ in range(5):  # appended while the files are swapped
                    seq += 1
                    log.append(make_event(seq))
                gate.set()
                await log.wait_durable(seq)
                nursery.cancel_scope.cancel()
        for after in range(seq - 8, seq):
            assert [e.seq for e in await log.read_after(after, limit=1)] == [after + 1], after
    finally:
        gate.set()
        log.close()
