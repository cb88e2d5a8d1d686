"""The event log's disk format with reserved space (issue 27): the active file holds its data,
then zeros up to the space it reserved, so a commit syncs data only; the data ends at the first
zero byte. Torn writes, a reserved segment with nothing in it, stale bytes after a hole, clean
stops, failed writes and failed reservations; readers never see the zeros."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from codexd_trio.base.contracts import Event
from codexd_trio.store import _eventlog_segment as segment
from codexd_trio.store._eventlog_files import INDEX_EVERY, _encode_line
from codexd_trio.store.eventlog import EventLog
from tests.test_eventlog import data_on_disk, lines_on_disk, make_event, write_log

SMALL = 64 * 1024  # a small segment: reservations stay small, the data still fits many events


class Syncs:
    """Records the event log's syncs (data only, or data and metadata) and renames."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, calls: list[str] | None = None) -> None:
        self.calls: list[str] = [] if calls is None else calls
        data, whole = segment._sync_data, segment._sync_file

        def sync_data(fd: int) -> None:
            self.calls.append("data")
            data(fd)

        def sync_file(fd: int) -> None:
            self.calls.append("file")
            whole(fd)

        monkeypatch.setattr(segment, "_sync_data", sync_data)
        monkeypatch.setattr(segment, "_sync_file", sync_file)


async def test_commits_write_into_reserved_space_and_sync_data_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    syncs = Syncs(monkeypatch)
    try:
        reserved = path.stat().st_size
        assert reserved == segment.RESERVE_STEP  # reserved at open, before the first commit
        sizes = set()
        for seq in range(1, 201):
            log.append(make_event(seq))
            if seq % 10 == 0:
                await log.flush()
                sizes.add(path.stat().st_size)
        # Twenty commits, none changed the file's size: each was a data-only sync.
        assert sizes == {reserved}
        assert syncs.calls == ["data"] * 20
        assert [e.seq for e in lines_on_disk(path)] == list(range(1, 201))
    finally:
        log.close()
    # A clean stop leaves plain JSON lines: the reserved zeros are cut off.
    assert path.read_bytes() == data_on_disk(path)
    assert b"\0" not in path.read_bytes()


def test_a_reserved_segment_with_nothing_written_is_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(bytes(3 * SMALL))  # reserved, then the crash: no commit landed
    log = EventLog.open(path, segment_bytes=SMALL)
    try:
        assert (log.last_seq, log.durable_seq, log.first_seq) == (0, 0, 1)
        log.append(make_event(1))
    finally:
        log.close()
    assert [e.seq for e in lines_on_disk(path)] == [1]


async def test_an_empty_reserved_segment_after_a_rotation_continues_the_seq(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=4096, retain_segments=10)
    for seq in range(1, 201):
        log.append(make_event(seq))
        if seq % 9 == 0:
            await log.flush()
    await log.flush()
    first = log.first_seq
    log.close()
    sealed_last = max(e.seq for e in lines_on_disk(sorted(tmp_path.glob("events-*"))[-1]))
    path.write_bytes(bytes(4096))  # the process died right after sealing and reserving
    reopened = EventLog.open(path, segment_bytes=4096, retain_segments=10)
    try:
        assert reopened.last_seq == sealed_last
        reopened.append(make_event(sealed_last + 1))
        await reopened.flush()
        seqs = [e.seq for e in await reopened.read_after(0)]
        assert seqs == list(range(first, sealed_last + 2))
    finally:
        reopened.close()


@pytest.mark.parametrize("lines", [1, 2, 5])
def test_a_write_torn_anywhere_keeps_exactly_the_whole_lines_before_it(
    tmp_path: Path, lines: int
) -> None:
    """The last commit's bytes cut at every offset, then the reserved zeros: open keeps the
    whole lines of the prefix, cuts the rest, and the next event follows them."""
    committed = b"".join(_encode_line(make_event(seq)) for seq in range(1, 4))
    batch = [_encode_line(make_event(seq)) for seq in range(4, 4 + lines)]
    torn = b"".join(batch)
    for offset in range(0, len(torn) + 1, 7 if lines > 1 else 1):
        path = tmp_path / f"events-{lines}-{offset}.jsonl"
        path.write_bytes(committed + torn[:offset] + bytes(SMALL))
        whole = 0
        while whole < lines and len(b"".join(batch[: whole + 1])) <= offset:
            whole += 1
        log = EventLog.open(path, segment_bytes=SMALL)
        try:
            assert log.last_seq == 3 + whole, offset
            assert data_on_disk(path) == committed + b"".join(batch[:whole]), offset
            log.append(make_event(4 + whole))
        finally:
            log.close()
        assert [e.seq for e in lines_on_disk(path)] == list(range(1, 5 + whole)), offset


