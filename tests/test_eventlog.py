"""The append-only event log: group commit, torn-tail recovery, replay through the sparse index."""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from codexd_trio.base.contracts import Event, event_decoder
from codexd_trio.base.limiters import reads_limiter
from codexd_trio.store._eventlog_files import _encode_line, last_seq_of
from codexd_trio.store.eventlog import EventLog, EventLogCorrupt
from tests.full_disk import FullDisk
from tests.test_store import all_tokens_held


def make_event(seq: int, session: str | None = None) -> Event:
    return Event(seq=seq, at="2026-01-01T00:00:00.000Z", type="test.event", sessionId=session,
                 message=f"event {seq}", detail={"n": seq})


def data_on_disk(path: Path) -> bytes:
    """The data of a log file: what comes before its reserved space (the first zero byte);
    after it there must be nothing but zeros."""
    data, _, rest = path.read_bytes().partition(b"\0")
    assert rest.strip(b"\0") == b"", "bytes after the reserved zeros"
    return data


def lines_on_disk(path: Path) -> list[Event]:
    data = data_on_disk(path)
    assert data == b"" or data.endswith(b"\n")
    return [event_decoder.decode(line) for line in data.splitlines()]


def write_log(path: Path, count: int, session_of: dict[int, str] | None = None) -> None:
    log = EventLog.open(path)
    for seq in range(1, count + 1):
        log.append(make_event(seq, (session_of or {}).get(seq)))
    log.close()


def test_open_creates_parents_and_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "codexd" / "events.jsonl"
    log = EventLog.open(path)
    try:
        assert path.exists()
        assert log.last_seq == 0
        assert log.durable_seq == 0
    finally:
        log.close()


