"""What a client has seen is on disk and stays true after any crash (issue 11): codexd is
SIGKILLed at the worst moments — mid-stream, and right after a turn completed — and restarted
on the same files. Real daemon, real Codex child, scripted model."""

from __future__ import annotations

import os
import resource
import signal
from contextlib import suppress
from pathlib import Path

import msgspec
import pytest
import trio

from codexd_trio.base.contracts import Event
from codexd_trio.client import CodexdClient, CodexdError, open_websocket
from codexd_trio.testing import Plain, ScriptedModel, Streamed
from codexd_trio.testing.daemon import CodexdProcess, read_events, running_codexd

pytestmark = pytest.mark.real_codex

GUARD = 180


def _journal(codexd: CodexdProcess) -> dict[int, Event]:
    journal = codexd.logs_dir / "codexd" / "events.jsonl"
    return {e.seq: e for e in read_events(journal)}


def _kill(codexd: CodexdProcess) -> None:
    """SIGKILL codexd and its child at once: no graceful anything."""
    child = codexd.child_pid()
    codexd.kill()
    if child is not None:
        with suppress(ProcessLookupError):
            os.killpg(child, signal.SIGKILL)


async def _until_events_wait_for_the_disk(client: CodexdClient) -> None:
    """Until ``/readyz`` says events wait for a disk that refuses them (another process:
    asking is the only way to know)."""
    while True:
        try:
            await client.readyz()
        except CodexdError as exc:
            if exc.code == "store_unavailable":
                return
        await trio.sleep(0.02)


async def _look_everywhere(client: CodexdClient, base: str, seen: dict[int, Event]) -> list[int]:
    """What a client is told exists now: status and hello's ``lastSeq``, a GET page and the
    stream's replay (events go into ``seen``); returns the claimed newest seqs."""
    status = await client.status()
    claimed = [int(status["snapshot"]["recentEvents"]["lastSeq"])]
    after = max(seen, default=0)
    for event in await client.events_page(after=after, limit=1000):
        seen.setdefault(event.seq, event)
    async with open_websocket(f"{base}/v1/codexd/events?after={after}") as ws:
        hello = msgspec.json.decode(await ws.get_message())
        claimed.append(int(hello["data"]["lastSeq"]))
    return claimed


