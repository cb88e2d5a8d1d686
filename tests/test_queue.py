"""The turn queue (issue 23) against the real binary and the scripted model.

Every prompt picks its own scenario (:class:`~codexd_trio.testing.Prompted`): ``HANG:`` keeps a
turn busy until the test interrupts it or releases it, ``SLOW MS N:`` streams slowly, anything
else is echoed. Orders are checked in the journal (``events.jsonl``), never with clocks: a
queued turn must be dequeued after the turn before it settled, and after the hold was released.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from codexd_trio.base.contracts import Event
from codexd_trio.client import CodexdClient, CodexdError
from codexd_trio.testing import Prompted, ScriptedModel
from codexd_trio.testing.daemon import read_events, running_codexd
from tests.fake_codexd import open_conductor

pytestmark = pytest.mark.real_codex

TOKEN = "queue-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETTLED = ("app-server.turn.completed", "turn.failed")


async def follow(
    client: CodexdClient, session_id: str, done: Callable[[list[Event]], bool]
) -> list[Event]:
    """The session's events from the start of the journal until ``done(events)`` holds."""
    seen: list[Event] = []
    async with client.events(after=0, session_id=session_id) as stream:
        async for event in stream:
            seen.append(event)
            if done(seen):
                return seen
    raise AssertionError(f"the stream ended first: {[e.type for e in seen]}")


def of(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.type == kind]


def settled(events: list[Event], turn_id: str) -> Event | None:
    return next((e for e in events if e.turnId == turn_id and e.type in SETTLED), None)


def all_settled(turns: int) -> Callable[[list[Event]], bool]:
    """Done once ``turns`` queued turns were dequeued and each of them settled."""
    def check(events: list[Event]) -> bool:
        dequeued = of(events, "turn.dequeued")
        return len(dequeued) >= turns and all(settled(events, e.turnId or "") for e in dequeued)
    return check


def prompts(model: ScriptedModel) -> list[str]:
    """The newest user text of every model request, in arrival order."""
    return [texts[-1] for r in model.requests if (texts := r.user_texts())]


def assert_in_order_after_settling(events: list[Event], first_turn: str,
                                   queue_ids: list[str]) -> list[str]:
    """Each queued turn was dequeued in ``queue_ids`` order, after the turn before it settled;
    returns the turn ids."""
    dequeued = of(events, "turn.dequeued")
    assert [e.detail["queueId"] for e in dequeued] == queue_ids
    previous = first_turn
    for event in dequeued:
        before = settled(events, previous)
        assert before is not None, previous
        assert before.seq < event.seq, (previous, event)
        assert event.turnId is not None
        previous = event.turnId
    return [e.turnId or "" for e in dequeued]


