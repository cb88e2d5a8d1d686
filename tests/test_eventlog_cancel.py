"""A commit whose caller gives up: the event log's wait is cancellable, its write is not.

``sessions.close()`` flushes in the HTTP handler's task, and the operations nursery is cancelled
at stop, so flushes are cancelled in practice. A commit's worker thread used to be abandoned on
cancel; a later commit and a rotation could then overtake it, and its late write landed at its
old offset in the *new* active file (a hole of zeros, then stale events): after a restart
``last_seq`` went backwards and seqs were readable twice.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from codexd_trio.base.limiters import journal_limiter
from codexd_trio.store._eventlog_files import _encode_line
from codexd_trio.store.eventlog import EventLog
from codexd_trio.store.idempotency import IdempotencyJournal, IdempotencyRecord
from tests.test_eventlog import lines_on_disk, make_event


class HeldCommits:
    """Holds the worker thread of the log's next ``count`` commits before it writes (before it
    takes the log's file lock, as a thread the OS has not scheduled yet would) until
    :meth:`release`. No sleeps: the test waits on :attr:`entered` and :attr:`finished`."""

    def __init__(self, log: EventLog, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self._write = log._write_batch
        self._token = trio.lowlevel.current_trio_token()
        self._gate = threading.Event()
        self._count = count
        self.entered = trio.Event()  # the first held thread reached the hook
        self.finished = trio.Event()  # the first held thread's write returned (or failed)
        monkeypatch.setattr(log, "_write_batch", self._commit)

    def release(self) -> None:
        self._gate.set()

    def _commit(self, data: bytes, start: int) -> None:  # a commit's worker thread
        if self._count <= 0:
            self._write(data, start)
            return
        self._count -= 1
        first = not self.entered.is_set()
        trio.from_thread.run_sync(self.entered.set, trio_token=self._token)
        try:
            self._gate.wait()
            self._write(data, start)
        finally:
            if first:
                trio.from_thread.run_sync(self.finished.set, trio_token=self._token)


async def flush_then_give_up(log: EventLog, held: HeldCommits) -> None:
    """A flush whose caller is cancelled once its commit's worker thread has started."""
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def caller() -> None:
            with scope:
                await log.flush()

        nursery.start_soon(caller)
        await held.entered.wait()
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel(reason="the HTTP client went away")


async def test_a_cancelled_commit_cannot_write_into_the_next_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sizes = [len(_encode_line(make_event(seq))) for seq in range(1, 56)]
    # 1..41 stay below the segment size; once 42..50 are durable the active file is full.
    segment = sum(sizes[:45])
    log = EventLog.open(path, segment_bytes=segment, retain_segments=10)
    held: HeldCommits | None = None
    try:
        with trio.fail_after(30):  # a hang guard
            for seq in range(1, 42):
                log.append(make_event(seq))
            await log.flush()
            held = HeldCommits(log, monkeypatch, count=1)
            for seq in range(42, 51):
                log.append(make_event(seq))
            await flush_then_give_up(log, held)
            assert log.durable_seq == 41  # the cancelled commit has not written yet
            for seq in range(51, 56):
                log.append(make_event(seq))
            next_done = trio.Event()

            async def next_commit() -> None:
                # The next commit, and the rotation it triggers, must not overtake the first.
                await log.flush()
                next_done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(next_commit)
                await trio.testing.wait_all_tasks_blocked()
                # The log runs one worker thread at a time: the held commit's, not a second.
                threads_while_held = journal_limiter().borrowed_tokens
                if threads_while_held > 1:
                    # The old code is writing 42..55 in a second thread, then rotates: let it
                    # finish before the held thread goes on, as in the reproduced failure.
                    await next_done.wait()
                held.release()
                await held.finished.wait()
            assert log.durable_seq == 55
            tokens_after = journal_limiter().borrowed_tokens
    finally:
        if held is not None:
            held.release()
        log.close()

    segments = sorted(tmp_path.glob("events-*.jsonl"))
    assert [p.name for p in segments] == ["events-000000000001.jsonl"]  # it did rotate
    for file in [*segments, path]:
        assert b"\0" not in file.read_bytes(), file.name  # no hole of zeros
    assert [e.seq for e in lines_on_disk(segments[0])] == list(range(1, 51))
    assert [e.seq for e in lines_on_disk(path)] == list(range(51, 56))
    reopened = EventLog.open(path, segment_bytes=segment, retain_segments=10)  # the restart
    try:
        assert reopened.last_seq == 55  # seq does not go backwards: nothing published is reused
        assert [e.seq for e in await reopened.read_after(0)] == list(range(1, 56))
    finally:
        reopened.close()
    assert threads_while_held == 1
    assert tokens_after == 0  # the held thread's token came back with its commit


async def test_a_cancelled_commit_keeps_its_token_and_the_log_takes_no_second_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # limiters.py: the event log and the idempotency journal hold at most one journal token
    # each, so neither ever waits for the other. Abandoned commit threads used to keep theirs
    # while the next commit took another one.
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    journal = IdempotencyJournal.open(tmp_path / "idempotency.jsonl")
    held = HeldCommits(log, monkeypatch, count=2)  # every commit the old code would start
    try:
        with trio.fail_after(30):  # a hang guard
            log.append(make_event(1))
            await flush_then_give_up(log, held)
            log.append(make_event(2))
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def second_caller() -> None:
                    with scope:
                        await log.flush()

                nursery.start_soon(second_caller)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel(reason="this client went away too")
            assert journal_limiter().borrowed_tokens == 1
            # So the idempotency journal still gets its thread while the commit is stuck.
            await journal.put(IdempotencyRecord(
                key="k", route="POST /v1/sessions", bodyHash="h", status=200, response=b"{}",
                contentType="application/json", createdAt=journal.clock()))
            assert log.durable_seq == 0
            held.release()
            await log.wait_durable(1)  # the commit nobody waits for any more is accounted for
            assert journal_limiter().borrowed_tokens == 0
            await log.flush()
            assert log.durable_seq == 2
    finally:
        held.release()
        journal.close()
        log.close()
    assert [e.seq for e in lines_on_disk(path)] == [1, 2]
