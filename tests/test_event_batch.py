"""Event fan-out of issue 16: one encoding per event, ``?batch=1`` framing, and the overflow bound
checked per commit.

The hub tests run over a real event log; the websocket tests over a real codexd (real codex
child, scripted model) and a real conductor relaying to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
import trio_websocket

from codexd_trio.base.contracts import Event, now_iso
from codexd_trio.client import CodexdClient, CodexdError, open_websocket
from codexd_trio.core.subscription import Overflowed
from codexd_trio.testing import ScriptedModel, Streamed
from codexd_trio.testing.daemon import running_codexd
from tests.fake_codexd import open_conductor
from tests.slow_consumer import overflow_then_resume
from tests.test_hub import running_hub, take

TOKEN = "batch-test-token"


# ------------------------------------------------------------------------------------------
# The hub


async def test_one_commit_larger_than_the_queue_reaches_a_subscriber_that_keeps_up(
    tmp_path: Path,
) -> None:
    # Before issue 16 the bound was per event, and the hub hands a whole commit over in one
    # synchronous step: a 20-event commit overflowed a waiting, empty 8-event queue.
    async with running_hub(tmp_path) as hub:
        async with hub.subscribe(queue_size=8) as sub:
            for _ in range(20):
                hub.emit("e")
            await hub.log.flush()  # one commit of 20
            assert await take(sub, 20) == list(range(1, 21))
            # Still holding a commit's worth (20 >= 8) when the next commit comes: dropped.
            for _ in range(20):
                hub.emit("e")
            await hub.log.flush()
            await _commit_one(hub)
            with pytest.raises(Overflowed) as info:
                await sub.__anext__()
            assert info.value.last_delivered_seq == 20
        async with hub.subscribe(after=20) as again:
            assert await take(again, 21) == list(range(21, 42))


async def test_next_batch_hands_over_what_is_waiting_with_one_shared_encoding(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path) as hub,
        hub.subscribe() as first,
        hub.subscribe() as second,
    ):
        for i in range(5):
            hub.emit("e", message=f"m{i}")
        await hub.log.flush()
        batch = await first.next_batch(max_events=3)
        assert [e.seq for e, _ in batch] == [1, 2, 3]
        for event, text in batch:
            assert json.loads(text) == msgspec.to_builtins(event)
        rest = await first.next_batch()
        assert [e.seq for e, _ in rest] == [4, 5]
        # A one-byte budget: one event per batch, however small the budget.
        one = await second.next_batch(max_bytes=1)
        assert [e.seq for e, _ in one] == [1]
        # Every subscriber gets the same text object: encoded once on publish.
        assert one[0][1] is batch[0][1]
        assert [e.seq for e, _ in await second.next_batch()] == [2, 3, 4, 5]
        hub.close_subscribers()
        assert await first.next_batch() == []


async def test_a_batch_never_grows_past_its_budget_with_a_large_event(tmp_path: Path) -> None:
    # A batch frame must never be larger than the largest single-event frame (a client's
    # message size limit holds for both framings): a large event waits for the next batch.
    async with running_hub(tmp_path) as hub, hub.subscribe() as sub:
        hub.emit("small")
        # ~2 800 characters but ~5 400 bytes of UTF-8: the budget counts bytes.
        hub.emit("large", message="é" * 2_600)
        hub.emit("small")
        hub.emit("small")
        await hub.log.flush()
        batches = [[e.type for e, _ in await sub.next_batch(max_bytes=5_000)] for _ in range(3)]
        assert batches == [["small"], ["large"], ["small", "small"]]
        assert sub._delivered == 4


async def test_next_batch_replays_then_overflows_at_the_last_seq_handed_over(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as hub:
        for _ in range(5):
            hub.emit("e")
        await hub.log.flush()
        async with hub.subscribe(after=0, queue_size=2) as sub:
            # Replayed (from the tail) events come with their text too.
            replayed = await sub.next_batch()
            assert [e.seq for e, _ in replayed] == [1, 2, 3, 4, 5]
            assert all(json.loads(t)["seq"] == e.seq for e, t in replayed)
            for _ in range(3):
                await _commit_one(hub)  # 6, 7 queued; the third commit finds 2 >= 2: dropped
            with pytest.raises(Overflowed) as info:
                await sub.next_batch()
            assert info.value.last_delivered_seq == 5


async def test_a_batch_budget_counts_every_event_and_an_exact_fit_is_taken(
    tmp_path: Path,
) -> None:
    # Two large events fill the budget exactly, a small third one waits: the budget is the sum
    # of every text in the batch, not only the last two, and "past the budget" is strict.
    async with (
        running_hub(tmp_path) as hub,
        hub.subscribe() as learn,
        hub.subscribe() as sub,
    ):
        hub.emit("e", message="a" * 100)
        hub.emit("e", message="b" * 100)
        hub.emit("e", message="c")
        await hub.log.flush()
        texts = [text for _, text in await learn.next_batch()]
        assert len(texts) == 3
        budget = len(texts[0]) + len(texts[1])
        assert [e.seq for e, _ in await sub.next_batch(max_bytes=budget)] == [1, 2]
        assert [e.seq for e, _ in await sub.next_batch(max_bytes=budget)] == [3]


async def test_an_overflow_after_a_cut_batch_resumes_after_the_last_event_handed_over(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as hub, hub.subscribe(queue_size=2) as sub:
        hub.emit("small")
        hub.emit("large", message="x" * 10_000)
        await hub.log.flush()  # one commit: both queued
        assert [e.seq for e, _ in await sub.next_batch(max_bytes=5_000)] == [1]
        for _ in range(3):
            await _commit_one(hub)  # 3, 4 queued; the third commit finds 2 >= 2: dropped
        with pytest.raises(Overflowed) as info:
            await sub.next_batch()
        # 2 went back to the buffer, it was never handed over: resume after 1.
        assert info.value.last_delivered_seq == 1
        assert str(info.value) == "subscriber overflowed after seq 1"


@pytest.mark.parametrize("end", ["close", "overflow"])
async def test_a_batch_stops_at_once_when_its_stream_ends_while_the_consumer_waits(
    tmp_path: Path, end: str
) -> None:
    # The consumer is parked in next_batch; a commit reaches it, then (before its task runs)
    # the hub closes its subscribers or a second commit overflows it. Events still queued are
    # not handed over (next_batch's and close_subscribers' contract): the batch holds only the
    # event its wait returned, and the stream ends right after it.
    async with running_hub(tmp_path) as hub, hub.subscribe(queue_size=2) as sub:
        publish = hub.log.on_durable  # what the log calls after a commit's sync (no real log
        assert publish is not None    # commit: both steps must land before the consumer runs)

        def commit(*seqs: int) -> None:
            assert publish is not None
            publish([Event(seq=seq, at=now_iso(), type="e") for seq in seqs])

        batches: list[list[int]] = []

        async def consume() -> None:
            batches.append([e.seq for e, _ in await sub.next_batch()])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            commit(1, 2, 3)
            if end == "close":
                hub.close_subscribers()
            else:
                commit(4)  # finds 3 queued >= 2: dropped
        assert batches == [[1]]
        if end == "close":
            assert await sub.next_batch() == []
        else:
            with pytest.raises(Overflowed) as info:
                await sub.next_batch()
            assert info.value.last_delivered_seq == 1


async def _commit_one(hub: Any) -> None:
    hub.emit("e")
    await hub.log.flush()


# ------------------------------------------------------------------------------------------
# Over a real codexd (and a conductor relaying to it)


async def _frames_until(
    ws: trio_websocket.WebSocketConnection, last_seq: int = 0, type_: str = ""
) -> list[Any]:
    """Decoded frames after hello until one holds ``last_seq`` (or an event of ``type_``)."""
    frames: list[Any] = []
    while True:
        frame = json.loads(await ws.get_message())
        frames.append(frame)
        events = frame if isinstance(frame, list) else [frame]
        if any(e.get("seq") == last_seq or e.get("type") == type_ for e in events):
            return frames


def _seqs_through(frames: list[Any], first: int, last: int) -> list[int]:
    """The seqs of ``frames`` up to ``last``, checking that whatever came with it in the same
    frame (a later event committed meanwhile) continues the sequence."""
    seqs = _seqs(frames)
    assert seqs == list(range(first, first + len(seqs)))
    return [seq for seq in seqs if seq <= last]


def _seqs(frames: list[Any]) -> list[int]:
    out: list[int] = []
    for frame in frames:
        assert isinstance(frame, list), frame
        assert frame, "an empty batch frame"
        out.extend(e["seq"] for e in frame)
    return out


@pytest.mark.real_codex
async def test_batch_frames_replay_resume_live_and_relay(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            scripted_model.script(Streamed([f"d{i} " for i in range(300)]))
            accepted = await client.start_turn(session.sessionId, "stream")
            await client.wait_for_turn(session.sessionId, accepted["turnId"])
            last = int((await client.status())["snapshot"]["recentEvents"]["lastSeq"])
            assert last > 300

            # Replay from the start in batch frames: arrays, every seq once, in order.
            async with open_websocket(client.events_url(after=0, batch=True)) as ws:
                hello = json.loads(await ws.get_message())
                # Codex may still report on the finished turn (usage, limits): >= last.
                assert hello["type"] == "hello"
                assert hello["data"]["replayFrom"] == 1
                assert hello["data"]["lastSeq"] >= last
                frames = await _frames_until(ws, last)
                assert _seqs_through(frames, 1, last) == list(range(1, last + 1))
                # The replay is paged from the log, so a frame carries many events.
                assert max(len(f) for f in frames) > 1
                # Live: creating a session commits its events; they arrive in array frames.
                await client.create_session()
                live = await _frames_until(ws, type_="session.created")
                now = _seqs(live)[-1]
                assert _seqs(live) == list(range(last + 1, now + 1))

            # Resume in the middle with after=: exactly the rest.
            middle = last // 2
            async with open_websocket(client.events_url(after=middle, batch=True)) as ws:
                assert json.loads(await ws.get_message())["type"] == "hello"
                assert _seqs_through(await _frames_until(ws, now), middle + 1, now) == list(
                    range(middle + 1, now + 1)
                )

            # The default framing is unchanged: one event object per frame.
            async with open_websocket(client.events_url(after=middle)) as ws:
                assert json.loads(await ws.get_message())["type"] == "hello"
                single = await _frames_until(ws, now)
                assert [f["seq"] for f in single] == list(range(middle + 1, now + 1))

            # The project's client asks for batches and yields single events.
            seen: list[int] = []
            async with client.events(after=0) as stream:
                async for event in stream:
                    seen.append(event.seq)
                    if event.seq == now:
                        break
            assert seen == list(range(1, now + 1))

            # A bad batch value is a 400 envelope before the upgrade is accepted.
            with pytest.raises(CodexdError) as refused:
                async with open_websocket(client.events_url() + "?batch=yes"):
                    pass
            assert (refused.value.status, refused.value.code) == (400, "invalid_request")

            # The conductor relays batch=1 to codexd and codexd's batches on.
            async with open_conductor(codexd.url, tmp_path / "conductor") as conductor:
                relay = conductor.url.replace("http://", "ws://") + "/v1/codex/events"
                async with open_websocket(relay + f"?after={middle}&batch=1") as ws:
                    assert json.loads(await ws.get_message())["type"] == "hello"
                    assert _seqs_through(
                        await _frames_until(ws, now), middle + 1, now
                    ) == list(range(middle + 1, now + 1))
                with pytest.raises(CodexdError) as refused:
                    async with open_websocket(relay + "?batch=2"):
                        pass
                assert (refused.value.status, refused.value.code) == (400, "invalid_request")


@pytest.mark.real_codex
async def test_batch_stream_keeps_the_caller_rules_and_a_slow_consumer_still_overflows(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(150):
        async with (
            running_codexd(
                tmp_path / "node",
                codex_home,
                env={"BAA_CODEXD_TOKEN": TOKEN, "BAA_CODEXD_SUBSCRIBER_QUEUE": "16"},
            ) as codexd,
            CodexdClient(codexd.url, token=TOKEN) as client,
        ):
            url = client.events_url(after=0, batch=True)
            # Refused before the upgrade is accepted, exactly as without batch=1.
            for headers, expected in (
                ({}, (401, "unauthorized")),
                ({"Authorization": "Bearer wrong"}, (401, "unauthorized")),
                (
                    {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"},
                    (403, "origin_not_allowed"),
                ),
            ):
                with pytest.raises(CodexdError) as refused:
                    async with open_websocket(url, headers=headers):
                        pass
                assert (refused.value.status, refused.value.code) == expected
            # A browser's ?token= works on the batch stream too.
            async with open_websocket(url + f"&token={TOKEN}") as ws:
                assert json.loads(await ws.get_message())["type"] == "hello"

            await overflow_then_resume(
                client, scripted_model, url, seqs_of=lambda frame: _seqs([frame]),
                headers=[(b"Authorization", f"Bearer {TOKEN}".encode())],
            )


@pytest.mark.real_codex
async def test_an_event_over_a_mebibyte_reaches_the_client_and_the_relay(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    # A 1.5 MB answer (a command's output is the usual one) is one event; the clients' 1 MiB
    # default frame limit closed every stream with 1009, and a resume met it again, forever.
    big = "x" * 1_500_000
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
            open_conductor(codexd.url, tmp_path / "conductor") as conductor,
        ):
            session = await client.create_session()
            scripted_model.script(Streamed([big]))
            accepted = await client.start_turn(session.sessionId, "say a lot")
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert done.lastTurnOutput == big

            async def largest(url: str) -> int:
                size = 0
                async with open_websocket(url) as ws:
                    await ws.get_message()  # hello
                    while True:
                        frame = await ws.get_message()
                        size = max(size, len(frame))
                        if '"app-server.turn.completed"' in frame:
                            return size

            relay = conductor.url.replace("http://", "ws://") + "/v1/codex/events?after=0"
            for url in (client.events_url(after=0), client.events_url(after=0, batch=True),
                        relay, relay + "&batch=1"):
                assert await largest(url) > 1_500_000, url