async def test_group_commit_makes_events_durable(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                for seq in range(1, 101):
                    log.append(make_event(seq))
                assert log.last_seq == 100
                assert log.durable_seq < 100  # append only buffers
                await log.wait_durable(100)
                assert log.durable_seq == 100
                assert [e.seq for e in lines_on_disk(path)] == list(range(1, 101))
                # An event appended later is committed too, without any flush call.
                log.append(make_event(101))
                await log.wait_durable(101)
                assert lines_on_disk(path)[-1] == make_event(101)
                nursery.cancel_scope.cancel()
    finally:
        log.close()
    reopened = EventLog.open(path)
    try:
        assert reopened.last_seq == 101
    finally:
        reopened.close()


async def test_cancel_flushes_the_buffer(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                for seq in range(1, 6):
                    log.append(make_event(seq))
                nursery.cancel_scope.cancel()
        assert log.durable_seq == 5
        assert [e.seq for e in lines_on_disk(path)] == [1, 2, 3, 4, 5]
    finally:
        log.close()


def test_close_writes_what_is_still_buffered(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_log(path, 3)
    assert [e.seq for e in lines_on_disk(path)] == [1, 2, 3]


@pytest.mark.parametrize(
    "garbage",
    [b'{"seq":4,"at":"2026-01-01T00', b'{"seq":4}garbage\n',
     b'{"seq":4,"at":"2026-01-01T00' + bytes(5000)],
    ids=["no-newline", "undecodable-line", "torn-before-the-reserved-zeros"],
)
def test_torn_last_line_is_cut_and_seq_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    path = tmp_path / "events.jsonl"
    write_log(path, 3)
    whole = path.read_bytes()
    with path.open("ab") as f:  # the crash: a partial write after the last whole line
        f.write(garbage)
    with caplog.at_level(logging.WARNING, logger="codexd_trio.store.eventlog"):
        log = EventLog.open(path)
    try:
        assert "cut 1 torn" in caplog.text
        assert log.last_seq == 3
        # Cut back to the data; whatever follows is freshly reserved zeros.
        assert data_on_disk(path) == whole
        log.append(make_event(4))
    finally:
        log.close()
    assert [e.seq for e in lines_on_disk(path)] == [1, 2, 3, 4]
    reopened = EventLog.open(path)
    try:
        assert reopened.last_seq == 4
    finally:
        reopened.close()


def test_many_damaged_lines_are_corruption_not_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_log(path, 3)
    original = path.read_bytes()
    with path.open("ab") as f:
        f.write(b"not json\n" * 100)
    with pytest.raises(EventLogCorrupt, match="damaged lines") as info:
        EventLog.open(path)
    assert info.value.path == path
    assert path.read_bytes().startswith(original)  # nothing was cut


async def test_read_after_across_many_events_with_session_filter(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sessions = {seq: ("a" if seq % 3 == 0 else "b") for seq in range(1, 10_001) if seq % 5}
    write_log(path, 10_000, sessions)
    log = EventLog.open(path)  # the sparse index is rebuilt from the file
    try:
        assert log.last_seq == 10_000
        everything = await log.read_after(0)
        assert [e.seq for e in everything] == list(range(1, 10_001))
        assert everything[4999] == make_event(5000, sessions.get(5000))

        assert [e.seq for e in await log.read_after(5000, limit=10)] == list(range(5001, 5011))
        assert [e.seq for e in await log.read_after(9995)] == [9996, 9997, 9998, 9999, 10_000]
        assert await log.read_after(10_000) == []
        assert await log.read_after(20_000) == []

        only_a = await log.read_after(1234, session_id="a", limit=5)
        expected_a = [s for s in range(1235, 10_001) if sessions.get(s) == "a"][:5]
        assert [e.seq for e in only_a] == expected_a
        assert all(e.sessionId == "a" for e in only_a)
        all_a = await log.read_after(0, session_id="a")
        assert len(all_a) == sum(1 for s in sessions.values() if s == "a")
        assert await log.read_after(0, session_id="nobody") == []
    finally:
        log.close()


async def test_read_after_never_returns_events_that_are_not_durable(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    try:
        for seq in range(1, 601):
            log.append(make_event(seq, "s" if seq % 2 else None))
        await log.flush()
        for seq in range(601, 1001):  # buffered only: the writer task is not running
            log.append(make_event(seq, "s" if seq % 2 else None))
        assert log.durable_seq == 600
        # A reader must not see what a crash could take back (CONTRACT.md: durable first).
        assert [e.seq for e in await log.read_after(590, limit=20)] == list(range(591, 601))
        assert [e.seq for e in await log.read_after(0)] == list(range(1, 601))
        assert await log.read_after(995, session_id="s") == []
        assert len(lines_on_disk(path)) == 600
    finally:
        log.close()
    assert len(lines_on_disk(path)) == 1000


async def test_read_after_is_consistent_while_commits_happen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                seq = 0
                for _ in range(30):
                    for _ in range(50):
                        seq += 1
                        log.append(make_event(seq))
                    # Each read races the group commit; it sees exactly 1..durable_seq at the call.
                    durable = log.durable_seq
                    assert [e.seq for e in await log.read_after(0)] == list(range(1, durable + 1))
                    await trio.sleep(0.005)  # let some commits land between reads
                nursery.cancel_scope.cancel()
    finally:
        log.close()


async def test_commits_go_on_while_replays_hold_every_read_and_default_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    write_log(path, 300)
    log = EventLog.open(path)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                async with all_tokens_held(
                    trio.to_thread.current_default_thread_limiter(), reads_limiter()
                ):
                    # A replay now queues for a read thread...
                    replay_done = trio.Event()

                    async def replay() -> None:
                        # 301 only if its commit landed before the replay's snapshot.
                        assert len(await log.read_after(0)) in (300, 301)
                        replay_done.set()

                    log.append(make_event(301))
                    nursery.start_soon(replay)
                    # ...but the group commit the acknowledgements wait on still lands.
                    await log.wait_durable(301)
                    assert lines_on_disk(path)[-1] == make_event(301)
                    assert not replay_done.is_set()
                await replay_done.wait()
                nursery.cancel_scope.cancel()
    finally:
        log.close()


async def test_a_replay_cancelled_while_queued_for_a_read_thread_closes_its_files(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    write_log(path, 10)
    log = EventLog.open(path)
    try:
        async with all_tokens_held(reads_limiter()):
            with trio.move_on_after(0.05) as scope:
                await log.read_after(0)
            assert scope.cancelled_caught
        # An unclosed file would be a ResourceWarning here (an error under filterwarnings).
        gc.collect()
    finally:
        log.close()


async def test_a_hung_fsync_cannot_hold_the_stop_past_the_final_flush_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("codexd_trio.store.eventlog.FINAL_FLUSH_TIMEOUT_S", 0.2)
    release = threading.Event()

    def hung(data: bytes, start: int) -> None:  # the kernel never answers (a dead NFS mount)
        with log._io_lock:  # as the real write holds it
            release.wait(60)

    log = EventLog.open(tmp_path / "events.jsonl")
    monkeypatch.setattr(log, "_write_batch", hung)
    try:
        with trio.fail_after(20):  # a hang guard: the stop itself takes ~0.4 s
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                log.append(make_event(1))
                await trio.testing.wait_all_tasks_blocked()  # the commit thread is stuck
                nursery.cancel_scope.cancel()
            log.close()  # bounded too: it gives up on the stuck file
        assert log.durable_seq == 0  # nothing was claimed durable
    finally:
        release.set()  # the write comes back: now the file can be closed for good
        log.close()


async def test_a_backlog_the_disk_cannot_take_holds_the_producer_until_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # While the disk refuses writes, events used to pile up in memory without limit. Past
    # backlog_bytes the log now holds its producer (codexd's JSON-RPC reader) in room().
    log = EventLog.open(tmp_path / "events.jsonl")
    log.backlog_bytes = 2_000
    disk = FullDisk(log, monkeypatch)
    admitted = False

    async def producer() -> None:
        nonlocal admitted
        await log.room()
        admitted = True

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                await log.room()  # an empty backlog admits at once
                seq = 0
                while not log.backlogged:
                    seq += 1
                    log.append(make_event(seq))
                nursery.start_soon(producer)
                await disk.retried.wait()
                await trio.testing.wait_all_tasks_blocked()
                assert not admitted  # held while nothing can be written
                # Readiness shows why, and the log says it retries.
                assert log.write_error == "No space left on device"
                assert "event log write failed; retrying in 1.0 s" in caplog.messages
                assert log.waiting == seq
                disk.failing = False
                await log.wait_durable(seq)  # the writer's retry lands ...
                await trio.testing.wait_all_tasks_blocked()
                assert admitted  # ... and lets the producer go on
                assert not log.backlogged
                nursery.cancel_scope.cancel()
    finally:
        log.close()
    assert [e.seq for e in lines_on_disk(tmp_path / "events.jsonl")] == list(range(1, seq + 1))


@pytest.mark.timeout(30)  # a broken tail search loops forever: fail fast
def test_the_last_seq_of_a_sealed_segment_is_found_from_its_tail(tmp_path: Path) -> None:
    segment = tmp_path / "events-000000000001.jsonl"
    segment.write_bytes(b"")
    assert last_seq_of(segment) == 0  # nothing in it
    segment.write_bytes(_encode_line(make_event(7)))
    assert last_seq_of(segment) == 7  # one line, the window reaches the start
    segment.write_bytes(_encode_line(make_event(7)) + _encode_line(make_event(8)) + b"not json\n")
    assert last_seq_of(segment) == 8  # an undecodable last line is passed over
    # A last line larger than the first window: the window grows until it holds it.
    big = msgspec.structs.replace(make_event(10), message="x" * 300_000)
    segment.write_bytes(b"".join(_encode_line(make_event(n)) for n in range(1, 10))
                        + _encode_line(big))
    assert last_seq_of(segment) == 10


async def test_the_log_task_keeps_committing_after_flushes_did_its_work(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            for seq in range(1, 4):
                log.append(make_event(seq))
                await log.flush()  # the task wakes to nothing left to commit
                await trio.testing.wait_all_tasks_blocked()
            log.append(make_event(4))
            with trio.fail_after(20):
                await log.wait_durable(4)  # committed by the task alone
            nursery.cancel_scope.cancel()
    finally:
        log.close()


async def test_a_read_never_starts_after_an_index_entry_it_needs(tmp_path: Path) -> None:
    # The active file is indexed every INDEX_EVERY lines; a read after seq N starts at the
    # last entry at or before N + 1.
    log = EventLog.open(tmp_path / "events.jsonl")
    try:
        for seq in range(1, 601):
            log.append(make_event(seq))
        await log.flush()
        for after in range(250, 262):
            got = await log.read_after(after, limit=2)
            assert [e.seq for e in got] == [after + 1, after + 2], after
    finally:
        log.close()


async def test_a_read_from_before_the_active_file_reads_all_of_it(tmp_path: Path) -> None:
    # The active file after a rotation, with several index entries: a read that begins in a
    # sealed segment reads the active file from its start, not from its last entry.
    log = EventLog.open(tmp_path / "events.jsonl", segment_bytes=128 * 1024, retain_segments=10)
    try:
        for seq in range(1, 1301):  # 800 a segment: the active file holds 500 (2 entries)
            log.append(make_event(seq))
            if seq % 50 == 0:
                await log.flush()
        assert [e.seq for e in await log.read_after(0)] == list(range(log.first_seq, 1301))
    finally:
        log.close()


async def test_a_failed_final_flush_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")
    disk = FullDisk(log, monkeypatch)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                log.append(make_event(1))
                await disk.retried.wait()
                nursery.cancel_scope.cancel()  # stopping with the event still not written
        assert "final event log flush failed" in caplog.messages
    finally:
        disk.failing = False
        log.close()


async def test_a_final_flush_that_hangs_is_given_up_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")
    gate = threading.Event()
    real_write = log._write_batch

    def stuck(data: bytes, start: int) -> None:
        gate.wait()
        real_write(data, start)

    monkeypatch.setattr(log, "_write_batch", stuck)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            log.append(make_event(1))
            await trio.testing.wait_all_tasks_blocked()  # its commit hangs in the disk
            nursery.cancel_scope.cancel()
        assert "final event log flush did not finish in time" in caplog.messages
    finally:
        gate.set()
        log.close()


async def test_a_commit_reports_how_long_it_took(tmp_path: Path) -> None:
    # The commit-latency metric: the time from the commit's start to its sync's return, which
    # lies within the time the flush took (a bound on the value, not on the machine's speed).
    log = EventLog.open(tmp_path / "events.jsonl")
    durations: list[float] = []
    log.on_commit = durations.append
    try:
        started = time.perf_counter()
        log.append(make_event(1))
        await log.flush()
        elapsed = time.perf_counter() - started
        assert len(durations) == 1
        assert 0 <= durations[0] <= elapsed
    finally:
        log.close()


async def test_a_commit_that_meets_a_closed_log_fails_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")
    gate = threading.Event()
    real_write = log._write_batch

    def held(data: bytes, start: int) -> None:
        gate.wait()
        real_write(data, start)

    monkeypatch.setattr(log, "_write_batch", held)
    errors: list[str] = []

    async def flush() -> None:
        try:
            await log.flush()
        except OSError as exc:
            errors.append(str(exc))

    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                log.append(make_event(1))
                nursery.start_soon(flush)
                await trio.testing.wait_all_tasks_blocked()  # the commit waits in its thread
                log.close()  # shutdown overtakes it
                gate.set()
        assert errors == ["event log is closed"]
    finally:
        gate.set()
        log.close()


async def test_the_commit_thread_is_named_for_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a thread dump or py-spy shows when a sync hangs.
    log = EventLog.open(tmp_path / "events.jsonl")
    names: list[str] = []
    real_write = log._write_batch

    def recording(data: bytes, start: int) -> None:
        names.append(threading.current_thread().name)
        real_write(data, start)

    monkeypatch.setattr(log, "_write_batch", recording)
    try:
        log.append(make_event(1))
        await log.flush()
        assert names == ["codexd event log commit events.jsonl"]
    finally:
        log.close()
