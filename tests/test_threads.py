"""Codex's own threads (issue 22 §2) against a real codexd, the real codex binary and the
scripted model: a thread started outside codexd is listed, read and adopted; fork, rollback,
compact, review and the title each go through the real app-server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import msgspec
import pytest
import trio

from codexd_trio.base.transcript import TranscriptTurn
from codexd_trio.client import CodexdClient, CodexdError
from codexd_trio.testing import Plain, Review, ScriptedModel, codex_child_env
from codexd_trio.testing.daemon import read_events, running_codexd
from tests.fake_codexd import open_conductor

pytestmark = pytest.mark.real_codex

GUARD = 150


async def run_turn(client: CodexdClient, session_id: str, text: str) -> str:
    accepted = await client.start_turn(session_id, text)
    await client.wait_for_turn(session_id, accepted["turnId"])
    return str(accepted["turnId"])


def texts(turn: TranscriptTurn) -> list[str | None]:
    return [i.text for i in turn.items if i.type in ("userMessage", "agentMessage")]


async def test_a_thread_from_codex_exec_is_listed_read_and_adopted(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path, codex_binary: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    scripted_model.script(Plain("exec says PAPAYA"))
    # Outside codexd, on the same Codex home: what a person does in a terminal.
    with trio.fail_after(GUARD):
        ran = await trio.run_process(
            [str(codex_binary), "exec", "--skip-git-repo-check", "-C", str(work),
             "remember the word PAPAYA"],
            env=codex_child_env(codex_home, codex_binary), stdin=subprocess.DEVNULL,
            capture_stdout=True, capture_stderr=True, check=False)
    assert ran.returncode == 0, ran.stderr.decode()[-2000:]
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            listed = await client.list_threads()
            (found,) = [t for t in listed.threads if t.source == "exec"]
            read = await client.read_thread(found.threadId)
            by_cwd = await client.list_threads(cwd=str(work))
            elsewhere = await client.list_threads(cwd=str(tmp_path))
            with pytest.raises(CodexdError) as unknown:
                await client.read_thread("01a24edb-35f0-7041-835d-ed59a48a1da0")
            session = await client.adopt_thread(found.threadId)
            transcript = await client.transcript(session.sessionId)
            with pytest.raises(CodexdError) as twice:
                await client.adopt_thread(found.threadId)
            held = await client.list_threads()
            scripted_model.script(Plain("it was PAPAYA"))
            later = await run_turn(client, session.sessionId, "which word?")
            history = scripted_model.requests[-1].user_texts()
            after = await client.transcript(session.sessionId)
        events = read_events(codexd.codexd_logs / "events.jsonl")
    assert found.sessionId is None
    assert found.preview == "remember the word PAPAYA"
    assert found.cwd == str(work)
    assert [t.threadId for t in by_cwd.threads] == [found.threadId]
    assert found.threadId not in [t.threadId for t in elsewhere.threads]
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    assert read.thread.threadId == found.threadId
    (exec_turn,) = read.turns
    assert texts(exec_turn) == ["remember the word PAPAYA", "exec says PAPAYA"]
    assert session.threadId == found.threadId
    assert session.title == "remember the word PAPAYA"
    assert session.turnCount == 1
    assert session.lastTurnOutput == "exec says PAPAYA"
    (imported,) = transcript.turns
    assert imported.origin == "imported"
    assert imported.status == "completed"
    assert imported.turnId == exec_turn.turnId
    assert texts(imported) == ["remember the word PAPAYA", "exec says PAPAYA"]
    assert imported.input == [{"type": "text", "text": "remember the word PAPAYA",
                               "text_elements": []}]
    assert (twice.value.status, twice.value.code) == (409, "thread_in_use")
    assert twice.value.details["sessionId"] == session.sessionId
    assert [t.sessionId for t in held.threads if t.threadId == found.threadId] == [
        session.sessionId]
    # The resumed thread carries its history to the model.
    assert "remember the word PAPAYA" in history
    assert [t.turnId for t in after.turns] == [exec_turn.turnId, later]
    assert [e.type for e in events if e.sessionId == session.sessionId][:2] == [
        "session.created", "turn.imported"]


async def test_fork_copies_the_history_into_a_new_session(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            parent = await client.create_session(title="the parent")
            for n in (1, 2):
                scripted_model.script(Plain(f"answer {n}"))
                await run_turn(client, parent.sessionId, f"question {n}")
            fork = await client.fork_session(parent.sessionId, idempotency_key="fork-1")
            again = await client.fork_session(parent.sessionId, idempotency_key="fork-1")
            forked = await client.transcript(fork.sessionId)
            scripted_model.script(Plain("only in the fork"))
            await run_turn(client, fork.sessionId, "question 3")
            history = scripted_model.requests[-1].user_texts()
            parent_after = await client.transcript(parent.sessionId)
            fork_after = await client.transcript(fork.sessionId)
    assert again == fork  # the same key: the same answer, no second fork
    assert fork.sessionId != parent.sessionId
    assert fork.threadId != parent.threadId
    assert fork.forkedFrom == parent.threadId
    assert fork.title == "the parent (fork)"
    assert [texts(t) for t in forked.turns] == [["question 1", "answer 1"],
                                                ["question 2", "answer 2"]]
    assert {t.origin for t in forked.turns} == {"imported"}
    assert {"question 1", "question 2"} <= set(history)
    assert len(parent_after.turns) == 2
    assert [texts(t) for t in fork_after.turns][-1] == ["question 3", "only in the fork"]


async def test_rollback_takes_the_last_turns_out_of_the_history(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid = (await client.create_session()).sessionId
            ids = []
            for word in ("APPLE", "BANANA", "CHERRY"):
                scripted_model.script(Plain(f"noted {word}"))
                ids.append(await run_turn(client, sid, f"remember {word}"))
            rolled = await client.rollback_session(sid, 2)
            transcript = await client.transcript(sid)
            with pytest.raises(CodexdError) as too_many:
                await client.rollback_session(sid, 5)
            scripted_model.script(Plain("only APPLE"))
            await run_turn(client, sid, "what do you remember?")
            history = scripted_model.requests[-1].user_texts()
        # The records outlive the restart: the rollback is a record too.
        async with (
            running_codexd(tmp_path / "node", codex_home) as again,
            CodexdClient(again.url) as client,
        ):
            restarted = await client.transcript(sid)
    assert rolled.removedTurnIds == ids[1:]
    assert rolled.session.sessionId == sid
    assert [t.turnId for t in transcript.turns] == ids[:1]
    assert (too_many.value.status, too_many.value.code) == (400, "invalid_request")
    assert "remember APPLE" in history
    assert "remember BANANA" not in history
    assert "remember CHERRY" not in history
    assert [texts(t) for t in restarted.turns] == [
        ["remember APPLE", "noted APPLE"], ["what do you remember?", "only APPLE"]]


async def test_compact_runs_as_a_turn_with_the_models_summary(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid = (await client.create_session()).sessionId
            scripted_model.script(Plain("noted"))
            await run_turn(client, sid, "remember KIWI")
            accepted = await client.compact_session(sid)
            done = await client.wait_for_turn(sid, accepted["turnId"])
            transcript = await client.transcript(sid)
    assert accepted["accepted"] is True
    assert done.lastTurnId == accepted["turnId"]
    assert done.lastTurnStatus == "completed"
    compaction = transcript.turns[-1]
    assert compaction.turnId == accepted["turnId"]
    assert compaction.origin == "compaction"
    assert compaction.status == "completed"
    assert [i.type for i in compaction.items] == ["contextCompaction"]
    assert sum(r.is_compaction for r in scripted_model.requests) == 1


async def test_review_lands_in_the_transcript(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.review = Review(title="[P1] Check the thing", body="It looks off.",
                                   explanation="Mostly fine.")
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid = (await client.create_session()).sessionId
            accepted = await client.review_session(sid)
            await client.wait_for_turn(sid, accepted["turnId"])
            with pytest.raises(CodexdError) as both:
                await client.review_session(sid, base_branch="main", commit="abc")
            transcript = await client.transcript(sid)
    (review,) = transcript.turns
    assert review.turnId == accepted["turnId"]
    assert review.origin == "review"
    assert review.status == "completed"
    kinds = [i.type for i in review.items]
    assert "enteredReviewMode" in kinds
    assert "exitedReviewMode" in kinds
    (exited,) = [i for i in review.items if i.type == "exitedReviewMode"]
    assert exited.data is not None
    assert "[P1] Check the thing" in exited.data["review"]
    assert "Mostly fine." in exited.data["review"]
    assert (both.value.status, both.value.code) == (400, "invalid_request")


async def test_the_title_defaults_to_the_first_prompt_and_is_set_on_the_thread(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    long_prompt = "please " + "write a very long prompt " * 10
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid = (await client.create_session()).sessionId
            await run_turn(client, sid, long_prompt)
            default, _ = await client.get_session(sid)
            titled = await client.set_title(sid, "My project")
            listed = await client.list_threads(search="My project")
        async with (
            running_codexd(tmp_path / "node", codex_home) as again,
            CodexdClient(again.url) as client,
        ):
            restarted, _ = await client.get_session(sid)
    assert default.title is not None
    assert default.title.startswith("please write a very long prompt")
    assert len(default.title) <= 80
    assert default.title.endswith("…")
    assert titled.title == "My project"
    assert [t.name for t in listed.threads] == ["My project"]
    assert restarted.title == "My project"


async def test_the_conductor_relays_the_conversation(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
            open_conductor(codexd.url, tmp_path / "conductor") as conductor,
        ):
            sid = (await client.create_session()).sessionId
            scripted_model.script(Plain("relayed answer"))
            await run_turn(client, sid, "through the conductor")
            http = conductor.http
            direct = await client.transcript(sid, order="desc", limit=1)
            relayed = (await http.get(f"/v1/codex/sessions/{sid}/transcript",
                                      params={"order": "desc", "limit": "1"})).json()
            item_id = direct.turns[0].items[-1].id
            item = (await http.get(
                f"/v1/codex/sessions/{sid}/transcript/items/{item_id}")).json()
            threads = (await http.get("/v1/codex/threads")).json()
            thread_id = (await client.get_session(sid))[0].threadId
            thread = (await http.get(f"/v1/codex/threads/{thread_id}")).json()
            titled = (await http.post(f"/v1/codex/sessions/{sid}/title",
                                      json={"title": "relayed"})).json()
            await http.post("/v1/system/pause", json={})
            paused = await http.post(f"/v1/codex/sessions/{sid}/compact", json={})
            await http.post("/v1/system/resume", json={})
            forked = await http.post(f"/v1/codex/sessions/{sid}/fork", json={})
            bad = await http.get(f"/v1/codex/sessions/{sid}/transcript",
                                 params={"order": "up"})
    assert relayed["data"] == msgspec.to_builtins(direct)
    assert item["data"]["item"]["text"] == "relayed answer"
    assert [t["sessionId"] for t in threads["data"]["threads"]] == [sid]
    assert [len(t["items"]) for t in thread["data"]["turns"]] == [2]
    assert titled["data"]["session"]["title"] == "relayed"
    assert (paused.status_code, paused.json()["error"]["code"]) == (423, "system_paused")
    assert forked.status_code == 201
    assert forked.json()["data"]["session"]["forkedFrom"] is not None
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")
