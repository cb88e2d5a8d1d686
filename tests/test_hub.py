"""The event hub: seq numbering, recent ring, live fan-out, replay handoff, overflow, shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from codexd_trio.base.contracts import Event, RecentEvents
from codexd_trio.core.hub import EventHub
from codexd_trio.core.subscription import Overflowed, Subscription
from codexd_trio.store.documents import JsonDocument, read_document
from codexd_trio.store.eventlog import EventLog


@asynccontextmanager
async def running_hub(tmp_path: Path, **kwargs: int) -> AsyncIterator[EventHub]:
    """A hub over a real log and recent-events document, with both writers running."""
    log = EventLog.open(tmp_path / "logs" / "events.jsonl")
    path = tmp_path / "state" / "recent-events.json"
    doc = JsonDocument(path, RecentEvents, read_document(path, RecentEvents) or RecentEvents())
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                await nursery.start(doc.run)
                yield EventHub(log, doc, **kwargs)
                nursery.cancel_scope.cancel()
    finally:
        log.close()


async def emitted(hub: EventHub, type_: str, **kwargs: Any) -> Event:
    """Emit and make it durable at once: only then do readers see it (durable-first)."""
    event = hub.emit(type_, **kwargs)
    await hub.log.flush()
    return event


async def take(sub: Subscription, n: int) -> list[int]:
    return [(await sub.__anext__()).seq for _ in range(n)]


async def test_emit_numbers_events_and_persists_the_recent_ring(tmp_path: Path) -> None:
    async with running_hub(tmp_path, recent_size=50) as hub:
        first = await emitted(hub, "daemon.started", message="codexd started")
        assert (first.seq, first.type, first.level) == (1, "daemon.started", "info")
        assert first.at.endswith("Z")
        for i in range(59):
            await emitted(hub, "test.event", level="warn", session_id="s1" if i % 2 else "s2",
                     thread_id="t", turn_id="u", detail={"i": i})
        assert hub.last_seq == 60
        assert [e.seq for e in hub.recent()] == list(range(11, 61))
        last = hub.recent()[-1]
        assert (last.sessionId, last.threadId, last.turnId, last.level) == ("s2", "t", "u", "warn")
        assert (last.message, last.detail) == ("", {"i": 58})  # no message given: empty
        assert [e.seq for e in hub.recent(limit=3)] == [58, 59, 60]
        assert all(e.sessionId == "s1" for e in hub.recent(session_id="s1"))
        assert [e.seq for e in hub.recent(session_id="s1", limit=2)] == [57, 59]
        assert hub.recent(limit=0) == []
        assert [e.seq for e in hub.recent(limit=1)] == [60]

    on_disk = read_document(tmp_path / "state" / "recent-events.json", RecentEvents)
    assert on_disk is not None
    assert [e.seq for e in on_disk.events] == list(range(11, 61))
    assert on_disk.events[-1].detail == {"i": 58}

    # A restart: seq continues from the log, the ring comes back from recent-events.json
    # (whole, or its newest part for a smaller ring).
    async with running_hub(tmp_path, recent_size=50) as hub:
        assert [e.seq for e in hub.recent()] == list(range(11, 61))
    async with running_hub(tmp_path, recent_size=20) as hub:
        assert hub.last_seq == 60
        assert [e.seq for e in hub.recent()] == list(range(41, 61))
        assert (await emitted(hub, "daemon.started")).seq == 61


async def test_a_hub_without_a_recent_ring_keeps_none(tmp_path: Path) -> None:
    async with running_hub(tmp_path, recent_size=0) as hub:
        await emitted(hub, "e")
        assert hub.recent() == []
    assert not (tmp_path / "state" / "recent-events.json").exists()


async def test_live_subscription_sees_only_new_events(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        for _ in range(3):
            await emitted(hub, "before")
        async with hub.subscribe() as sub:
            assert (sub.last_seq, sub.replay_from) == (3, 4)
            for _ in range(5):
                await emitted(hub, "after")
            events = [await sub.__anext__() for _ in range(5)]
        assert [e.seq for e in events] == [4, 5, 6, 7, 8]
        assert {e.type for e in events} == {"after"}


async def test_replay_reaches_past_the_recent_ring_into_the_log(tmp_path: Path) -> None:
    async with running_hub(tmp_path, recent_size=5, tail_size=8, replay_page=16) as hub:
        for i in range(100):
            await emitted(hub, "e", session_id="a" if i % 2 else "b")
    # After a restart nothing is in memory but the log.
    async with running_hub(tmp_path, recent_size=5, tail_size=8, replay_page=16) as hub:
        async with hub.subscribe(after=10) as sub:
            assert (sub.last_seq, sub.replay_from) == (100, 11)
            assert await take(sub, 90) == list(range(11, 101))
            await emitted(hub, "live")
            assert await take(sub, 1) == [101]
        async with hub.subscribe(after=0, session_id="a") as sub:
            assert await take(sub, 50) == list(range(2, 101, 2))
            await emitted(hub, "live", session_id="b")
            await emitted(hub, "live", session_id="a")
            assert await take(sub, 1) == [103]


@pytest.mark.parametrize("session_id", [None, "a"])
async def test_replay_then_live_handoff_under_concurrent_emits(
    tmp_path: Path, session_id: str | None
) -> None:
    tail_size, page, backlog, more = 64, 50, 3000, 2000

    def session_of(seq: int) -> str:
        return "a" if seq % 3 == 0 else "b"

    def wanted(seq: int) -> bool:
        return session_id is None or session_of(seq) == session_id

    async with running_hub(tmp_path, tail_size=tail_size, replay_page=page) as hub:
        for _ in range(backlog):
            hub.emit("backlog", session_id=session_of(hub.last_seq + 1))
        await hub.log.flush()  # durable, so the replay reads the file, in a thread
        remaining = more
        live_at_burst: list[bool] = []  # per burst: was the subscriber attached live yet?

        async def burst() -> None:
            nonlocal remaining
            live_at_burst.append(sub._recv is not None)
            for _ in range(min(8, remaining)):
                hub.emit("live", session_id=session_of(hub.last_seq + 1))
                remaining -= 1
            await hub.log.flush()  # published: a live subscriber gets them now

        # Events are emitted after each replay read took its snapshot and before the
        # subscriber acts on the page: the window in which a handoff could lose or repeat one.
        original_read_after = hub._log.read_after

        async def read_after_with_traffic(
            after_seq: int, *, limit: int | None = None, session_id: str | None = None
        ) -> list[Event]:
            events = await original_read_after(after_seq, limit=limit, session_id=session_id)
            await burst()
            return events

        hub._log.read_after = read_after_with_traffic  # type: ignore[method-assign]

        attached = trio.Event()

        async def emitter() -> None:
            # Once the subscriber is live: more events whenever it waits on its queue.
            await attached.wait()
            while remaining:
                await trio.testing.wait_all_tasks_blocked()
                await burst()

        received: list[int] = []
        last_wanted = max(s for s in range(1, backlog + more + 1) if wanted(s))
        async with (
            hub.subscribe(after=100, session_id=session_id, queue_size=10_000) as sub,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(emitter)
            async for event in sub:
                received.append(event.seq)
                if sub._recv is not None:
                    attached.set()
                # Bounded memory: one page or one tail in the local buffer at most.
                assert len(sub._buffer) <= max(tail_size, page)
                if event.seq == last_wanted:
                    break
        assert received == [s for s in range(101, backlog + more + 1) if wanted(s)]
        # The handoff happened while events were still being emitted.
        assert live_at_burst[0] is False
        assert live_at_burst[-1] is True


async def test_after_beyond_last_seq_waits_for_new_events(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        for _ in range(3):
            await emitted(hub, "e")
        async with hub.subscribe(after=8) as sub:
            assert (sub.last_seq, sub.replay_from) == (3, 9)
            for _ in range(7):
                await emitted(hub, "e")
            assert await take(sub, 2) == [9, 10]


async def test_slow_subscriber_overflows_fast_one_gets_everything_and_reconnect_loses_nothing(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as hub:
        async with hub.subscribe() as fast, hub.subscribe(queue_size=8) as slow:
            for _ in range(3):
                await emitted(hub, "e")
            assert await take(slow, 3) == [1, 2, 3]
            for _ in range(47):  # emit never blocks, even with a full subscriber queue
                await emitted(hub, "e")
            assert await take(fast, 50) == list(range(1, 51))
            with pytest.raises(Overflowed) as info:
                await slow.__anext__()
            assert info.value.last_delivered_seq == 3
            with pytest.raises(Overflowed):  # it stays overflowed
                await slow.__anext__()
            await emitted(hub, "e")
            assert await take(fast, 1) == [51]
        async with hub.subscribe(after=info.value.last_delivered_seq) as again:
            assert await take(again, 48) == list(range(4, 52))


async def test_overflow_position_is_in_unfiltered_seq_numbering(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        for _ in range(10):
            await emitted(hub, "other", session_id="b")
        async with hub.subscribe(after=0, session_id="a", queue_size=1) as sub:
            async with trio.open_nursery() as nursery:

                async def first() -> None:
                    # Replays 1..10 (all filtered out), attaches live, then waits.
                    assert await take(sub, 1) == [11]

                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                await emitted(hub, "mine", session_id="a")  # 11: handed to the waiting reader
            await emitted(hub, "other", session_id="b")  # 12
            await emitted(hub, "mine", session_id="a")  # 13: queued
            await emitted(hub, "mine", session_id="a")  # 14: queue full -> overflow
            with pytest.raises(Overflowed) as info:
                await sub.__anext__()
            assert info.value.last_delivered_seq == 11
        async with hub.subscribe(after=11, session_id="a") as sub:
            assert await take(sub, 2) == [13, 14]

        # Nothing matching in the replay: the position still moves to where the replay got.
        async with hub.subscribe(after=0, session_id="c", queue_size=1) as sub:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sub.__anext__)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            await emitted(hub, "x", session_id="c")  # 15 queued
            await emitted(hub, "x", session_id="c")  # 16 overflows
            with pytest.raises(Overflowed) as info:
                await sub.__anext__()
            assert info.value.last_delivered_seq == 14


async def test_close_subscribers_ends_iteration_normally(tmp_path: Path) -> None:
    async with running_hub(tmp_path, tail_size=4, replay_page=2) as hub:
        for _ in range(20):
            await emitted(hub, "e")
        got: dict[str, list[int]] = {"live": [], "replaying": []}
        async with trio.open_nursery() as nursery:

            caught_up = trio.Event()

            async def consume(name: str, after: int | None) -> None:
                async with hub.subscribe(after=after) as sub:
                    async for event in sub:
                        got[name].append(event.seq)
                        if event.seq == 20:
                            caught_up.set()
                got[name].append(-1)  # iteration ended without an exception

            nursery.start_soon(consume, "live", None)
            nursery.start_soon(consume, "replaying", 0)
            # The replay reads durable pages in worker threads: wait for it, not for idleness.
            await caught_up.wait()
            await trio.testing.wait_all_tasks_blocked()
            await emitted(hub, "e")
            await trio.testing.wait_all_tasks_blocked()
            hub.close_subscribers()
        assert got["live"] == [21, -1]
        assert got["replaying"] == [*range(1, 22), -1]
        async with hub.subscribe(after=0) as late:
            with pytest.raises(StopAsyncIteration):
                await late.__anext__()
        # Events keep flowing into the log after subscribers are closed.
        assert (await emitted(hub, "daemon.stopping")).seq == 22


async def test_exiting_a_subscription_unregisters_it(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        async with hub.subscribe(queue_size=1) as sub:
            await emitted(hub, "e")
        for _ in range(5):  # would overflow sub if it were still registered
            await emitted(hub, "e")
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
        # Nothing of it stays with the hub (a node serves many short-lived websockets).
        assert sub not in hub._live
        assert sub not in hub._subscriptions


async def test_a_subscriber_is_live_from_subscribe_even_right_after_a_restart(
    tmp_path: Path,
) -> None:
    # A restarted hub has nothing in its tail yet. A subscriber is registered at subscribe()
    # all the same: commits before its first read go to its queue (and count against it), they
    # are not left to a replay from the log later.
    async with running_hub(tmp_path) as hub:
        for _ in range(3):
            await emitted(hub, "before")
    async with running_hub(tmp_path) as hub, hub.subscribe(queue_size=2) as sub:
        for _ in range(3):
            await emitted(hub, "after")  # 4, 5 queued; the third commit finds 2 >= 2: dropped
        with pytest.raises(Overflowed) as info:
            await sub.__anext__()
        assert info.value.last_delivered_seq == 3


async def test_replay_attaches_to_the_tail_only_when_it_holds_the_next_event(
    tmp_path: Path,
) -> None:
    # The tail holds 13..20; a subscriber after 11 must read 12 from the log first: attaching
    # at once would skip it.
    async with running_hub(tmp_path, tail_size=8, replay_page=4) as hub:
        for _ in range(20):
            hub.emit("e")
        await hub.log.flush()
        async with hub.subscribe(after=11) as sub:
            assert await take(sub, 9) == list(range(12, 21))


def _seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


async def test_emitted_events_are_durable_in_the_log(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        for _ in range(5):
            await emitted(hub, "e", session_id="s")
        await hub._log.wait_durable(5)
        assert _seqs(await hub._log.read_after(0, session_id="s")) == [1, 2, 3, 4, 5]
