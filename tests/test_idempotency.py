"""The Idempotency-Key store: replay and mismatch semantics, and its append-only journal
(durability, retention, torn tail, migration from idempotency.json, background compaction)."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from codexd_trio.base.errors import IdempotencyMismatch, InvalidRequest
from codexd_trio.base.limiters import documents_limiter, reads_limiter
from codexd_trio.store import _idempotency_journal as journal_module
from codexd_trio.store._idempotency_records import _encode_line
from codexd_trio.store.documents import StoreWriteError
from codexd_trio.store.idempotency import (
    MAX_KEY_LENGTH,
    RETENTION_S,
    WRITE_RETRY_S,
    Answer,
    IdempotencyBook,
    IdempotencyJournal,
    IdempotencyRecord,
    IdempotencyStore,
)
from tests.test_store import all_tokens_held

ROUTE = "POST /v1/codexd/turn"
RECORDS_LOGGER = "codexd_trio.store._idempotency_records"
BODY = b'{"sessionId":"session-1","input":"hi"}'


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Handler:
    """A request handler that counts its calls and answers ``{"call": n}``."""

    def __init__(self, status: int = 202) -> None:
        self.status = status
        self.calls = 0

    async def __call__(self) -> Answer:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        return Answer(self.status, msgspec.json.encode({"call": self.calls}))


@contextmanager
def opened(path: Path, clock: Clock, **kwargs: Any) -> Iterator[IdempotencyStore]:
    store = IdempotencyStore.open(path, clock=clock, **kwargs)
    try:
        yield store
    finally:
        store.journal.close()


def on_disk(path: Path) -> list[IdempotencyRecord]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [msgspec.json.decode(line, type=IdempotencyRecord) for line in data.splitlines()]


def keys_on_disk(path: Path) -> list[str]:
    return [r.key for r in on_disk(path)]


def record(key: str, created_at: float, body: bytes = BODY) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=key,
        route=ROUTE,
        bodyHash=hashlib.sha256(ROUTE.encode() + b"\0" + body).hexdigest(),
        status=202,
        response=b'{"old":true}',
        contentType="application/json",
        createdAt=created_at,
    )


async def body_of(answer: Answer) -> bytes:
    await trio.lowlevel.checkpoint()
    return answer.body


async def test_same_key_and_body_replays_the_recorded_answer(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.jsonl"
    handler = Handler(status=201)
    with opened(path, Clock()) as store:
        first = await store.run("key-1", ROUTE, BODY, handler)
        assert first.status == 201
        assert first.replayed is False
        # The record is durable before the answer is returned.
        assert keys_on_disk(path) == ["key-1"]

        again = await store.run("key-1", ROUTE, BODY, handler)
        assert handler.calls == 1
        assert again.status == 201
        assert again.content_type == "application/json"
        assert again.replayed is True
        assert await body_of(again) == await body_of(first) == b'{"call":1}'


async def test_same_key_with_another_body_or_route_is_a_mismatch(tmp_path: Path) -> None:
    handler = Handler()
    with opened(tmp_path / "idempotency.jsonl", Clock()) as store:
        await store.run("key-1", ROUTE, BODY, handler)
        with pytest.raises(IdempotencyMismatch) as info:
            await store.run("key-1", ROUTE, b'{"other":1}', handler)
        assert info.value.code == "idempotency_mismatch"
        assert info.value.details == {"key": "key-1", "originalRoute": ROUTE}
        assert info.value.message == "this Idempotency-Key was used with a different request"
        with pytest.raises(IdempotencyMismatch):
            await store.run("key-1", "POST /v1/codexd/turn/steer", BODY, handler)
        assert handler.calls == 1


@pytest.mark.parametrize("status", [200, 299])
async def test_every_2xx_answer_is_recorded(tmp_path: Path, status: int) -> None:
    handler = Handler(status=status)
    with opened(tmp_path / "idempotency.jsonl", Clock()) as store:
        await store.run("key-1", ROUTE, BODY, handler)
        assert (await store.run("key-1", ROUTE, BODY, handler)).replayed is True
        assert handler.calls == 1


@pytest.mark.parametrize("status", [300, 400, 409, 500, 503])
async def test_only_successful_answers_are_recorded(tmp_path: Path, status: int) -> None:
    path = tmp_path / "idempotency.jsonl"
    handler = Handler(status=status)
    with opened(path, Clock()) as store:
        assert (await store.run("key-1", ROUTE, BODY, handler)).status == status
        again = await store.run("key-1", ROUTE, BODY, handler)
        assert again.replayed is False
        assert handler.calls == 2  # a refused request changed nothing: a retry runs it again
        assert len(store.journal) == 0
    assert path.read_bytes() == b""


@pytest.mark.parametrize("key", ["k" * (MAX_KEY_LENGTH + 1), "line\nbreak", "tab\there"])
async def test_long_or_unprintable_keys_are_invalid(tmp_path: Path, key: str) -> None:
    handler = Handler()
    with opened(tmp_path / "idempotency.jsonl", Clock()) as store:
        with pytest.raises(InvalidRequest) as info:
            await store.run(key, ROUTE, BODY, handler)
        assert info.value.details == {"field": "Idempotency-Key"}
        assert info.value.message == "Idempotency-Key must be at most 255 printable characters"
        assert handler.calls == 0
        await store.run("k" * MAX_KEY_LENGTH, ROUTE, BODY, handler)  # the longest valid key
        assert handler.calls == 1


async def test_a_failing_or_cancelled_handler_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.jsonl"

    async def boom() -> Answer:
        raise RuntimeError("the handler failed")

    async def hangs() -> Answer:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    handler = Handler()
    with opened(path, Clock()) as store:
        with pytest.raises(RuntimeError, match="handler failed"):
            await store.run("key-1", ROUTE, BODY, boom)
        with trio.move_on_after(0.01) as scope:
            await store.run("key-1", ROUTE, BODY, hangs)
        assert scope.cancelled_caught
        assert len(store.journal) == 0
        assert path.read_bytes() == b""
        await store.run("key-1", ROUTE, BODY, handler)
        assert handler.calls == 1


async def test_one_request_per_key_runs_at_a_time(tmp_path: Path) -> None:
    release = trio.Event()
    calls = 0

    async def slow() -> Answer:
        nonlocal calls
        calls += 1
        await release.wait()
        return Answer(202, b'{"slow":true}')

    answers: list[Answer] = []

    async def request() -> None:
        answers.append(await store.run("key-1", ROUTE, BODY, slow))

    with opened(tmp_path / "idempotency.jsonl", Clock()) as store:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(request)
                await trio.testing.wait_all_tasks_blocked()
                assert calls == 1  # the others wait for the key
                release.set()
    assert calls == 1
    assert sorted(a.replayed for a in answers) == [False, True, True]


async def test_concurrent_requests_share_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "idempotency.jsonl"
    with opened(path, Clock()) as store:
        journal = store.journal
        appends = 0
        real_append = journal._append

        def counting_append(data: bytes, start: int) -> None:
            nonlocal appends
            appends += 1
            real_append(data, start)

        monkeypatch.setattr(journal, "_append", counting_append)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(store.run, f"key-{i}", ROUTE, BODY, Handler())
        assert sorted(keys_on_disk(path)) == sorted(f"key-{i}" for i in range(50))
        assert appends < 10  # group commit: one write and fsync serves everything queued


async def test_records_expire_after_24_hours(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    handler = Handler()
    with opened(path, clock) as store:
        await store.run("key-1", ROUTE, BODY, handler)
        await store.run("key-2", ROUTE, BODY, handler)
        clock.now += RETENTION_S - 1
        assert (await store.run("key-1", ROUTE, BODY, handler)).replayed
        clock.now += 2
        # Expired: the key is free again, even with another body.
        fresh = await store.run("key-1", ROUTE, b'{"new":1}', handler)
        assert fresh.replayed is False
        assert handler.calls == 3
        assert len(store.journal) == 1  # key-2 expired too
    # The key was recorded twice; the newer record is the one that counts after a restart.
    assert keys_on_disk(path) == ["key-1", "key-2", "key-1"]
    with opened(path, clock) as store:
        assert len(store.journal) == 1
        replay = await store.run("key-1", ROUTE, b'{"new":1}', handler)
        assert await body_of(replay) == b'{"call":3}'
    clock.now += RETENTION_S + 1
    with opened(path, clock) as store:
        assert len(store.journal) == 0  # expired records are not loaded


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "codexd" / "idempotency.jsonl"
    handler = Handler()
    clock = Clock()
    with opened(path, clock) as store:
        for i in range(5):
            await store.run(f"key-{i}", ROUTE, BODY, handler)
    with opened(path, clock) as store:
        for i in range(5):
            replay = await store.run(f"key-{i}", ROUTE, BODY, handler)
            assert replay.replayed is True
            assert await body_of(replay) == f'{{"call":{i + 1}}}'.encode()
        with pytest.raises(IdempotencyMismatch):
            await store.run("key-0", ROUTE, b"{}", handler)
    assert handler.calls == 5


@pytest.mark.parametrize(
    "garbage",
    [b'{"key":"torn","route":"POST', b'{"key":"torn"}garbage\n', b"\x00\x00\x00\x00"],
    ids=["no-newline", "undecodable-line", "zero-fill"],
)
async def test_a_torn_last_line_is_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    handler = Handler()
    with opened(path, clock) as store:
        for i in range(3):
            await store.run(f"key-{i}", ROUTE, BODY, handler)
    whole = path.read_bytes()
    with path.open("ab") as f:  # the crash: a partial append after the last whole line
        f.write(garbage)
    with caplog.at_level(logging.WARNING, logger="codexd_trio.store.idempotency"):
        store = IdempotencyStore.open(path, clock=clock)
    try:
        assert "cut 1 torn" in caplog.text
        assert path.read_bytes() == whole
        assert len(store.journal) == 3
        await store.run("key-3", ROUTE, BODY, handler)
    finally:
        store.journal.close()
    assert keys_on_disk(path) == ["key-0", "key-1", "key-2", "key-3"]


async def test_the_old_json_file_is_imported_once_and_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RECORDS_LOGGER)
    clock = Clock()
    old = tmp_path / "idempotency.json"
    book = IdempotencyBook(
        records=[
            record("expired", clock.now - RETENTION_S - 5),
            record("old-1", clock.now - 100),
            record("old-2", clock.now - 50),
        ]
    )
    old.write_bytes(msgspec.json.encode(book))
    path = tmp_path / "idempotency.jsonl"
    handler = Handler()
    with opened(path, clock) as store:
        assert not old.exists()
        assert len(store.journal) == 2
        assert ("idempotency: imported 2 live record(s) of 3 from the old idempotency.json"
                in caplog.messages)
        replay = await store.run("old-1", ROUTE, BODY, handler)
        assert replay.replayed is True
        assert await body_of(replay) == b'{"old":true}'
        with pytest.raises(IdempotencyMismatch):
            await store.run("old-2", ROUTE, b"{}", handler)
        await store.run("new-1", ROUTE, BODY, handler)
    assert handler.calls == 1
    assert keys_on_disk(path) == ["old-1", "old-2", "new-1"]

    # A crash after the journal was written but before the old file was removed: importing
    # again adds nothing twice, and the journal's own records win.
    old.write_bytes(msgspec.json.encode(book))
    with opened(path, clock) as store:
        assert not old.exists()
        assert len(store.journal) == 3
        replay = await store.run("new-1", ROUTE, BODY, handler)
        assert await body_of(replay) == b'{"call":1}'
    assert sorted(keys_on_disk(path)) == ["new-1", "old-1", "old-2"]


async def expire_and_refill(store: IdempotencyStore, clock: Clock, dead: int, live: int) -> None:
    for i in range(dead):
        await store.run(f"dead-{i}", ROUTE, BODY, Handler())
    clock.now += RETENTION_S + 1
    for i in range(live):
        await store.run(f"live-{i}", ROUTE, BODY, Handler())


async def test_compaction_keeps_exactly_the_live_records_and_shrinks_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RECORDS_LOGGER)
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        await expire_and_refill(store, clock, dead=40, live=5)
        journal = store.journal
        assert len(journal) == 5
        assert journal.lines == 45
        assert journal.compaction_due
        before = path.stat().st_size
        await journal.compact()
        assert journal.compactions == 1
        assert journal.lines == 5
        assert not journal.compaction_due
        assert path.stat().st_size < before / 5
        assert keys_on_disk(path) == [f"live-{i}" for i in range(5)]
        assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
        assert "idempotency journal compacted to 5 line(s) (5 live record(s))" in caplog.messages
        # The journal goes on in the new file.
        await store.run("after", ROUTE, BODY, Handler())
        await journal.compact()  # and compacts again
        assert journal.compactions == 2
    assert keys_on_disk(path)[-1] == "after"
    with opened(path, clock) as store:
        assert len(store.journal) == 6


async def test_appends_during_a_compaction_land_in_the_new_journal(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        await expire_and_refill(store, clock, dead=20, live=2)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery, all_tokens_held(documents_limiter()):
                # The compaction takes its snapshot, then waits for a documents thread; the
                # appends meanwhile go to the old file and must be carried over.
                nursery.start_soon(store.journal.compact)
                await trio.testing.wait_all_tasks_blocked()
                assert store.journal.compactions == 0
                for i in range(3):
                    await store.run(f"during-{i}", ROUTE, BODY, Handler())
        assert store.journal.compactions == 1
        expected = ["live-0", "live-1", "during-0", "during-1", "during-2"]
        assert keys_on_disk(path) == expected
        assert store.journal.lines == 5  # the snapshot's 2 and the 3 appended meanwhile
    with opened(path, clock) as store:
        assert len(store.journal) == 5


async def test_a_failed_compaction_leaves_the_journal_in_use_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        await expire_and_refill(store, clock, dead=20, live=2)
        before = path.read_bytes()

        def refuse(src: object, dst: object) -> None:
            raise OSError(13, "Permission denied")

        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", refuse)
            refused = r"cannot compact .*Permission denied"
            with pytest.raises(StoreWriteError, match=refused) as info:
                await store.journal.compact()
        assert info.value.path == path
        assert path.read_bytes() == before
        assert list(tmp_path.iterdir()) == [path]
        assert store.journal.compactions == 0
        await store.run("after", ROUTE, BODY, Handler())  # the old file is still the journal
        assert keys_on_disk(path)[-1] == "after"
        await store.journal.compact()
        assert keys_on_disk(path) == ["live-0", "live-1", "after"]


async def test_the_journal_task_compacts_in_the_background_and_closes_on_cancel(
    tmp_path: Path,
) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(store.journal.run)
                await expire_and_refill(store, clock, dead=30, live=3)
                await store.journal.wait_compacted(1)
                nursery.cancel_scope.cancel()
        assert keys_on_disk(path) == ["live-0", "live-1", "live-2"]
        # The task closed the journal on its way out: nothing can be recorded any more.
        closed = r"cannot append to .*: the idempotency journal is closed$"
        with pytest.raises(StoreWriteError, match=closed) as info:
            await store.run("late", ROUTE, BODY, Handler())
        assert info.value.path == path


async def test_a_compaction_is_not_due_for_a_small_or_mostly_live_journal(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with opened(tmp_path / "small.jsonl", clock, compact_min_lines=100) as store:
        await expire_and_refill(store, clock, dead=50, live=1)
        assert not store.journal.compaction_due  # 51 lines: not worth rewriting
    with opened(tmp_path / "live.jsonl", clock, compact_min_lines=10) as store:
        await expire_and_refill(store, clock, dead=10, live=10)
        assert store.journal.lines == 20
        assert not store.journal.compaction_due  # not more than two lines per live record


async def test_a_failed_append_keeps_the_record_and_the_journal_task_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "idempotency.jsonl"
    with opened(path, Clock()) as store:
        journal = store.journal
        real_append = journal._append
        calls = 0

        def full_disk_twice(data: bytes, start: int) -> None:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise OSError(28, "No space left on device")
            real_append(data, start)

        monkeypatch.setattr(journal, "_append", full_disk_twice)
        handler = Handler()
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            with pytest.raises(StoreWriteError, match="No space left"):
                await store.run("key-1", ROUTE, BODY, handler)
            # The request had its effect (the client saw a 500): a retry replays it.
            replay = await store.run("key-1", ROUTE, BODY, handler)
            assert replay.replayed is True
            assert handler.calls == 1
            # The task's first retry fails too; it tries again a second later.
            await trio.sleep(WRITE_RETRY_S * 5)
            await journal.flush()
            assert calls == 3
            assert keys_on_disk(path) == ["key-1"]
            assert "idempotency append failed; retrying in 1.0 s" in caplog.messages
            # The task is still there (the journal is open) and compacted nothing.
            await store.run("key-2", ROUTE, BODY, handler)
            assert journal.compactions == 0
            nursery.cancel_scope.cancel()


async def test_a_keyed_request_is_recorded_while_every_other_thread_is_busy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "idempotency.jsonl"
    with opened(path, Clock()) as store:
        with trio.fail_after(30):
            async with all_tokens_held(
                trio.to_thread.current_default_thread_limiter(),
                reads_limiter(),
                documents_limiter(),
            ):
                await store.run("key-1", ROUTE, BODY, Handler())
                assert keys_on_disk(path) == ["key-1"]


def test_open_creates_the_journal_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "codexd" / "idempotency.jsonl"
    journal = IdempotencyJournal.open(path)
    try:
        assert path.read_bytes() == b""
        assert len(journal) == 0
        assert journal.lines == 0
    finally:
        journal.close()
        journal.close()  # idempotent


def test_a_record_exactly_24_hours_old_is_still_imported(tmp_path: Path) -> None:
    clock = Clock()
    old = tmp_path / "idempotency.json"
    old.write_bytes(msgspec.json.encode(IdempotencyBook(records=[
        record("edge", clock.now - RETENTION_S),
    ])))
    with opened(tmp_path / "idempotency.jsonl", clock) as store:
        assert len(store.journal) == 1


async def test_a_failed_compaction_is_logged_and_retried_only_after_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        journal = store.journal
        attempts = 0
        real_compact = journal.compact

        first_failed = trio.Event()

        async def counting_compact() -> None:
            nonlocal attempts
            attempts += 1
            try:
                await real_compact()
            finally:
                first_failed.set()

        def refuse(src: object, dst: object) -> None:
            raise OSError(13, "Permission denied")

        monkeypatch.setattr(journal, "compact", counting_compact)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            with monkeypatch.context() as patch:
                patch.setattr(os, "replace", refuse)
                await expire_and_refill(store, clock, dead=20, live=2)
                await first_failed.wait()
                await trio.testing.wait_all_tasks_blocked()  # the task logs it
                assert attempts == 1
                assert "idempotency compaction failed; next try in 60 s" in caplog.messages
                for i in range(3):  # due all along, but not tried again within the minute
                    await store.run(f"more-{i}", ROUTE, BODY, Handler())
                await trio.testing.wait_all_tasks_blocked()
                assert attempts == 1
            await trio.sleep(61)
            await store.run("later", ROUTE, BODY, Handler())
            await journal.wait_compacted(1)
            assert attempts == 2
            nursery.cancel_scope.cancel()


async def test_a_compaction_completes_while_the_default_and_read_threads_are_busy(
    tmp_path: Path,
) -> None:
    # The snapshot is written on the documents' threads and the swap on the journal's: replays
    # holding every other thread delay neither (nor, through the swap, any acknowledgement).
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        await expire_and_refill(store, clock, dead=20, live=2)
        with trio.fail_after(20):
            async with all_tokens_held(
                trio.to_thread.current_default_thread_limiter(), reads_limiter()
            ):
                await store.journal.compact()
        assert keys_on_disk(path) == ["live-0", "live-1"]


async def test_a_compaction_writes_its_snapshot_beside_the_journal_under_a_telling_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        await expire_and_refill(store, clock, dead=20, live=2)
        journal = store.journal
        with trio.fail_after(20):
            # Holding the append lock: the swap waits, the snapshot stays visible.
            async with trio.open_nursery() as nursery, journal._write_lock:
                nursery.start_soon(journal.compact)
                while len(list(tmp_path.iterdir())) < 2:  # noqa: ASYNC110 - a worker thread writes it
                    await trio.sleep(0.01)
                names = sorted(p.name for p in tmp_path.iterdir())
        assert names[0].startswith(".idempotency.jsonl.")
        assert names[0].endswith(".tmp")
        assert names[1] == "idempotency.jsonl"
        assert list(tmp_path.iterdir()) == [path]


async def test_a_compaction_that_cannot_write_its_snapshot_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        await expire_and_refill(store, clock, dead=20, live=2)
        before = path.read_bytes()

        def no_space(*args: object, **kwargs: object) -> Any:
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(tempfile, "mkstemp", no_space)
            with pytest.raises(StoreWriteError, match="No space left"):
                await store.journal.compact()
        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", no_space)
            with pytest.raises(StoreWriteError, match="No space left"):
                await store.journal.compact()
        assert list(tmp_path.iterdir()) == [path]
        assert path.read_bytes() == before


async def test_a_compaction_after_close_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        await expire_and_refill(store, clock, dead=20, live=2)
        store.journal.close()
        with pytest.raises(StoreWriteError, match=r": the idempotency journal is closed$"):
            await store.journal.compact()
        assert list(tmp_path.iterdir()) == [path]


async def test_the_journal_task_logs_a_failed_final_flush_and_still_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "idempotency.jsonl"
    with opened(path, Clock()) as store:
        journal = store.journal

        def full_disk(data: bytes, start: int) -> None:
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(journal, "_append", full_disk)
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.run)
                with pytest.raises(StoreWriteError):
                    await store.run("key-1", ROUTE, BODY, Handler())
                nursery.cancel_scope.cancel()
        assert "final idempotency flush failed" in caplog.messages
        # close() wrote the queued line itself.
        assert keys_on_disk(path) == ["key-1"]


async def test_the_journal_task_gives_up_a_final_flush_that_hangs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "idempotency.jsonl"
    with opened(path, Clock()) as store:
        journal = store.journal
        release = trio.Event()

        async def hold_the_appends(task_status: trio.TaskStatus[None]) -> None:
            async with journal._write_lock:
                task_status.started()
                await release.wait()

        async with trio.open_nursery() as outer:
            await outer.start(hold_the_appends)
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.run)
                nursery.cancel_scope.cancel()
            assert "final idempotency flush did not finish in time" in caplog.messages
            assert not journal._closed  # a worker thread could still hold the file
            release.set()


async def test_the_journal_task_logs_a_failed_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "idempotency.jsonl"
    with opened(path, Clock()) as store:
        journal = store.journal

        def failing_close() -> None:
            raise OSError(5, "Input/output error")

        with monkeypatch.context() as patch:
            patch.setattr(journal, "close", failing_close)
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.run)
                nursery.cancel_scope.cancel()
        assert "closing the idempotency journal failed" in caplog.messages


async def test_no_lock_stays_behind_for_a_key_once_its_requests_are_done(tmp_path: Path) -> None:
    # One lock per key in flight; a node answers keyed requests for months.
    with opened(tmp_path / "idempotency.jsonl", Clock()) as store:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(store.run, "key-1", ROUTE, BODY, Handler())
        await store.run("key-2", ROUTE, BODY, Handler())
        assert store._locks == {}


async def test_close_writes_every_queued_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "idempotency.jsonl"
    with opened(path, Clock()) as store:
        journal = store.journal

        def full_disk(data: bytes, start: int) -> None:
            raise OSError(28, "No space left on device")

        await store.run("key-0", ROUTE, BODY, Handler())
        with monkeypatch.context() as patch:
            patch.setattr(journal, "_append", full_disk)
            for i in (1, 2):
                with pytest.raises(StoreWriteError, match="cannot append to") as info:
                    await store.run(f"key-{i}", ROUTE, BODY, Handler())
                assert info.value.path == path
        journal.close()
        assert journal.lines == 3
    assert keys_on_disk(path) == ["key-0", "key-1", "key-2"]


async def test_the_old_file_may_be_named_explicitly(tmp_path: Path) -> None:
    clock = Clock()
    old = tmp_path / "elsewhere.json"
    old.write_bytes(msgspec.json.encode(IdempotencyBook(records=[record("old", clock.now)])))
    journal = IdempotencyJournal.open(tmp_path / "idempotency.jsonl", clock=clock,
                                      legacy_path=old)
    try:
        assert len(journal) == 1
        assert not old.exists()
    finally:
        journal.close()


async def test_a_record_is_kept_exactly_24_hours_also_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    handler = Handler()
    with opened(path, clock) as store:
        await store.run("key-1", ROUTE, BODY, handler)
        clock.now += RETENTION_S
        assert (await store.run("key-1", ROUTE, BODY, handler)).replayed is True
    with opened(path, clock) as store:
        assert len(store.journal) == 1


async def test_prune_drops_the_oldest_first_and_asks_for_a_compaction(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock, compact_min_lines=10) as store:
        journal = store.journal
        for i in range(20):
            await store.run(f"dead-{i}", ROUTE, BODY, Handler())
        clock.now += 100
        for i in range(2):
            await store.run(f"live-{i}", ROUTE, BODY, Handler())
        assert not journal.compaction_due
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.run)
                clock.now += RETENTION_S - 50  # the dead ones expire, the live ones not yet
                journal.prune()  # no append: the prune itself wakes the compaction
                assert len(journal) == 2
                await journal.wait_compacted(1)
                nursery.cancel_scope.cancel()
        assert keys_on_disk(path) == ["live-0", "live-1"]


async def test_at_most_max_records_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "MAX_RECORDS", 3)
    with opened(tmp_path / "idempotency.jsonl", Clock()) as store:
        for i in range(3):
            await store.run(f"key-{i}", ROUTE, BODY, Handler())
        store.journal.prune()
        assert len(store.journal) == 3
        await store.run("key-3", ROUTE, BODY, Handler())
        store.journal.prune()
        assert len(store.journal) == 3
        assert store.journal.get("key-0") is None


def test_the_journal_file_is_read_write_for_its_owner_only_writable(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        journal = IdempotencyJournal.open(tmp_path / "idempotency.jsonl")
        journal.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "idempotency.jsonl").stat().st_mode) == 0o644


async def test_undecodable_lines_inside_are_skipped_and_a_damaged_tail_is_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "idempotency.jsonl"
    clock = Clock()
    with opened(path, clock) as store:
        await store.run("key-0", ROUTE, BODY, Handler())
    good = [path.read_bytes()]
    for i in (1, 2):
        good.append(_encode_line(record(f"key-{i}", clock.now)))
    whole = good[0] + b"not json\n" + good[1] + b'{"shape": "wrong"}\n[]\n' + good[2]
    path.write_bytes(whole + b"{torn\n" + b'{"key": "half')
    with caplog.at_level(logging.WARNING, logger=RECORDS_LOGGER), opened(path, clock) as store:
        assert [store.journal.get(f"key-{i}") is not None for i in range(3)] == [True] * 3
        assert store.journal.lines == 6
    assert caplog.messages == [
        f"idempotency journal {path}: cut 2 torn/undecodable trailing line(s) from byte "
        f"{len(whole)}",
        f"idempotency journal {path}: skipped 3 undecodable line(s)",
    ]
    assert path.read_bytes() == whole
