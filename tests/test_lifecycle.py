"""codexd's lifetime (issue "codexd core"): a clean stop when idle and under a second signal,
spawn failures that codexd survives, and turns that outlive the HTTP request that started them.
All against the real daemon and the real Codex child."""

from __future__ import annotations

import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from codexd_trio.client import CodexdClient, CodexdError, open_websocket
from codexd_trio.testing import Plain, ScriptedModel, Streamed
from codexd_trio.testing.daemon import pid_alive, read_events, running_codexd
from tests.bodies import post_json
from tests.fake_codexd import open_conductor

pytestmark = pytest.mark.real_codex

GUARD = 120


async def _close_code(ws: trio_websocket.WebSocketConnection) -> int:
    while True:
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason.code if exc.reason is not None else -1


def _ws(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


async def test_idle_sigterm_closes_streams_with_1001_directly_and_through_the_relay(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            open_conductor(codexd.url, tmp_path / "conductor") as c,
            open_websocket(_ws(codexd.url, "/v1/codexd/events")) as direct,
            open_websocket(_ws(c.url, "/v1/codex/events")) as relayed,
        ):
            await direct.get_message()  # hello
            await relayed.get_message()
            # Nothing runs: no turn, no approval. The stop must still close streams normally.
            codexd.process.send_signal(signal.SIGTERM)
            assert await _close_code(direct) == 1001
            assert await _close_code(relayed) == 1001
            assert await codexd.process.wait() == 0


async def test_a_second_sigterm_during_the_grace_changes_nothing(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home, "--shutdown-grace", "3") as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            scripted_model.script(Streamed(["still going "] * 1000, delay=0.05))
            await client.start_turn(session.sessionId, "keep going")
            await scripted_model.wait_streaming()
            child_pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
            async with client.events() as stream:
                codexd.process.send_signal(signal.SIGTERM)
                async for event in stream:
                    if event.type == "daemon.stopping":
                        break
                # The grace has begun: an impatient service manager signals again.
                codexd.process.send_signal(signal.SIGTERM)
                codexd.process.send_signal(signal.SIGINT)
            assert await codexd.process.wait() == 0
            assert not pid_alive(child_pid)
        journal = (codexd.logs_dir / "codexd" / "events.jsonl").read_bytes()
        assert journal.endswith(b"\n")
        events = read_events(codexd.logs_dir / "codexd" / "events.jsonl")  # every line whole
        assert "turn.failed" in [e.type for e in events]  # settled by the final flush
        stderr = codexd.stderr_path.read_text()
        assert "again while stopping gracefully" in stderr


async def test_a_child_that_cannot_be_spawned_is_a_failure_codexd_survives_and_recovers_from(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path, codex_binary: Path
) -> None:
    command = tmp_path / "bin" / "codex-wrapper"
    command.parent.mkdir()
    # A launcher whose interpreter does not exist: exec fails with ENOENT, like a broken
    # install or a missing Python behind a wrapper script.
    command.write_text("#!/nonexistent/interpreter\n")
    command.chmod(0o755)
    args = ["--server-command", str(command), "--restart-backoff", "0.05",
            "--restart-backoff-max", "0.2"]
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home, *args) as codexd,
            CodexdClient(codexd.url) as client,
            httpx.AsyncClient(base_url=codexd.url) as http,
        ):
            async with client.events(after=0) as stream:
                async for event in stream:
                    if event.type == "child.restarting" and event.level == "error":
                        break  # repeated failures: the child is "failed"
            status = (await client.status())["snapshot"]["daemon"]["child"]
            assert status["status"] == "failed"
            assert "interpreter" in status["lastError"] or "No such file" in status["lastError"]
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert "failed" in ready.json()["error"]["message"]

            # The cause goes away (the file is fixed on disk): the child comes back by itself.
            fixed = command.with_suffix(".new")
            fixed.write_text(f'#!/bin/sh\nexec "{codex_binary}" "$@"\n')
            fixed.chmod(0o755)
            async with client.events() as stream:
                fixed.replace(command)
                async for event in stream:
                    if event.type == "child.started":
                        break
            assert (await http.get("/readyz")).status_code == 200
            scripted_model.script(Plain("back again"))
            session = await client.create_session()
            accepted = await client.start_turn(session.sessionId, "hello")
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert done.lastTurnOutput == "back again"
            assert pid_alive(codexd.pid)  # the same codexd all along


