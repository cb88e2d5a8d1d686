"""Recovery and control (issue 6): a real codexd, the real codex binary, the scripted model.

Child crash and restart, codexd SIGKILL and restart, steer, interrupt, approvals, idempotency.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
import trio

from codexd_trio.base.contracts import Approval
from codexd_trio.client import CodexdClient, CodexdError
from codexd_trio.core.supervisor import Backoff
from codexd_trio.testing import ExecCommand, Hang, Plain, ScriptedModel, Streamed
from codexd_trio.testing.daemon import group_alive, read_events, running_codexd, wait_pid_gone


async def wait_ready(client: CodexdClient, *, after_pid: int | None = None) -> int:
    """Follow the event stream until the child is running again; return its pid."""
    async with client.events(after=None) as stream:
        status = await client.status()
        child = status["snapshot"]["daemon"]["child"]
        if child["status"] == "running" and child["pid"] != after_pid:
            return int(child["pid"])
        async for event in stream:
            if event.type == "child.started":
                return int(event.detail["pid"])
    raise AssertionError("event stream ended before the child restarted")


def test_backoff_restarts_at_once_then_doubles_with_jitter_caps_and_resets() -> None:
    backoff = Backoff(0.5, 30.0)
    delays = [backoff.next_delay() for _ in range(10)]
    # The first failure restarts at once; the backoff starts at the second in a row.
    assert delays[0] == 0.0
    for n, delay in enumerate(delays[1:]):
        nominal = 0.5 * 2**n
        assert min(30.0, nominal * 0.8) <= delay <= min(30.0, nominal * 1.2)
    assert max(delays) <= 30.0
    backoff.reset()
    assert backoff.next_delay() == 0.0


@pytest.mark.real_codex
async def test_child_killed_mid_turn_fails_the_turn_then_restarts_and_resumes(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            scripted_model.script(Plain("first answer"))
            first = await client.start_turn(session.sessionId, "remember KIWI")
            await client.wait_for_turn(session.sessionId, first["turnId"])

            scripted_model.script(Hang())
            accepted = await client.start_turn(session.sessionId, "this one hangs")
            await scripted_model.wait_streaming()
            old_pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
            os.killpg(old_pid, signal.SIGKILL)

            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert done.lastTurnStatus == "failed"
            assert done.lastTurnError is not None
            assert done.lastTurnError.code == "child_exited"
            new_pid = await wait_ready(client, after_pid=old_pid)
            assert new_pid != old_pid
            assert not group_alive(old_pid)
            await client.readyz()
            _, recent = await client.get_session(session.sessionId)
            missing = [e for e in recent if e.type == "app-server.turn.completed.missing"]
            assert missing
            assert missing[0].level == "error"
            assert missing[0].turnId == accepted["turnId"]

            scripted_model.release_hangs()
            scripted_model.script(Plain("back again"))
            again = await client.start_turn(session.sessionId, "still there?")
            done = await client.wait_for_turn(session.sessionId, again["turnId"])
            assert done.lastTurnOutput == "back again"
            assert "remember KIWI" in scripted_model.requests[-1].user_texts()
            status = await client.status()
            assert status["snapshot"]["daemon"]["child"]["restarts"] == 1
        types = [e.type for e in read_events(codexd.codexd_logs / "events.jsonl")]
        for needed in ("child.exited", "child.restarting", "session.resumed"):
            assert needed in types


@pytest.mark.real_codex
async def test_crash_loop_reaches_failed_and_readyz_says_why(
    tmp_path: Path, codex_home: Path
) -> None:
    # A "child" that exits at once: every start fails during initialize.
    with trio.fail_after(60):
        async with (
            running_codexd(
                tmp_path / "node",
                codex_home,
                "--server-command",
                "false",
                "--restart-backoff",
                "0.01",
                "--restart-backoff-max",
                "0.05",
            ) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            async with client.events(after=0) as stream:
                async for event in stream:
                    if event.type == "child.restarting" and event.level == "error":
                        break
            with pytest.raises(CodexdError) as refused:
                await client.readyz()
            assert refused.value.status == 503
            assert refused.value.code == "child_unavailable"
            assert "failed" in refused.value.message
            first = (await client.status())["snapshot"]["daemon"]["child"]
            assert first["status"] == "failed"
            # Retries continue (slowly) rather than giving up.
            async with client.events(after=None) as stream:
                async for event in stream:
                    if event.type == "child.restarting":
                        break
            assert (await client.status())["snapshot"]["daemon"]["child"]["restarts"] > first[
                "restarts"
            ]
            with pytest.raises(CodexdError) as no_child:
                await client.create_session()
            assert no_child.value.code == "child_unavailable"
            await client.healthz()  # the daemon itself is fine


@pytest.mark.real_codex
async def test_codexd_sigkilled_mid_turn_recovers_on_restart(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir = tmp_path / "node"
    with trio.fail_after(150):
        async with (
            running_codexd(workdir, codex_home) as first,
            CodexdClient(first.url) as client,
        ):
            identity = (await client.status())["snapshot"]["identity"]
            session = await client.create_session()
            scripted_model.script(Plain("noted MANGO"))
            done = await client.start_turn(session.sessionId, "remember MANGO")
            await client.wait_for_turn(session.sessionId, done["turnId"])
            scripted_model.script(Hang())
            hanging = await client.start_turn(session.sessionId, "hang here")
            await scripted_model.wait_streaming()
            child_pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
            first.kill()  # SIGKILL codexd's whole process group (not the child's)
            assert await first.process.wait() == -signal.SIGKILL
            # The child sits in its own group; with its parent gone its stdin closes and it exits.
            with trio.fail_after(20):
                await wait_pid_gone(child_pid)
        last_seq = read_events(first.codexd_logs / "events.jsonl")[-1].seq
        scripted_model.release_hangs()

        async with (
            running_codexd(workdir, codex_home) as second,
            CodexdClient(second.url) as client,
        ):
            status = await client.status()
            assert status["snapshot"]["identity"] == identity
            settled, _ = await client.get_session(session.sessionId)
            assert settled.currentTurnId is None
            assert settled.lastTurnId == hanging["turnId"]
            assert settled.lastTurnStatus == "failed"
            assert settled.lastTurnError is not None
            assert settled.lastTurnError.code == "daemon_restarted"
            scripted_model.script(Plain("it was MANGO"))
            again = await client.start_turn(session.sessionId, "which fruit?")
            done_again = await client.wait_for_turn(session.sessionId, again["turnId"])
            assert done_again.lastTurnOutput == "it was MANGO"
            assert "remember MANGO" in scripted_model.requests[-1].user_texts()
        events = read_events(second.codexd_logs / "events.jsonl")
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(seqs) + 1))
        restarted = [e for e in events if e.type == "daemon.started"]
        assert restarted[-1].seq > last_seq


@pytest.mark.real_codex
async def test_steer_reaches_the_model_and_mismatches_are_refused(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            with pytest.raises(CodexdError) as idle:
                await client.steer_turn(session.sessionId, "nothing to steer")
            assert idle.value.code == "no_active_turn"

            scripted_model.script(Streamed(["slowly "] * 100, delay=0.2), Plain("steered answer"))
            accepted = await client.start_turn(session.sessionId, "write a long story")
            await scripted_model.wait_streaming()
            with pytest.raises(CodexdError) as wrong:
                await client.steer_turn(
                    session.sessionId, "wrong turn", expected_turn_id="turn-that-is-not-running"
                )
            assert wrong.value.status == 409
            assert wrong.value.code == "turn_mismatch"
            steered = await client.steer_turn(session.sessionId, "make it short instead")
            assert steered["turnId"] == accepted["turnId"]
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert done.lastTurnStatus == "completed"
            assert done.lastTurnOutput == "steered answer"
            texts = scripted_model.requests[-1].user_texts()
            assert texts[-2:] == ["write a long story", "make it short instead"]
            _, recent = await client.get_session(session.sessionId)
            assert "turn.steered" in [e.type for e in recent]


@pytest.mark.real_codex
async def test_interrupt_a_hanging_stream(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session()
            scripted_model.script(Hang())
            accepted = await client.start_turn(session.sessionId, "hang")
            await scripted_model.wait_streaming()
            interrupted = await client.interrupt_turn(session.sessionId, turn_id=accepted["turnId"])
            assert interrupted["turnId"] == accepted["turnId"]
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
            assert done.lastTurnStatus == "interrupted"
            assert done.lastTurnError is None


async def _approval_session(client: CodexdClient, workdir: Path, approvals: str | None) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    session = await client.create_session(
        cwd=str(workdir),
        approval_policy="untrusted",
        sandbox="workspace-write",
        approvals=approvals,
    )
    return session.sessionId


@pytest.mark.real_codex
async def test_approvals_accept_decline_and_exactly_one_decision_wins(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir = codex_home / "work"
    with trio.fail_after(150):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session_id = await _approval_session(client, workdir, "clients")

            # accept: the command runs and the file appears
            scripted_model.script(ExecCommand("touch accepted.txt", then=Plain("made it")))
            accepted = await client.start_turn(session_id, "make a file")
            approval = await _next_pending(client, session_id)
            assert approval.kind == "commandExecution"
            assert approval.turnId == accepted["turnId"]
            assert "accepted.txt" in json.dumps(approval.params)
            decided = await client.decide_approval(approval.approvalId, "accept")
            assert decided.state == "resolved"
            assert decided.decision == "accept"
            with pytest.raises(CodexdError) as twice:
                await client.decide_approval(approval.approvalId, "decline")
            assert twice.value.status == 409
            assert twice.value.code == "approval_resolved"
            done = await client.wait_for_turn(session_id, accepted["turnId"])
            assert done.lastTurnOutput == "made it"
            assert (workdir / "accepted.txt").exists()

            # decline: the command does not run, the model is told, the turn completes
            scripted_model.script(ExecCommand("touch declined.txt", then=Plain("ok, not made")))
            declined_turn = await client.start_turn(session_id, "make another")
            approval = await _next_pending(client, session_id)
            await client.decide_approval(approval.approvalId, "decline")
            done = await client.wait_for_turn(session_id, declined_turn["turnId"])
            assert done.lastTurnStatus == "completed"
            assert not (workdir / "declined.txt").exists()
            outputs = scripted_model.requests[-1].function_call_outputs()
            assert "rejected" in json.dumps(outputs)

            resolved = await client.list_approvals(state="resolved")
            assert {a.decision for a in resolved} == {"accept", "decline"}
            assert await client.list_approvals(state="pending") == []


@pytest.mark.real_codex
async def test_default_policy_declines_and_pending_approvals_expire_with_the_child(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir = codex_home / "work2"
    with trio.fail_after(150):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            auto = await _approval_session(client, workdir, None)
            scripted_model.script(ExecCommand("touch auto.txt", then=Plain("declined for me")))
            turn = await client.start_turn(auto, "try it")
            done = await client.wait_for_turn(auto, turn["turnId"])
            assert done.lastTurnOutput == "declined for me"
            assert not (workdir / "auto.txt").exists()
            (record,) = await client.list_approvals()
            assert record.decision == "decline"
            assert record.decidedBy == "policy"

            waiting = await _approval_session(client, workdir, "clients")
            scripted_model.script(ExecCommand("touch never.txt", then=Plain("unused")))
            turn = await client.start_turn(waiting, "wait for me")
            pending = await _next_pending(client, waiting)
            child_pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
            os.killpg(child_pid, signal.SIGKILL)
            done = await client.wait_for_turn(waiting, turn["turnId"])
            assert done.lastTurnError is not None
            assert done.lastTurnError.code == "child_exited"
            expired = await client.get_approval(pending.approvalId)
            assert expired.state == "expired"
            with pytest.raises(CodexdError) as late:
                await client.decide_approval(pending.approvalId, "accept")
            assert late.value.code == "approval_resolved"

            # The next child (a new incarnation) asks afresh: nothing of the dead one is used
            # (not its loaded threads, not its request ids, not its pending approval).
            async with client.events(after=0) as stream:
                started = 0
                async for event in stream:
                    started += event.type == "child.started"
                    if started == 2:
                        break
            scripted_model.script(ExecCommand("touch again.txt", then=Plain("asked again")))
            again = await client.start_turn(waiting, "once more")
            fresh = await _next_pending(client, waiting)
            assert fresh.approvalId != pending.approvalId
            await client.decide_approval(fresh.approvalId, "decline")
            done = await client.wait_for_turn(waiting, again["turnId"])
            assert done.lastTurnOutput == "asked again"
            assert (await client.get_approval(pending.approvalId)).state == "expired"


async def _next_pending(client: CodexdClient, session_id: str) -> Approval:
    """The session's next pending approval, seen on the event stream (no polling)."""
    async with client.events(after=0, session_id=session_id) as stream:
        async for event in stream:
            if event.type == "approval.requested":
                approval = await client.get_approval(event.detail["approval"]["approvalId"])
                if approval.state == "pending":
                    return approval
    raise AssertionError("stream ended without a pending approval")