def test_bytes_after_a_hole_of_zeros_are_not_data_and_are_erased(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A power loss can persist a later page of an unfinished commit and not an earlier one:
    whole lines after a hole were never acknowledged. They must not count, and must not
    survive to sit right after newer data at the next crash."""
    path = tmp_path / "events.jsonl"
    write_log(path, 3)
    committed = path.read_bytes()
    stale = _encode_line(make_event(9)) + _encode_line(make_event(10))
    path.write_bytes(committed + bytes(4096) + stale + bytes(4096))
    with caplog.at_level(logging.WARNING, logger="codexd_trio.store.eventlog"):
        log = EventLog.open(path, segment_bytes=SMALL)
    try:
        assert log.last_seq == 3
        assert caplog.text == ""  # the data simply ends at the first zero: nothing torn
        tail = path.read_bytes()[len(committed):]
        assert tail.strip(b"\0") == b""  # the stale lines are gone, zeros again
        log.append(make_event(4))
    finally:
        log.close()
    assert [e.seq for e in lines_on_disk(path)] == [1, 2, 3, 4]


async def test_readers_never_see_the_reserved_zeros(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    count = 3 * INDEX_EVERY + 17
    log = EventLog.open(path)
    try:
        for seq in range(1, count + 1):
            log.append(make_event(seq, "s" if seq % 3 == 0 else None))
        await log.flush()
    finally:
        # A crash, not a clean stop: the reserved zeros stay after the data.
        log._file.close()
        log._closed = True
    assert path.stat().st_size > len(data_on_disk(path))
    reopened = EventLog.open(path)
    try:
        # The sparse index was built from the data only.
        assert all(offset < len(data_on_disk(path)) for offset in reopened._index_offsets)
        assert len(reopened._index_offsets) == 4
        for after in (0, 1, INDEX_EVERY, 2 * INDEX_EVERY + 5, count - 1, count, count + 50):
            got = await reopened.read_after(after)
            assert [e.seq for e in got] == list(range(after + 1, count + 1)), after
        only_s = await reopened.read_after(count - 10, session_id="s")
        assert [e.seq for e in only_s] == [s for s in range(count - 9, count + 1) if s % 3 == 0]
        # Appending after the reopen continues right after the data, not after the zeros.
        reopened.append(make_event(count + 1))
        await reopened.flush()
        assert [e.seq for e in await reopened.read_after(count - 1)] == [count, count + 1]
    finally:
        reopened.close()
    assert [e.seq for e in lines_on_disk(path)] == list(range(1, count + 2))


async def test_a_write_that_fails_halfway_leaves_no_torn_bytes_and_the_retry_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SMALL)
    real_pwrite = os.pwrite
    failures = 0

    def half_then_eio(fd: int, data: Any, offset: int) -> int:
        nonlocal failures
        if failures == 0 and len(data) > 100:
            failures += 1
            real_pwrite(fd, bytes(data)[: len(data) // 2], offset)
            raise OSError(errno.EIO, "Input/output error")
        return real_pwrite(fd, data, offset)

    try:
        log.append(make_event(1))
        await log.flush()
        monkeypatch.setattr(os, "pwrite", half_then_eio)
        for seq in range(2, 6):
            log.append(make_event(seq))
        with pytest.raises(OSError, match="Input/output"):
            await log.flush()
        assert log.durable_seq == 1
        assert [e.seq for e in lines_on_disk(path)] == [1]  # the half line was cut away
        await log.flush()  # the retry: reserves again and writes the whole batch
        assert [e.seq for e in lines_on_disk(path)] == [1, 2, 3, 4, 5]
        assert path.stat().st_size == SMALL
    finally:
        log.close()


async def test_without_room_to_reserve_commits_grow_the_file_and_stay_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    path = tmp_path / "events.jsonl"
    with caplog.at_level(logging.WARNING, logger="codexd_trio.store.eventlog"):
        log = EventLog.open(path)
        try:
            for seq in range(1, 31):
                log.append(make_event(seq))
                if seq % 10 == 0:
                    await log.flush()
            assert path.stat().st_size == len(data_on_disk(path))  # nothing reserved
            assert [e.seq for e in lines_on_disk(path)] == list(range(1, 31))
        finally:
            log.close()
    assert caplog.text.count("cannot reserve space") == 1  # said once, not per commit


async def test_where_there_is_no_fallocate_zeros_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # macOS has no posix_fallocate: the portable path writes the zeros (as PostgreSQL does).
    monkeypatch.delattr(os, "posix_fallocate", raising=False)
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SMALL)
    try:
        assert path.stat().st_size == SMALL
        assert path.read_bytes() == bytes(SMALL)
        log.append(make_event(1))
        await log.flush()
        assert [e.seq for e in lines_on_disk(path)] == [1]
    finally:
        log.close()


def test_a_full_fsync_is_the_sync_where_the_platform_has_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # macOS: fsync() leaves the bytes in the drive's cache; F_FULLFSYNC is the honest sync.
    calls: list[tuple[int, int]] = []

    def fcntl(fd: int, cmd: int, arg: int = 0) -> int:
        calls.append((fd, cmd))
        return 0

    monkeypatch.setattr(segment, "_FULLFSYNC", 51)
    monkeypatch.setattr("fcntl.fcntl", fcntl)
    with open(tmp_path / "f", "wb") as f:
        segment._sync_data(f.fileno())
        segment._sync_file(f.fileno())
        assert calls == [(f.fileno(), 51), (f.fileno(), 51)]


async def test_rotation_seals_the_data_only_and_reserves_the_next_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    order: list[str] = []
    log = EventLog.open(path, segment_bytes=4096, retain_segments=2)
    Syncs(monkeypatch, order)
    real_rename, real_sync_dir = os.rename, segment._sync_dir

    def rename(src: Path, dst: Path) -> None:
        order.append("rename")
        real_rename(src, dst)

    def sync_dir(directory: Path) -> None:
        order.append("dir")
        real_sync_dir(directory)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(segment, "_sync_dir", sync_dir)
    try:
        seq = 0
        while not list(tmp_path.glob("events-*.jsonl")):
            seq += 1
            log.append(make_event(seq))
            await log.flush()
        sealed = next(tmp_path.glob("events-*.jsonl"))
        assert b"\0" not in sealed.read_bytes()  # cut back to its data
        assert path.stat().st_size == 4096  # the new active segment is reserved
        # Sealing (right after the commit that filled the segment): the cut is synced before
        # the rename, the rename before the directory's sync; the next commit syncs data only.
        assert order[-4:] == ["data", "file", "rename", "dir"]
        assert set(order[:-3]) == {"data"}
        log.append(make_event(seq + 1))
        await log.flush()
        assert order[-1] == "data"
        seq += 1
        for more in range(seq + 1, seq + 300):  # retention drops old segments meanwhile
            log.append(make_event(more))
            if more % 5 == 0:
                await log.flush()
        await log.flush()
        segments = sorted(tmp_path.glob("events-*.jsonl"))
        assert len(segments) == 2
        assert all(b"\0" not in p.read_bytes() for p in segments)
        got = [e.seq for e in await log.read_after(0)]
        assert got == list(range(log.first_seq, seq + 300))
    finally:
        log.close()
    reopened = EventLog.open(path, segment_bytes=4096, retain_segments=2)
    try:
        assert reopened.last_seq == seq + 299
    finally:
        reopened.close()


async def test_an_event_holding_zero_characters_is_written_without_a_zero_byte(
    tmp_path: Path,
) -> None:
    # The framing's premise: JSON escapes U+0000, so a raw zero byte is never data.
    path = tmp_path / "events.jsonl"
    strange = Event(seq=1, at="2026-01-01T00:00:00.000Z", type="test.event", message="a\0b",
                    detail={"k\0": ["\0" * 5]})
    log = EventLog.open(path, segment_bytes=SMALL)
    try:
        log.append(strange)
        log.append(make_event(2))
        await log.flush()
        assert b"\0" not in data_on_disk(path)
    finally:
        log._file.close()  # killed: the reserved zeros stay
        log._closed = True
    reopened = EventLog.open(path, segment_bytes=SMALL)
    try:
        assert await reopened.read_after(0) == [strange, make_event(2)]
    finally:
        reopened.close()