async def test_every_event_a_client_saw_survives_a_sigkill_and_no_seq_is_reused(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    node = tmp_path / "node"
    seen: dict[int, Event] = {}
    claimed_seqs: list[int] = []  # "the newest event is N", as status and hello told a client
    session_id: str | None = None
    with trio.fail_after(GUARD):
        for kill_after in (40, 700, 1900):
            async with (
                running_codexd(node, codex_home) as codexd,
                CodexdClient(codexd.url) as client,
            ):
                if session_id is None:
                    session_id = (await client.create_session()).sessionId
                scripted_model.script(Streamed(["d"] * 3000))
                base = codexd.url.replace("http://", "ws://")
                fresh = 0
                started = False
                while fresh < kill_after:
                    # A burst of 3 000 deltas may overflow this reader: it reconnects with
                    # after= its last seq, as the contract says, and loses nothing.
                    after = max(seen, default=0)
                    async with open_websocket(f"{base}/v1/codexd/events?after={after}") as ws:
                        await ws.get_message()  # hello
                        if not started:
                            started = True
                            await client.start_turn(session_id, f"stream, killed at {kill_after}")
                        while fresh < kill_after:
                            frame = msgspec.json.decode(await ws.get_message())
                            if frame.get("type") == "overflow":
                                break
                            event = msgspec.convert(frame, Event)
                            assert event.seq not in seen or seen[event.seq] == event
                            seen[event.seq] = event
                            fresh += 1
                if kill_after == 700 and hasattr(resource, "prlimit"):
                    # The disk refuses the log's commits (RLIMIT_FSIZE: a full disk as far as
                    # codexd can tell) while the turn keeps streaming: whatever a client is
                    # shown from now on would be lost by the SIGKILL below. Durable first shows
                    # nothing new; an event published before its fsync returned is seen here,
                    # in every place a client looks (status, hello, a GET page, the stream).
                    resource.prlimit(codexd.pid, resource.RLIMIT_FSIZE,
                                     (0, resource.RLIM_INFINITY))
                    async with trio.open_nursery() as nursery:
                        # An event of our own, in case the stream has already ended: its
                        # answer waits for the disk (we do not wait for it).
                        nursery.start_soon(client.create_session)
                        await _until_events_wait_for_the_disk(client)
                        claimed_seqs.extend(await _look_everywhere(client, base, seen))
                        nursery.cancel_scope.cancel()
                _kill(codexd)  # mid-stream: events keep coming until the very end
                await codexd.process.wait()
                on_disk = _journal(codexd)
            # Everything the client saw is in the journal, byte for byte the same event.
            missing = [seq for seq in seen if seq not in on_disk]
            claimed = [seq for seq in claimed_seqs if seq > max(on_disk, default=0)]
            assert claimed == [], f"shown as existing but not durable: {claimed[:5]}…"
            assert missing == [], f"seen but not durable: {missing[:5]}…"
            assert all(on_disk[seq] == event for seq, event in seen.items())

        # After the last crash, numbering continues above everything anybody saw.
        async with running_codexd(node, codex_home) as codexd:
            starts = [e for e in _journal(codexd).values() if e.type == "daemon.started"]
            assert starts[-1].seq > max(seen)
            await codexd.terminate()


async def test_a_turn_that_completed_just_before_a_sigkill_comes_back_completed(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    node = tmp_path / "node"
    with trio.fail_after(GUARD):
        async with (
            running_codexd(node, codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            scripted_model.script(Plain("quick answer"))
            turn = await client.start_turn(session.sessionId, "be quick")
            done = await client.wait_for_turn(session.sessionId, turn["turnId"])
            assert done.lastTurnStatus == "completed"
            # Within the registry's 1 s snapshot window: only the journal knows.
            _kill(codexd)
            await codexd.process.wait()
        async with (
            running_codexd(node, codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            back, _ = await client.get_session(session.sessionId)
            assert (back.lastTurnId, back.lastTurnStatus) == (turn["turnId"], "completed")
            assert back.lastTurnOutput == "quick answer"
            assert back.lastTurnError is None


async def test_every_acknowledgement_survives_a_sigkill_right_after_it(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    """Issue 27: a 201 or 202 waits for a data-only sync into space the log reserved ahead of
    its data. codexd is SIGKILLed right after each answer, six times on the same files: each
    killed log is its data, then nothing but zeros, and every session and turn acknowledged
    before any of the kills is there after the restart."""
    node = tmp_path / "node"
    sessions: list[str] = []
    turns: dict[str, str] = {}  # session id -> the turn acknowledged last
    with trio.fail_after(GUARD):
        for round_ in range(6):
            async with (
                running_codexd(node, codex_home) as codexd,
                CodexdClient(codexd.url) as client,
            ):
                for session_id in sessions:
                    back, _ = await client.get_session(session_id)
                    assert back.lastTurnId == turns.get(session_id)
                session = await client.create_session()
                sessions.append(session.sessionId)
                if round_ % 2:
                    scripted_model.script(Plain("answered after the kill, or never"))
                    turn = await client.start_turn(session.sessionId, f"round {round_}")
                    turns[session.sessionId] = turn["turnId"]
                _kill(codexd)  # right after the 201 (even rounds) or the 202 (odd rounds)
                await codexd.process.wait()
                journal = codexd.logs_dir / "codexd" / "events.jsonl"
                raw = journal.read_bytes()
                data = raw.partition(b"\0")[0]
                assert len(raw) > len(data)  # the kill left the reserved space behind
                assert raw[len(data):].strip(b"\0") == b""
                assert data.endswith(b"\n")
                on_disk = _journal(codexd).values()
                assert session.sessionId in {e.sessionId for e in on_disk
                                             if e.type == "session.created"}
                if round_ % 2:
                    assert turns[session.sessionId] in {e.turnId for e in on_disk
                                                        if e.type == "turn.accepted"}
        async with running_codexd(node, codex_home) as codexd, CodexdClient(codexd.url) as client:
            for session_id in sessions:
                back, _ = await client.get_session(session_id)
                assert back.lastTurnId == turns.get(session_id)
            await codexd.terminate()
        # A clean stop leaves plain JSON lines.
        assert b"\0" not in (codexd.logs_dir / "codexd" / "events.jsonl").read_bytes()