@pytest.mark.real_codex
async def test_idempotency_key_replays_refuses_mismatch_and_survives_restart(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir = tmp_path / "node"
    headers = {"Idempotency-Key": "create-once-1"}
    with trio.fail_after(120):
        async with (
            running_codexd(workdir, codex_home) as first,
            httpx.AsyncClient(base_url=first.url, timeout=30) as http,
        ):
            one = await http.post(
                "/v1/codexd/sessions", json={"purpose": "worker"}, headers=headers
            )
            two = await http.post(
                "/v1/codexd/sessions", json={"purpose": "worker"}, headers=headers
            )
            assert one.status_code == two.status_code == 201
            assert one.json() == two.json()
            assert two.headers["Idempotency-Replayed"] == "true"
            other = await http.post(
                "/v1/codexd/sessions", json={"purpose": "smoke"}, headers=headers
            )
            assert other.status_code == 422
            assert other.json()["error"]["code"] == "idempotency_mismatch"
            sessions = (await http.get("/v1/codexd/sessions")).json()["data"]["sessions"]
            assert len(sessions) == 1
            session_id = one.json()["data"]["session"]["sessionId"]

            scripted_model.script(Plain("once"))
            turn_headers = {"Idempotency-Key": "turn-once-1"}
            body = {"sessionId": session_id, "input": "only once please"}
            t1 = await http.post("/v1/codexd/turn", json=body, headers=turn_headers)
            t2 = await http.post("/v1/codexd/turn", json=body, headers=turn_headers)
            assert t1.status_code == t2.status_code == 202
            assert t1.json()["data"]["turnId"] == t2.json()["data"]["turnId"]
            async with CodexdClient(first.url) as client:
                done = await client.wait_for_turn(session_id, t1.json()["data"]["turnId"])
            assert done.turnCount == 1
            assert len(scripted_model.requests) == 1

        async with (
            running_codexd(workdir, codex_home) as second,
            httpx.AsyncClient(base_url=second.url, timeout=30) as http,
        ):
            three = await http.post(
                "/v1/codexd/sessions", json={"purpose": "worker"}, headers=headers
            )
            assert three.json() == one.json()
            assert len((await http.get("/v1/codexd/sessions")).json()["data"]["sessions"]) == 1


def _refuse_writes(pid: int) -> tuple[int, int]:
    """Make every write that would grow a file fail in ``pid`` (``EFBIG``: a full disk as far
    as the event log can tell; Python ignores ``SIGXFSZ``); returns the limits to restore."""
    import resource

    saved = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, saved[1]))
    return saved