async def test_a_client_that_goes_away_never_orphans_a_turn(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    """A client gives up at known points of ``POST /turn`` — before sending, once the model
    has the prompt (Codex accepted the turn, codexd may not have recorded it yet), once the
    turn is accepted but before the answer is read — and then at 0…20 ms into it. Wherever
    it lands, every turn Codex started is a turn codexd recorded, and it completes. The known
    points do not depend on the machine's speed; the sweep adds
    whatever points a given machine's timing reaches."""
    with trio.fail_after(GUARD * 2):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
            httpx.AsyncClient(base_url=codexd.url) as http,
        ):
            sessions = [(await client.create_session()).sessionId for _ in range(15)]
            gave_up: dict[str, bool] = {}

            async def give_up_when(n: int, sid: str, point: Any) -> None:
                """POST the turn; cancel it once ``point()`` returns; note whether the answer
                had come first."""
                answered = False

                async def post() -> None:
                    nonlocal answered
                    await post_json(http, "/v1/codexd/turn", {"sessionId": sid, "input": _q(n)})
                    answered = True

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(post)
                    await point()
                    nursery.cancel_scope.cancel(reason="the client goes away")
                gave_up[sid] = not answered

            async def at_once() -> None:
                return

            def model_has(count: int) -> Any:
                return lambda: scripted_model.wait_requests(count)

            async def accepted_event(sid: str) -> None:
                async for event in stream:
                    if event.type == "turn.accepted" and event.sessionId == sid:
                        return

            async with client.events() as stream:
                scripted_model.script(Plain("answer 0"))
                await give_up_when(0, sessions[0], at_once)  # nothing was sent
                for n in (1, 2):
                    scripted_model.script(Plain(f"answer {n}"))
                    await give_up_when(n, sessions[n],
                                       model_has(scripted_model.request_count + 1))
                scripted_model.script(Plain("answer 3"))
                await give_up_when(3, sessions[3], partial(accepted_event, sessions[3]))
            assert gave_up[sessions[0]]
            for n, sid in enumerate(sessions[4:], start=4):
                scripted_model.script(Plain(f"answer {n}"))
                with trio.move_on_after((n - 4) * 0.002):
                    await post_json(http, "/v1/codexd/turn", {"sessionId": sid, "input": _q(n)})
            # Let every operation that was started settle: a turn whose start was accepted by
            # Codex completes; the others never reached it.
            for sid in sessions:
                session, _ = await client.get_session(sid)
                if session.currentTurnId is not None:
                    await client.wait_for_turn(sid, session.currentTurnId)
            prompts_seen = {t for r in scripted_model.requests for t in r.user_texts()
                            if t.startswith("question-")}
            recorded: dict[str, Any] = {}
            for sid in sessions:
                session, _ = await client.get_session(sid)
                assert session.currentTurnId is None
                if session.lastTurnId is not None:
                    recorded[sid] = session
            # The known points: nothing sent → nothing recorded; the model had the prompt →
            # the turn is recorded although the client left before its answer.
            assert sessions[0] not in recorded
            assert {_q(0)} & prompts_seen == set()
            for n in (1, 2, 3):
                assert sessions[n] in recorded, f"point {n}: Codex had the turn, codexd lost it"
            # Every prompt the model received belongs to a turn codexd knows, completed.
            assert len(prompts_seen) == len(recorded)
            for session in recorded.values():
                assert session.lastTurnStatus == "completed"
                assert session.lastTurnOutput is not None
            accepted = [e for e in read_events(codexd.logs_dir / "codexd" / "events.jsonl")
                        if e.type == "turn.accepted"]
            assert len(accepted) == len(recorded)


def _q(n: int) -> str:
    return f"question-{n:02d}"


async def test_a_codex_outside_the_supported_range_is_a_warning_not_a_refusal(
    tmp_path: Path, codex_home: Path
) -> None:
    # The scriptable stand-in reports version 0.0.0-fake in its handshake.
    fake = Path(__file__).with_name("fake_app_server.py")
    args = ["--server-command", sys.executable, "--server-arg", str(fake)]
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home, *args) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            async with client.events(after=0) as stream:
                async for event in stream:
                    if event.type == "codex.version.unsupported":
                        break
            assert event.level == "warn"
            assert "0.0.0-fake" in event.message
            child = (await client.status())["snapshot"]["daemon"]["child"]
            assert child["status"] == "running"
            assert child["codexVersion"]["supported"] is False
            assert child["codexVersion"]["version"] == "0.0.0-fake"
            await client.readyz()  # still ready: a warning, not a refusal