async def test_three_queued_turns_run_in_order_each_after_the_previous_one_completed(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.default = Prompted()
    with trio.fail_after(120):
        async with running_codexd(tmp_path / "node", codex_home) as codexd, \
                CodexdClient(codexd.url) as client:
            session = await client.create_session()
            sid = session.sessionId
            first = await client.start_turn(sid, "HANG: busy until interrupted")
            await scripted_model.wait_streaming()
            # The default stays "reject": existing clients see no change.
            with pytest.raises(CodexdError) as busy:
                await client.start_turn(sid, "not queued")
            assert (busy.value.status, busy.value.code) == (409, "turn_in_progress")
            answers = [await client.queue_turn(sid, f"queued {n}") for n in (1, 2, 3)]
            assert [(a["queued"], a["accepted"], a["position"]) for a in answers] == [
                (True, False, 0), (True, False, 1), (True, False, 2)]
            queue_ids = [a["queueId"] for a in answers]
            assert answers[-1]["session"]["queueLength"] == 3
            # In the journal before the 202 (durable first: readable means fsynced).
            journal = [e for e in read_events(codexd.codexd_logs / "events.jsonl")
                       if e.type == "turn.queued"]
            assert [e.detail["queueId"] for e in journal] == queue_ids
            assert [e.queueId for e in (await client.get_queue(sid)).entries] == queue_ids

            await client.interrupt_turn(sid)
            events = await follow(client, sid, all_settled(3))
            turns = assert_in_order_after_settling(events, first["turnId"], queue_ids)
            assert prompts(scripted_model)[-3:] == ["queued 1", "queued 2", "queued 3"]
            done, _ = await client.get_session(sid)
            assert (done.lastTurnId, done.lastTurnOutput) == (turns[-1], "echo: queued 3")
            assert (done.queueLength, done.turnCount) == (0, 4)
            assert (await client.get_queue(sid)).entries == []
            # An idle session with nothing waiting starts a queued post at once.
            now = await client.queue_turn(sid, "straight away")
            assert (now["accepted"], now["queued"]) == (True, False)
            await client.wait_for_turn(sid, now["turnId"])
            scripted_model.release_hangs()


async def test_a_codexd_sigkill_keeps_the_queue_which_then_runs_in_order_once_each(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.default = Prompted()
    work = tmp_path / "node"
    with trio.fail_after(180):
        async with running_codexd(work, codex_home) as codexd, \
                CodexdClient(codexd.url) as client:
            session = await client.create_session()
            sid = session.sessionId
            busy = await client.start_turn(sid, "HANG: busy until codexd dies")
            await scripted_model.wait_streaming()
            queue_ids = [(await client.queue_turn(sid, text))["queueId"]
                         for text in ("after the crash A", "after the crash B")]
            codexd.kill()  # SIGKILL, well inside the registry snapshot's one-second window
            await codexd.process.wait()
        scripted_model.release_hangs()

        async with running_codexd(work, codex_home) as codexd, \
                CodexdClient(codexd.url) as client:
            events = await follow(client, sid, all_settled(2))
            crashed = settled(events, busy["turnId"])
            assert crashed is not None
            assert crashed.type == "turn.failed"
            assert crashed.detail["error"]["code"] == "daemon_restarted"
            assert_in_order_after_settling(events, busy["turnId"], queue_ids)
            done, _ = await client.get_session(sid)
            assert done.queueLength == 0
        every = read_events(work / "logs" / "codexd" / "events.jsonl")
        # Once each: one start mark and one dequeue per entry, one model request per prompt.
        for qid in queue_ids:
            assert [e.type for e in every if e.detail.get("queueId") == qid] == [
                "turn.queued", "turn.queue.starting", "turn.dequeued"]
        asked = prompts(scripted_model)
        assert asked.count("after the crash A") == asked.count("after the crash B") == 1


async def test_a_child_killed_mid_turn_settles_the_turn_and_the_next_entry_starts(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.default = Prompted()
    with trio.fail_after(120):
        async with running_codexd(tmp_path / "node", codex_home) as codexd, \
                CodexdClient(codexd.url) as client:
            session = await client.create_session()
            sid = session.sessionId
            busy = await client.start_turn(sid, "HANG: the child dies under me")
            await scripted_model.wait_streaming()
            queued = await client.queue_turn(sid, "after the child crash")
            child = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
            os.killpg(child, signal.SIGKILL)

            events = await follow(client, sid, all_settled(1))
            crashed = settled(events, busy["turnId"])
            assert crashed is not None
            assert crashed.detail["error"]["code"] == "child_exited"
            [turn] = assert_in_order_after_settling(events, busy["turnId"], [queued["queueId"]])
            done, _ = await client.get_session(sid)
            assert (done.lastTurnId, done.lastTurnOutput) == (turn, "echo: after the child crash")
            scripted_model.release_hangs()


async def test_a_failing_turn_start_stops_the_queue_until_a_person_acts(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.default = Prompted()
    with trio.fail_after(120):
        async with running_codexd(tmp_path / "node", codex_home) as codexd, \
                CodexdClient(codexd.url) as client:
            session = await client.create_session()
            sid = session.sessionId
            busy = await client.start_turn(sid, "HANG: busy while the queue fills")
            await scripted_model.wait_streaming()
            # An input item Codex refuses: turn/start itself fails (JSON-RPC invalid params).
            bad = (await client.queue_turn(sid, [{}]))["queueId"]
            good = (await client.queue_turn(sid, "after the bad one"))["queueId"]
            await client.interrupt_turn(sid)

            events = await follow(client, sid, lambda ev: bool(of(ev, "turn.queue.stopped")))
            [stop] = of(events, "turn.queue.stopped")
            assert (stop.detail["queueId"], stop.detail["code"]) == (bad, "invalid_request")
            interrupted = settled(events, busy["turnId"])
            assert interrupted is not None
            assert interrupted.seq < stop.seq
            view = await client.get_queue(sid)
            assert [e.queueId for e in view.entries] == [bad, good]
            assert view.stopped is not None
            assert view.stopped.queueId == bad
            head = view.entries[0]
            assert (head.state, head.attempts) == ("waiting", 1)
            assert head.lastError is not None
            assert "refused turn/start" in head.lastError.message
            session, _ = await client.get_session(sid)
            assert (session.queueLength, session.currentTurnId) == (2, None)

            # Retry: one more attempt, stopped again; never a loop.
            await client.resume_queue(sid)
            events = await follow(client, sid, lambda ev: len(of(ev, "turn.queue.stopped")) == 2)
            assert len([e for e in of(events, "turn.queue.starting")
                        if e.detail["queueId"] == bad]) == 2
            assert (await client.get_queue(sid)).entries[0].attempts == 2

            # Removing the entry it stopped on is acting on the stop: the queue goes on.
            assert (await client.remove_queued(sid, bad)).queueId == bad
            events = await follow(client, sid, all_settled(1))
            assert [e.detail["queueId"] for e in of(events, "turn.dequeued")] == [good]
            resumed = of(events, "turn.queue.resumed")[-1]
            assert resumed.detail["reason"] == "the entry it stopped on was removed"
            assert of(events, "turn.dequeued")[0].seq > resumed.seq
            scripted_model.release_hangs()


async def test_remove_and_move_before_they_start(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.default = Prompted()
    with trio.fail_after(120):
        async with running_codexd(tmp_path / "node", codex_home) as codexd, \
                CodexdClient(codexd.url) as client, \
                httpx.AsyncClient(base_url=codexd.url) as http:
            session = await client.create_session()
            sid = session.sessionId
            busy = await client.start_turn(sid, "HANG: busy while entries move")
            await scripted_model.wait_streaming()
            a, b, c, d = [(await client.queue_turn(sid, f"entry {x}"))["queueId"] for x in "abcd"]

            assert (await client.remove_queued(sid, b)).queueId == b
            with pytest.raises(CodexdError) as gone:
                await client.remove_queued(sid, b)
            assert (gone.value.status, gone.value.code) == (404, "not_found")
            assert gone.value.details["queueId"] == b
            assert [e.queueId for e in (await client.move_queued(sid, d, 0)).entries] == [d, a, c]
            # Past the end is the end.
            assert [e.queueId for e in (await client.move_queued(sid, d, 99)).entries] == [a, c, d]
            assert [e.queueId for e in (await client.move_queued(sid, c, 0)).entries] == [c, a, d]
            bad = await http.post(f"/v1/codexd/sessions/{sid}/queue/{a}/move",
                                  json={"position": -1})
            assert bad.status_code == 400
            assert bad.json()["error"]["details"]["field"] == "$.position"
            with pytest.raises(CodexdError) as unknown:
                await client.move_queued(sid, "queue-nope", 0)
            assert unknown.value.status == 404
            assert (await client.get_session(sid))[0].queueLength == 3

            await client.interrupt_turn(sid)
            events = await follow(client, sid, all_settled(3))
            turns = assert_in_order_after_settling(events, busy["turnId"], [c, a, d])
            assert prompts(scripted_model)[-3:] == ["entry c", "entry a", "entry d"]
            with pytest.raises(CodexdError) as started:
                await client.remove_queued(sid, c)
            assert (started.value.status, started.value.code) == (409, "queue_entry_started")
            assert started.value.details["turnId"] == turns[0]
            scripted_model.release_hangs()


async def test_a_retried_queued_post_with_the_same_key_gets_the_same_entry(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.default = Prompted()
    with trio.fail_after(120):
        async with running_codexd(tmp_path / "node", codex_home) as codexd, \
                CodexdClient(codexd.url) as client, \
                httpx.AsyncClient(base_url=codexd.url) as http:
            session = await client.create_session()
            sid = session.sessionId
            await client.start_turn(sid, "HANG: busy")
            await scripted_model.wait_streaming()
            body: dict[str, Any] = {"sessionId": sid, "input": "only once", "whenBusy": "queue"}
            key = {"Idempotency-Key": "queue-key-1"}
            first = await http.post("/v1/codexd/turn", json=body, headers=key)
            again = await http.post("/v1/codexd/turn", json=body, headers=key)
            assert first.status_code == again.status_code == 202, first.text
            assert again.headers["idempotency-replayed"] == "true"
            assert again.json()["data"]["queueId"] == first.json()["data"]["queueId"]
            assert len((await client.get_queue(sid)).entries) == 1
            other = await http.post("/v1/codexd/turn", json={**body, "input": "else"},
                                    headers=key)
            assert (other.status_code, other.json()["error"]["code"]) == (
                422, "idempotency_mismatch")
            # A keyed removal retried gets its first answer, not a 404.
            qid = first.json()["data"]["queueId"]
            path, key2 = f"/v1/codexd/sessions/{sid}/queue/{qid}", {"Idempotency-Key": "rm-1"}
            removed = await http.delete(path, headers=key2)
            retried = await http.delete(path, headers=key2)
            assert removed.status_code == retried.status_code == 200
            assert retried.json() == removed.json()
            await client.interrupt_turn(sid)
            scripted_model.release_hangs()


async def test_the_hold_survives_a_codexd_restart_and_closing_a_session_cancels_its_queue(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.default = Prompted()
    work = tmp_path / "node"
    with trio.fail_after(180):
        async with running_codexd(work, codex_home) as codexd, \
                CodexdClient(codexd.url) as client:
            hold = await client.set_hold(True, "maintenance")
            assert (hold.held, hold.reason) == (True, "maintenance")
            keep = (await client.create_session()).sessionId
            gone = (await client.create_session()).sessionId
            # Held: a queued post on an idle session waits.
            waiting = [(await client.queue_turn(keep, t))["queueId"] for t in ("one", "two")]
            cancelled = [(await client.queue_turn(gone, t))["queueId"] for t in ("x", "y")]
            closed = await client.request("POST", f"/v1/codexd/sessions/{gone}/close", json={})
            assert closed.status_code == 200
            view = await client.get_queue(gone)
            assert (view.entries, view.held) == ([], True)
            with pytest.raises(CodexdError) as refused:
                await client.queue_turn(gone, "too late")
            assert refused.value.code == "session_closed"
            assert codexd.process.returncode is None
        async with running_codexd(work, codex_home) as codexd, \
                CodexdClient(codexd.url) as client:
            assert (await client.get_hold()).held is True
            view = await client.get_queue(keep)
            assert ([e.queueId for e in view.entries], view.held) == (waiting, True)
            await client.set_hold(False)
            events = await follow(client, keep, all_settled(2))
            release = [e for e in read_events(codexd.codexd_logs / "events.jsonl")
                       if e.type == "queue.hold.changed"][-1]
            assert release.detail["held"] is False
            dequeued = of(events, "turn.dequeued")
            assert [e.detail["queueId"] for e in dequeued] == waiting
            assert all(e.seq > release.seq for e in dequeued)
            # A turn that started from the queue is recorded as a direct one is: its input on
            # turn.accepted, and the session's first prompt as its default title.
            accepted = of(events, "turn.accepted")
            assert [e.detail["input"][0]["text"] for e in accepted] == ["one", "two"]
            assert (await client.get_session(keep))[0].title == "one"
        every = read_events(work / "logs" / "codexd" / "events.jsonl")
        removed = [e for e in every if e.type == "turn.queue.removed"]
        assert [(e.detail["queueId"], e.detail["reason"]) for e in removed] == [
            (q, "session_closed") for q in cancelled]


async def test_pause_holds_the_queue_across_a_conductor_restart_and_resume_releases_it(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.default = Prompted()
    state = tmp_path / "conductor"
    with trio.fail_after(180):
        async with running_codexd(tmp_path / "node", codex_home) as codexd, \
                CodexdClient(codexd.url) as client:
            sid = (await client.create_session()).sessionId
            async with open_conductor(codexd.url, state, token=TOKEN) as c:
                paused = await c.http.post("/v1/system/pause", headers=AUTH,
                                           json={"reason": "evening"})
                hold = paused.json()["data"]["queue_hold"]
                assert (hold["held"], hold["confirmed"], hold["codexd_held"]) == (
                    True, True, True)
                # A plain turn is refused; a queued one is accepted and waits.
                plain = await c.http.post("/v1/codex/turn", json={"sessionId": sid, "input": "x"})
                assert (plain.status_code, plain.json()["error"]["code"]) == (423,
                                                                              "system_paused")
                queued = []
                for text in ("evening one", "evening two"):
                    answer = await c.http.post("/v1/codex/turn", json={
                        "sessionId": sid, "input": text, "whenBusy": "queue"})
                    assert answer.status_code == 202, answer.text
                    queued.append(answer.json()["data"]["queueId"])
                read = await c.http.get(f"/v1/codex/sessions/{sid}/queue")
                assert read.json()["data"]["queue"]["held"] is True

            # The conductor restarts, still paused: it asserts the hold again; nothing starts.
            async with open_conductor(codexd.url, state, token=TOKEN) as c:
                status = (await c.http.get("/v1/system/state")).json()["data"]
                assert status["mode"] == "paused"
                assert status["queue_hold"]["confirmed"] is True
                view = await client.get_queue(sid)
                assert [e.queueId for e in view.entries] == queued
                assert (await client.get_session(sid))[0].turnCount == 0

                resumed = await c.http.post("/v1/system/resume", headers=AUTH, json={})
                assert resumed.json()["data"]["queue_hold"] == {
                    "held": False, "reason": None, "confirmed": True, "codexd_held": False,
                    "error": None}
                events = await follow(client, sid, all_settled(2))
            journal = read_events(codexd.codexd_logs / "events.jsonl")
            changes = [e for e in journal if e.type == "queue.hold.changed"]
            assert [e.detail["held"] for e in changes] == [True, False]
            dequeued = of(events, "turn.dequeued")
            assert [e.detail["queueId"] for e in dequeued] == queued
            assert all(e.seq > changes[-1].seq for e in dequeued)
            assert prompts(scripted_model)[-2:] == ["evening one", "evening two"]