@pytest.mark.real_codex
@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="prlimit(2) of another process: Linux")
async def test_a_disk_that_refuses_writes_delays_or_refuses_the_answer_never_500(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    """Found by the chaos harness (bench/chaos): on a full disk a POST that had already changed
    the sessions answered 500 internal_error, and the session or turn existed anyway."""
    import resource

    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home, "--request-timeout", "3") as codexd,
            CodexdClient(codexd.url) as client,
        ):
            await wait_ready(client)
            session = await client.create_session()
            saved = _refuse_writes(codexd.pid)
            # Healed while the answer waits: the writer's retry lands and the answer is a 201.
            async with trio.open_nursery() as nursery:
                async def heal_soon() -> None:
                    await wait_events_waiting(client)
                    resource.prlimit(codexd.pid, resource.RLIMIT_FSIZE, saved)

                nursery.start_soon(heal_soon)
                created = await client.create_session()
            assert (await client.get_session(created.sessionId))[0].status == "active"
            # Not healed within the bound: 503 store_unavailable, never a 500.
            _refuse_writes(codexd.pid)
            with pytest.raises(CodexdError) as refused:
                await client.start_turn(session.sessionId, "the disk is full")
            assert (refused.value.status, refused.value.code) == (503, "store_unavailable")
            resource.prlimit(codexd.pid, resource.RLIMIT_FSIZE, saved)
            # Once the disk has room the turn that was started becomes durable and ends.
            done = await client.wait_for_turn(session.sessionId,
                                              (await client.get_session(session.sessionId))[0]
                                              .lastTurnId or "")
            assert done.lastTurnStatus == "completed"
            lines = read_events(codexd.codexd_logs / "events.jsonl")
            assert [e.seq for e in lines] == list(range(1, len(lines) + 1))


async def wait_events_waiting(client: CodexdClient) -> None:
    """Until ``/readyz`` says events wait for a disk that refuses them (another process:
    asking is the only way to know)."""
    while True:
        try:
            await client.readyz()
        except CodexdError as exc:
            if exc.code == "store_unavailable":
                return
        await trio.sleep(0.05)