FAKE_SERVER = Path(__file__).with_name("fake_app_server.py")


def _fake_server_args() -> list[str]:
    return ["--server-command", sys.executable, "--server-arg", str(FAKE_SERVER)]


async def _child_pid(client: CodexdClient) -> int:
    pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
    assert isinstance(pid, int)
    assert pid > 1
    return pid


async def _count(client: CodexdClient, types: dict[str, int]) -> None:
    """Follow the stream from the start until each event type was seen that many times."""
    seen = dict.fromkeys(types, 0)
    async with client.events(after=0) as stream:
        async for event in stream:
            if event.type in seen:
                seen[event.type] += 1
            if all(seen[t] >= n for t, n in types.items()):
                return


async def test_a_client_gone_while_codex_holds_the_turn_start_answer_orphans_nothing(
    tmp_path: Path, codex_home: Path
) -> None:
    # The stand-in starts each turn at once (fake/turnStarted: the model has it) and answers
    # turn/start 0.3 s later. Each client goes away right after the turn started: exactly
    # between Codex accepting the turn and codexd recording it.
    env = {"FAKE_TURN_START_DELAY": "0.3"}
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home, *_fake_server_args(), env=env) as codexd,
            CodexdClient(codexd.url) as client,
            httpx.AsyncClient(base_url=codexd.url) as http,
        ):
            sessions = [await client.create_session() for _ in range(3)]
            async with client.events() as stream:
                for session in sessions:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(post_json, http, "/v1/codexd/turn",
                                           {"sessionId": session.sessionId, "input": "hi"})
                        async for event in stream:
                            if (event.type == "app-server.fake.turnStarted"
                                    and event.threadId == session.threadId):
                                break
                        nursery.cancel_scope.cancel(reason="the client goes away")
            # Every turn the server started is recorded by codexd and completes.
            await _count(client, {"app-server.turn.completed": 3})
            for session in sessions:
                read, _ = await client.get_session(session.sessionId)
                assert (read.lastTurnStatus, read.lastTurnOutput) == ("completed", "fake answer")
            journal = read_events(codexd.logs_dir / "codexd" / "events.jsonl")
            assert len([e for e in journal if e.type == "turn.accepted"]) == 3


async def test_a_child_killed_during_thread_resume_leaves_nothing_to_the_next_one(
    tmp_path: Path, codex_home: Path
) -> None:
    env = {"FAKE_RESUME_DELAY": "0.5"}
    args = [*_fake_server_args(), "--restart-backoff", "0.05"]
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home, *args, env=env) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid = (await client.create_session()).sessionId
            first = await client.start_turn(sid, "one")
            await client.wait_for_turn(sid, first["turnId"])  # the thread is persisted now

            async def restarted(count: int) -> None:
                await _count(client, {"child.started": count})

            os.killpg(await _child_pid(client), signal.SIGKILL)  # a new child: resume needed
            await restarted(2)
            async with client.events() as stream, trio.open_nursery() as nursery:

                async def turn_in_resume() -> None:
                    with pytest.raises(CodexdError) as gone:
                        await client.start_turn(sid, "two")
                    assert gone.value.code == "child_unavailable"

                nursery.start_soon(turn_in_resume)
                async for event in stream:
                    if event.type == "app-server.fake.resuming":
                        break  # the stand-in now holds thread/resume for 0.5 s
                os.killpg(await _child_pid(client), signal.SIGKILL)
            await restarted(3)
            # The third child knows nothing of the second: the thread is resumed afresh there.
            third = await client.start_turn(sid, "three")
            done = await client.wait_for_turn(sid, third["turnId"])
            assert (done.lastTurnStatus, done.lastTurnOutput) == ("completed", "fake answer")
            journal = read_events(codexd.logs_dir / "codexd" / "events.jsonl")
            kinds = [e.type for e in journal]
            assert kinds.count("app-server.fake.resuming") == 2  # child 2 (killed) and child 3
            assert kinds.count("session.resumed") == 1  # only the resume that finished
