"""The codexd client library against the in-process fake codexd."""

from __future__ import annotations

import socket

import pytest
import trio

from codexd_trio.client import CodexdClient, CodexdError, CodexdUnavailable, StreamOverflow
from tests.fake_codexd import open_fake_codexd


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_sessions_turns_and_typed_errors() -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, CodexdClient(fake.url) as client:
            assert (await client.healthz())["status"] == "ok"
            assert (await client.readyz()) == {"ready": True}
            session = await client.create_session(cwd="/work", idempotency_key="k-1")
            assert session.sessionId.startswith("session-")
            assert any(
                h.get("Idempotency-Key") == "k-1" for m, _, h in fake.requests if m == "POST"
            )
            assert [s.sessionId for s in await client.list_sessions()] == [session.sessionId]
            accepted = await client.start_turn(session.sessionId, "hi")
            assert accepted["accepted"] is True
            read, events = await client.get_session(session.sessionId)
            assert read.lastTurnOutput == "echo: hi"
            assert "app-server.turn.completed" in [e.type for e in events]

            with pytest.raises(CodexdError) as missing:
                await client.get_session("session-nope")
            assert (missing.value.status, missing.value.code) == (404, "not_found")
            with pytest.raises(CodexdError) as idle:
                await client.interrupt_turn(session.sessionId)
            assert idle.value.code == "no_active_turn"

            fake.ready = False
            with pytest.raises(CodexdError) as not_ready:
                await client.readyz()
            assert (not_ready.value.status, not_ready.value.code) == (503, "child_unavailable")

            page = await client.events_page(after=0, limit=2)
            assert [e.seq for e in page] == [1, 2]


async def test_unreachable_codexd_is_typed() -> None:
    port = _free_port()
    with trio.fail_after(30):
        async with CodexdClient(f"http://127.0.0.1:{port}", timeout=5) as client:
            with pytest.raises(CodexdUnavailable):
                await client.status()
            with pytest.raises(CodexdUnavailable):
                async with client.events():
                    pass


async def test_event_stream_replay_live_and_normal_close() -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, CodexdClient(fake.url) as client:
            first = await client.create_session()
            async with client.events(after=0) as stream:
                assert stream.hello.replayFrom == 0
                replayed = await stream.receive()
                assert replayed is not None
                assert (replayed.type, replayed.sessionId) == ("session.created", first.sessionId)
                second = await client.create_session()
                live = await stream.receive()
                assert live is not None
                assert (live.seq, live.sessionId) == (2, second.sessionId)
                await fake.stop()
                # codexd's shutdown closes with 1001: iteration just ends.
                assert [e async for e in stream] == []
                assert stream.close_code == 1001


async def test_event_stream_overflow_raises_with_last_delivered_seq() -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, CodexdClient(fake.url) as client:
            await client.create_session()
            async with client.events() as stream:
                assert stream.hello.lastSeq == 1
                fake.overflow_all(last_delivered_seq=1)
                with pytest.raises(StreamOverflow) as exc:
                    await stream.receive()
                assert exc.value.last_delivered_seq == 1


async def test_wait_for_turn_follows_the_stream() -> None:
    with trio.fail_after(30):
        async with open_fake_codexd(auto_complete=False) as fake, CodexdClient(fake.url) as client:
            session = await client.create_session()
            accepted = await client.start_turn(session.sessionId, "slow")
            done: list[str | None] = []

            async def waiter() -> None:
                settled = await client.wait_for_turn(session.sessionId, accepted["turnId"])
                done.append(settled.lastTurnOutput)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                # The waiter subscribes before reading the session; wait until it has.
                await fake.wait_subscribers(1)
                assert done == []
                fake.complete_turn(session.sessionId, output="finally")
            assert done == ["finally"]
            # A turn that already ended is returned at once.
            settled = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert settled.lastTurnStatus == "completed"
