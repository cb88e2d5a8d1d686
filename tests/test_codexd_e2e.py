"""codexd end to end: a real codexd process, the real codex app-server, the scripted model.

Each test starts ``python -m codexd_trio start`` on port 0 with its files in the test's own
directory, talks to it over HTTP/WebSocket like any client, and reads its files afterwards.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio_websocket

from codexd_trio.base.contracts import RecentEvents, SessionRegistry
from codexd_trio.client import CodexdClient, CodexdError
from codexd_trio.testing import HttpError, Plain, ScriptedModel, Streamed
from codexd_trio.testing.daemon import pid_alive, read_events, running_codexd
from tests.bodies import post_oversized
from tests.slow_consumer import overflow_then_resume

pytestmark = pytest.mark.real_codex


async def test_session_turn_status_and_files(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            health = await client.healthz()
            assert health["status"] == "ok"
            assert health["pid"] == codexd.process.pid
            await client.readyz()
            status = await client.status()
            assert status["service"]["resolvedBaseUrl"] == codexd.url
            assert status["service"]["eventStreamUrl"].startswith("ws://127.0.0.1:")
            child = status["snapshot"]["daemon"]["child"]
            assert child["status"] == "running"
            assert pid_alive(child["pid"])
            assert child["codexVersion"]["supported"] is True
            assert child["codexVersion"]["version"] == child["codexVersion"]["pinned"]

            session = await client.create_session(purpose="smoke")
            assert session.purpose == "smoke"
            assert session.status == "active"
            assert session.currentTurnId is None
            assert session.sandbox == "read-only"
            listed = await client.list_sessions()
            assert [s.sessionId for s in listed] == [session.sessionId]

            scripted_model.script(Streamed(["Hel", "lo ", "there"]))
            accepted = await client.start_turn(session.sessionId, "say hello")
            assert accepted["accepted"] is True
            turn_id = accepted["turnId"]
            done = await client.wait_for_turn(session.sessionId, turn_id)
            assert done.lastTurnStatus == "completed"
            assert done.lastTurnOutput == "Hello there"
            assert done.lastTurnId == turn_id
            assert done.turnCount == 1
            assert done.lastTurnError is None
            assert done.lastTurnStartedAt is not None
            assert done.lastTurnCompletedAt is not None
            assert scripted_model.requests[-1].user_texts()[-1] == "say hello"

            read, recent = await client.get_session(session.sessionId)
            assert read == done
            types = [e.type for e in recent]
            assert "turn.accepted" in types
            assert "app-server.turn.completed" in types
            assert all(e.sessionId == session.sessionId for e in recent)

            status = await client.status()
            assert status["snapshot"]["sessions"] == {"count": 1, "activeCount": 1}
            assert status["snapshot"]["recentEvents"]["lastSeq"] >= recent[-1].seq
            identity = status["snapshot"]["identity"]

        # Files, read after a graceful stop.
        state, logs = codexd.codexd_state, codexd.codexd_logs
        assert (
            json.loads((state / "identity.json").read_text())["daemonId"] == (identity["daemonId"])
        )
        registry = msgspec.json.decode(
            (state / "session-registry.json").read_bytes(), type=SessionRegistry
        )
        assert registry.sessions[0].lastTurnOutput == "Hello there"
        recent_file = msgspec.json.decode(
            (state / "recent-events.json").read_bytes(), type=RecentEvents
        )
        assert 0 < len(recent_file.events) <= 50
        daemon_state = json.loads((state / "daemon-state.json").read_text())
        assert daemon_state["started"] is False
        assert daemon_state["stoppedAt"] is not None
        events = read_events(logs / "events.jsonl")
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(seqs) + 1))
        deltas = [
            e.detail["delta"]
            for e in events
            if e.type == "app-server.item.agentMessage.delta" and e.turnId == turn_id
        ]
        assert "".join(deltas) == "Hello there"
        types = [e.type for e in events]
        for needed in (
            "daemon.started",
            "child.started",
            "app-server.initialized",
            "daemon.stopping",
        ):
            assert needed in types
        assert recent_file.events == events[-len(recent_file.events) :]
        assert (logs / "stderr.log").exists()


async def test_websocket_replay_has_no_gaps_or_duplicates(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            live: list[int] = []
            async with client.events(after=0) as stream:
                assert stream.hello.replayFrom == 1
                scripted_model.script(Streamed([f"d{i} " for i in range(60)]))
                accepted = await client.start_turn(session.sessionId, "stream please")
                async for event in stream:
                    live.append(event.seq)
                    if event.type == "app-server.turn.completed":
                        break
            assert live == list(range(1, live[-1] + 1))

            # A late subscriber replays the same history from the durable log.
            replayed: list[int] = []
            async with client.events(after=0) as stream:
                assert stream.hello.lastSeq >= live[-1]
                async for event in stream:
                    replayed.append(event.seq)
                    if event.seq == live[-1]:
                        break
            assert replayed == live

            middle = live[len(live) // 2]
            async with client.events(after=middle, session_id=session.sessionId) as stream:
                assert stream.hello.replayFrom == middle + 1
                first = await stream.receive()
                assert first is not None
                assert first.seq > middle
                assert first.sessionId == session.sessionId

            page = await client.events_page(after=0, limit=1000)
            assert [e.seq for e in page][: len(live)] == live
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert done.lastTurnOutput == "".join(f"d{i} " for i in range(60))


async def test_slow_consumer_overflows_then_resumes_without_loss(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(180):
        async with (
            # 1 MiB segments: the ~3 MB of events below rotate events.jsonl while we replay.
            running_codexd(
                tmp_path / "node",
                codex_home,
                "--event-log-segment-mb",
                "1",
                env={"BAA_CODEXD_SUBSCRIBER_QUEUE": "16"},
            ) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            await overflow_then_resume(client, scripted_model, client.events_url(after=0),
                                       seqs_of=lambda frame: [frame["seq"]])
        assert len(list(codexd.codexd_logs.glob("events-*.jsonl"))) >= 2


async def test_busy_session_refuses_a_second_turn_and_interrupt_ends_it(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            scripted_model.script(Streamed(["slow "] * 200, delay=0.2))
            accepted = await client.start_turn(session.sessionId, "take your time")
            with pytest.raises(CodexdError) as refused:
                await client.start_turn(session.sessionId, "me too")
            assert refused.value.status == 409
            assert refused.value.code == "turn_in_progress"
            assert refused.value.details["currentTurnId"] == accepted["turnId"]
            status = await client.status()
            assert [t["turnId"] for t in status["snapshot"]["activeTurns"]] == [accepted["turnId"]]

            await scripted_model.wait_streaming()
            await client.interrupt_turn(session.sessionId)
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert done.lastTurnStatus == "interrupted"
            assert done.currentTurnId is None

            with pytest.raises(CodexdError) as idle:
                await client.interrupt_turn(session.sessionId)
            assert idle.value.status == 409
            assert idle.value.code == "no_active_turn"

            scripted_model.script(Plain("after the interrupt"))
            again = await client.start_turn(session.sessionId, "and now?")
            done = await client.wait_for_turn(session.sessionId, again["turnId"])
            assert done.lastTurnOutput == "after the interrupt"


async def test_failing_provider_settles_the_turn_as_failed(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            scripted_model.script(HttpError(500))
            accepted = await client.start_turn(session.sessionId, "this will fail")
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert done.lastTurnStatus == "failed"
            assert done.lastTurnError is not None
            assert done.lastTurnError.code == "internalServerError"
            assert done.lastTurnError.message
            _, recent = await client.get_session(session.sessionId)
            failed = [e for e in recent if e.type == "turn.failed"]
            assert failed
            assert failed[-1].level == "error"
            # The session stays usable.
            scripted_model.script(Plain("recovered"))
            again = await client.start_turn(session.sessionId, "try again")
            done = await client.wait_for_turn(session.sessionId, again["turnId"])
            assert done.lastTurnStatus == "completed"
            assert done.lastTurnOutput == "recovered"


async def test_bad_input_gets_json_error_envelopes(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            httpx.AsyncClient(base_url=codexd.url) as http,
        ):

            async def expect(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
                assert response.status_code == status, response.text
                assert response.headers["content-type"].startswith("application/json")
                body = response.json()
                assert body["ok"] is False
                assert body["error"]["code"] == code
                assert body["error"]["message"]
                details: dict[str, Any] = body["error"]["details"]
                return details

            as_json = {"content-type": "application/json"}
            await expect(
                await http.post("/v1/codexd/sessions", content=b"{not json", headers=as_json),
                400,
                "invalid_json",
            )
            await expect(
                await http.post("/v1/codexd/turn", content=b"", headers=as_json),
                400,
                "invalid_json",
            )
            details = await expect(
                await http.post("/v1/codexd/turn", json={"sessionId": 5, "input": "x"}),
                400,
                "invalid_request",
            )
            assert details["field"] == "$.sessionId"
            details = await expect(
                await http.post("/v1/codexd/sessions", json={"sandbox": "everything"}),
                400,
                "invalid_request",
            )
            assert details["field"] == "$.sandbox"
            # A cwd that does not exist, or is a file: refused, nothing created.
            missing = tmp_path / "no-such-dir"
            details = await expect(
                await http.post("/v1/codexd/sessions", json={"cwd": str(missing)}),
                400,
                "invalid_request",
            )
            assert details["field"] == "$.cwd"
            assert not missing.exists()
            a_file = tmp_path / "a-file"
            a_file.write_text("x")
            details = await expect(
                await http.post("/v1/codexd/sessions", json={"cwd": str(a_file)}),
                400,
                "invalid_request",
            )
            assert details["field"] == "$.cwd"
            # The seed's stdoutLogPath exists from the first start.
            assert (codexd.logs_dir / "codexd" / "stdout.log").is_file()
            details = await expect(
                await http.post("/v1/codexd/sessions", json={"colour": "blue"}),
                400,
                "invalid_request",
            )
            details = await expect(
                await http.post(
                    "/v1/codexd/turn", json={"sessionId": "session-nope", "input": "x"}
                ),
                404,
                "not_found",
            )
            assert details["sessionId"] == "session-nope"
            await expect(await http.get("/v1/codexd/sessions/session-nope"), 404, "not_found")
            await expect(await http.get("/v1/codexd/approvals/approval-nope"), 404, "not_found")
            await expect(await http.get("/v1/codexd/nothing-here"), 404, "not_found")
            await expect(await http.get("/v1/codexd/runs"), 404, "not_found")
            await expect(await http.post("/v1/codexd/runs", json={}), 404, "not_found")
            await expect(await http.get("/v1/codexd/exec"), 404, "not_found")
            details = await expect(
                await http.delete("/v1/codexd/sessions"), 405, "method_not_allowed"
            )
            assert "POST" in details["allowed"]
            await expect(await http.get("/v1/codexd/turn"), 405, "method_not_allowed")
            details = await expect(
                await post_oversized(http, "/v1/codexd/turn"), 413, "payload_too_large"
            )
            assert details["limit"] == 1024 * 1024
            await expect(await http.get("/v1/codexd/events?after=abc"), 400, "invalid_request")
            await expect(await http.get("/v1/codexd/approvals?state=maybe"), 400, "invalid_request")
            describe = (await http.get("/describe")).json()["data"]
            paths = {r["path"] for r in describe["routes"]}
            assert "/v1/codexd/turn" in paths
            assert not any("runs" in p or "exec" in p for p in paths)
            # Nothing accepted was lost: the daemon is still healthy and empty.
            assert (await http.get("/v1/codexd/sessions")).json()["data"]["sessions"] == []

            # A closed session keeps its record but refuses turns; closing is idempotent.
            created = (await http.post("/v1/codexd/sessions", json={})).json()["data"]
            sid = created["session"]["sessionId"]
            key = {"Idempotency-Key": "close-1"}
            first = await http.post(f"/v1/codexd/sessions/{sid}/close", headers=key, json={})
            again = await http.post(f"/v1/codexd/sessions/{sid}/close", headers=key, json={})
            assert first.status_code == again.status_code == 200
            assert first.json()["data"]["session"]["status"] == "closed"
            assert again.json() == first.json()
            assert again.headers["Idempotency-Replayed"] == "true"
            details = await expect(
                await http.post("/v1/codexd/turn", json={"sessionId": sid, "input": "x"}),
                409,
                "session_closed",
            )
            assert details["sessionId"] == sid
            await expect(
                await http.post("/v1/codexd/sessions/session-nope/close", json={}),
                404,
                "not_found",
            )


async def test_restart_keeps_identity_seq_and_conversation_history(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir = tmp_path / "node"
    with trio.fail_after(180):
        async with (
            running_codexd(workdir, codex_home) as first,
            CodexdClient(first.url) as client,
        ):
            status = await client.status()
            identity = status["snapshot"]["identity"]
            fresh = await client.create_session()  # never runs a turn before the restart
            session = await client.create_session()
            scripted_model.script(Plain("noted"))
            accepted = await client.start_turn(session.sessionId, "remember the word PAPAYA")
            await client.wait_for_turn(session.sessionId, accepted["turnId"])
            child_pid = status["snapshot"]["daemon"]["child"]["pid"]
            exit_code = await first.terminate()
            assert exit_code == 0
            assert not pid_alive(child_pid)
        last_seq_before = read_events(first.codexd_logs / "events.jsonl")[-1].seq

        async with (
            running_codexd(workdir, codex_home) as second,
            CodexdClient(second.url) as client,
        ):
            status = await client.status()
            assert status["snapshot"]["identity"] == identity
            assert status["snapshot"]["sessions"]["count"] == 2
            scripted_model.script(Plain("the word was PAPAYA"))
            accepted = await client.start_turn(session.sessionId, "which word?")
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert done.lastTurnOutput == "the word was PAPAYA"
            assert done.turnCount == 2
            texts = scripted_model.requests[-1].user_texts()
            assert "remember the word PAPAYA" in texts
            assert texts[-1] == "which word?"

            # The thread that never ran a turn is re-created transparently.
            scripted_model.script(Plain("fresh start"))
            accepted = await client.start_turn(fresh.sessionId, "hello?")
            done = await client.wait_for_turn(fresh.sessionId, accepted["turnId"])
            assert done.lastTurnOutput == "fresh start"
            assert done.threadId != fresh.threadId
            _, recent = await client.get_session(fresh.sessionId)
            assert "session.rethreaded" in [e.type for e in recent]
            _, recent = await client.get_session(session.sessionId)
            assert "session.resumed" in [e.type for e in recent]

        events = read_events(second.codexd_logs / "events.jsonl")
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(seqs) + 1))
        restarted = [e for e in events if e.type == "daemon.started"]
        assert len(restarted) == 2
        assert restarted[1].seq == last_seq_before + 1


async def test_sigterm_closes_streams_with_1001_stops_the_child_and_exits_zero(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home, "--shutdown-grace", "3") as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            scripted_model.script(Streamed(["never ending "] * 1000, delay=0.2))
            accepted = await client.start_turn(session.sessionId, "keep going")
            await scripted_model.wait_streaming()
            child_pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
            close_code: int | None = None
            async with trio_websocket.open_websocket_url(client.events_url()) as ws:
                await ws.get_message()  # hello
                started = trio.current_time()
                codexd.process.send_signal(signal.SIGTERM)
                while close_code is None:
                    try:
                        await ws.get_message()
                    except trio_websocket.ConnectionClosed as exc:
                        close_code = exc.reason.code if exc.reason else -1
                await ws._stream.aclose()
            assert close_code == 1001
            assert await codexd.process.wait() == 0
            # Bounded by the grace (3 s) plus the child's stop budget (≤ 4 s), not by the turn
            # (1000 deltas 0.2 s apart: 200 s). The bound is far from both: 60 s leaves a
            # loaded 2-core machine 50 s of margin and still fails if the stop waits for the
            # turn.
            assert trio.current_time() - started < 60
            assert not pid_alive(child_pid)
        registry = msgspec.json.decode(
            (codexd.codexd_state / "session-registry.json").read_bytes(), type=SessionRegistry
        )
        (saved,) = registry.sessions
        assert saved.currentTurnId is None
        assert saved.lastTurnId == accepted["turnId"]
        assert saved.lastTurnStatus == "failed"
        assert saved.lastTurnError is not None
        assert saved.lastTurnError.code == "daemon_stopped"
        types = [e.type for e in read_events(codexd.codexd_logs / "events.jsonl")]
        assert types[-1] != "daemon.started"
        assert "daemon.stopping" in types
