"""Transcripts (issue 22 §1) against a real codexd, the real codex binary and the scripted model:
what a turn did reads back whole, in order, paged both ways, while it runs and after every way
codexd, its child or the event log's retention can lose things."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from codexd_trio.base.transcript import TranscriptItem, TranscriptTurn
from codexd_trio.client import CodexdClient, CodexdError
from codexd_trio.testing import (
    ApplyPatch,
    ExecCommand,
    Hang,
    Plain,
    ScriptedModel,
    Streamed,
)
from codexd_trio.testing.daemon import running_codexd, wait_pid_gone

pytestmark = pytest.mark.real_codex

GUARD = 150


def items_of(turn: TranscriptTurn, kind: str) -> list[TranscriptItem]:
    return [i for i in turn.items if i.type == kind]


async def run_turn(client: CodexdClient, session_id: str, text: str) -> str:
    accepted = await client.start_turn(session_id, text)
    await client.wait_for_turn(session_id, accepted["turnId"])
    return str(accepted["turnId"])


async def writable_session(client: CodexdClient, codex_home: Path, tmp_path: Path,
                           model: ScriptedModel) -> tuple[str, Path]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "existing.txt").write_text("one\ntwo\nthree\n")
    session = await client.create_session(cwd=str(work), sandbox="workspace-write",
                                          approval_policy="never")
    return session.sessionId, work


async def test_a_command_and_file_changes_read_back_with_output_and_unified_diffs(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    update = "*** Update File: existing.txt\n@@\n one\n-two\n+TWO\n three"
    scripted_model.script(ExecCommand("echo hi; echo there", then=ApplyPatch(
        "*** Add File: hello.txt\n+hello\n+world",
        then=ApplyPatch(update, then=Plain("all done")))))
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid, work = await writable_session(client, codex_home, tmp_path, scripted_model)
            turn_id = await run_turn(client, sid, "run a command and edit two files")
            page = await client.transcript(sid)
    assert (work / "hello.txt").read_text() == "hello\nworld\n"
    assert (work / "existing.txt").read_text() == "one\nTWO\nthree\n"
    (turn,) = page.turns
    assert turn.turnId == turn_id
    assert turn.status == "completed"
    assert turn.origin == "turn"
    assert turn.error is None
    assert turn.startedAt is not None
    assert turn.completedAt is not None
    assert turn.input == [{"type": "text", "text": "run a command and edit two files",
                           "text_elements": []}]
    assert turn.tokenUsage is not None
    assert "total" in turn.tokenUsage
    assert [i.type for i in turn.items] == [
        "userMessage", "commandExecution", "fileChange", "fileChange", "agentMessage"]
    assert turn.items[0].text == "run a command and edit two files"
    (command,) = items_of(turn, "commandExecution")
    assert command.command is not None
    assert "echo hi; echo there" in command.command
    assert command.status == "completed"
    assert command.exitCode == 0
    assert command.output is not None
    assert "hi\nthere\n" in command.output
    assert command.truncated is False
    assert command.outputBytes == len(command.output.encode())
    assert command.cwd == str(work)
    added, updated = items_of(turn, "fileChange")
    assert added.status == "completed"
    (change,) = added.changes or []
    assert change.kind == "add"
    assert change.path == str(work / "hello.txt")
    # Codex sends an added file's content; the transcript always has a unified diff.
    name = str(work / "hello.txt").lstrip("/")
    assert change.diff == f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1,2 @@\n+hello\n+world\n"
    (change,) = updated.changes or []
    assert change.kind == "update"
    name = str(work / "existing.txt").lstrip("/")
    assert change.diff == (f"--- a/{name}\n+++ b/{name}\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n"
                           " three\n")
    assert change.diffBytes == len(change.diff.encode())
    assert items_of(turn, "agentMessage")[0].text == "all done"
    assert page.nextCursor is None
    assert page.lastSeq > 0


async def test_turns_in_order_paged_both_ways_and_bad_queries_refused(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid = (await client.create_session()).sessionId
            ids = []
            for n in range(1, 6):
                scripted_model.script(Plain(f"answer {n}"))
                ids.append(await run_turn(client, sid, f"question {n}"))
            whole = await client.transcript(sid)
            asc: list[TranscriptTurn] = []
            cursor = None
            pages = 0
            while True:
                page = await client.transcript(sid, limit=2, cursor=cursor)
                asc += page.turns
                pages += 1
                cursor = page.nextCursor
                if cursor is None:
                    break
            desc: list[TranscriptTurn] = []
            cursor = None
            while True:
                page = await client.transcript(sid, limit=2, cursor=cursor, order="desc")
                desc += page.turns
                cursor = page.nextCursor
                if cursor is None:
                    break
            last_two = await client.transcript(sid, limit=2, order="desc")
            errors = {}
            for query in ({"limit": "0"}, {"limit": "x"}, {"limit": "1001"},
                          {"order": "sideways"}, {"cursor": "not-a-cursor"},
                          {"cursor": last_two.nextCursor or ""}):
                response = await client.request("GET", f"/v1/codexd/sessions/{sid}/transcript",
                                                params=query)
                errors[str(query)] = (response.status_code,
                                      response.json()["error"]["code"])
            with pytest.raises(CodexdError) as missing:
                await client.transcript("session-nope")
            with pytest.raises(CodexdError) as no_item:
                await client.transcript_item(sid, "item-nope")
            session, _ = await client.get_session(sid)
    texts = [[i.text for i in t.items] for t in whole.turns]
    assert texts == [[f"question {n}", f"answer {n}"] for n in range(1, 6)]
    assert [t.turnId for t in whole.turns] == ids
    assert [t.turnId for t in asc] == ids
    assert pages == 3
    assert [t.turnId for t in desc] == ids[::-1]
    assert [t.turnId for t in last_two.turns] == ids[::-1][:2]
    # A desc cursor is refused in asc order (the default): a cursor belongs to its order.
    assert set(errors.values()) == {(400, "invalid_request")}
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert (no_item.value.status, no_item.value.code) == (404, "not_found")
    assert session.title == "question 1"


async def test_a_running_turn_then_the_stream_from_last_seq_miss_nothing_and_double_nothing(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    # The answer holds after its first piece until released: the turn is surely running.
    scripted_model.script(ExecCommand("echo first", then=Streamed(
        ["slow ", "answer ", "in ", "pieces"], hold_after=1)))
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid = (await client.create_session()).sessionId
            async with client.events(after=0, session_id=sid) as early:
                accepted = await client.start_turn(sid, "run then talk")
                async for event in early:  # the command's item is published (and folded)
                    if (event.type == "app-server.item.completed"
                            and event.detail["item"]["type"] == "commandExecution"):
                        break
            await scripted_model.wait_held()
            during = await client.transcript(sid)
            desc = await client.transcript(sid, order="desc", limit=1)
            seen: list[int] = []
            streamed: list[str] = []
            async with client.events(after=during.lastSeq, session_id=sid) as stream:
                scripted_model.release_hangs()
                async for event in stream:
                    seen.append(event.seq)
                    if event.type == "app-server.item.completed":
                        streamed.append(event.detail["item"]["id"])
                    if event.type == "app-server.turn.completed":
                        break
            after = await client.transcript(sid)
    (running,) = during.turns
    assert running.turnId == accepted["turnId"]
    assert running.status == "inProgress"
    assert running.completedAt is None
    assert [i.type for i in running.items] == ["userMessage", "commandExecution"]
    assert desc.turns == during.turns
    assert desc.nextCursor is None
    # The stream picks up exactly after the transcript: nothing at or before lastSeq.
    assert seen[0] == during.lastSeq + 1
    assert seen == sorted(seen)
    (final,) = after.turns
    assert final.status == "completed"
    assert not {i.id for i in running.items} & set(streamed)  # nothing twice
    assert [i.id for i in final.items] == [i.id for i in running.items] + streamed
    assert final.items[-1].text == "slow answer in pieces"


async def test_outputs_and_diffs_are_capped_and_the_item_route_has_them_whole(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    big = "\n".join("+" + "y" * 99 for _ in range(1000))  # a 100 000-byte file
    scripted_model.script(ExecCommand("seq 1 40000", then=ApplyPatch(
        "*** Add File: big.txt\n" + big, then=Plain("big things"))))
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid, _ = await writable_session(client, codex_home, tmp_path, scripted_model)
            await run_turn(client, sid, "make big things")
            (turn,) = (await client.transcript(sid)).turns
            (command,) = items_of(turn, "commandExecution")
            (patch,) = items_of(turn, "fileChange")
            whole_command = await client.transcript_item(sid, command.id)
            whole_patch = await client.transcript_item(sid, patch.id)
            message = await client.transcript_item(sid, items_of(turn, "agentMessage")[0].id)
    cap = 64 * 1024
    assert command.truncated is True
    assert command.output is not None
    assert len(command.output.encode()) < cap + 100
    assert "bytes omitted" in command.output
    assert command.output.rstrip().endswith("40000")
    assert command.outputBytes is not None
    assert command.outputBytes > 200_000
    assert whole_command.turnId == turn.turnId
    full = whole_command.item.output or ""
    assert len(full.encode()) == command.outputBytes
    assert whole_command.item.truncated is False
    assert full.rstrip().endswith("\n".join(str(n) for n in range(39990, 40001)))
    assert patch.truncated is True
    (change,) = patch.changes or []
    assert change.truncated is True
    assert len(change.diff.encode()) <= cap
    assert change.diffBytes > 100_000
    (whole,) = whole_patch.item.changes or []
    assert len(whole.diff.encode()) == change.diffBytes
    assert whole.diff.endswith("+" + "y" * 99 + "\n")
    assert message.item.text == "big things"


async def test_the_transcript_survives_a_child_sigkill_and_a_codexd_sigkill_mid_turn(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir = tmp_path / "node"
    with trio.fail_after(GUARD):
        async with (
            running_codexd(workdir, codex_home) as first,
            CodexdClient(first.url) as client,
        ):
            sid = (await client.create_session()).sessionId
            scripted_model.script(Plain("noted MANGO"))
            done = await run_turn(client, sid, "remember MANGO")
            scripted_model.script(Hang())
            cut = await client.start_turn(sid, "the child dies now")
            await scripted_model.wait_streaming()
            child_pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
            async with client.events(after=None) as stream:
                os.killpg(child_pid, signal.SIGKILL)
                async for event in stream:
                    if event.type == "child.started":
                        break
            await client.wait_for_turn(sid, cut["turnId"])
            scripted_model.release_hangs()
            scripted_model.script(Hang())
            killed = await client.start_turn(sid, "codexd dies now")
            await scripted_model.wait_streaming()
            child_pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
            first.kill()
            assert await first.process.wait() == -signal.SIGKILL
            with trio.fail_after(20):
                await wait_pid_gone(child_pid)
        scripted_model.release_hangs()
        async with (
            running_codexd(workdir, codex_home) as second,
            CodexdClient(second.url) as client,
        ):
            after_restart = await client.transcript(sid)
            scripted_model.script(Plain("it was MANGO"))
            await run_turn(client, sid, "which fruit?")
            later = await client.transcript(sid)
        # Lost records are folded again from the log: remove the store and start once more.
        conversation = second.codexd_logs / "conversation"
        for path in conversation.iterdir():
            path.unlink()
        async with (
            running_codexd(workdir, codex_home) as third,
            CodexdClient(third.url) as client,
        ):
            rebuilt = await client.transcript(sid)
    turns = after_restart.turns
    assert [t.turnId for t in turns] == [done, cut["turnId"], killed["turnId"]]
    assert [t.status for t in turns] == ["completed", "failed", "failed"]
    assert turns[0].items[-1].text == "noted MANGO"
    assert turns[1].error is not None
    assert turns[1].error.code == "child_exited"
    assert turns[2].error is not None
    assert turns[2].error.code == "daemon_restarted"
    # Each cut turn still shows what it had: the prompt.
    assert [i.text for i in items_of(turns[1], "userMessage")] == ["the child dies now"]
    assert [i.text for i in items_of(turns[2], "userMessage")] == ["codexd dies now"]
    assert [t.status for t in later.turns] == ["completed", "failed", "failed", "completed"]
    assert rebuilt.turns == later.turns


async def test_the_transcript_outlives_the_raw_event_log_segments(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir = tmp_path / "node"
    small = ("--event-log-segment-mb", "1", "--event-log-segments", "1")
    with trio.fail_after(GUARD):
        async with (
            running_codexd(workdir, codex_home, *small) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            sid = (await client.create_session()).sessionId
            scripted_model.script(Plain("the first answer"))
            first = await run_turn(client, sid, "the first question")
            # ~3 MiB of deltas: the segments holding the first turn are sealed and removed.
            for _ in range(3):
                scripted_model.script(Streamed([f"chunk {n} " * 8 for n in range(4000)]))
                await run_turn(client, sid, "stream a lot")
            async with httpx.AsyncClient(base_url=codexd.url) as http:
                page = (await http.get("/v1/codexd/events", params={"after": "0",
                                                                    "limit": "1"})).json()
            oldest = page["data"]["events"][0]["seq"]
            live = await client.transcript(sid)
        async with (
            running_codexd(workdir, codex_home, *small) as again,
            CodexdClient(again.url) as client,
        ):
            restarted = await client.transcript(sid)
    turn_started = [t for t in live.turns if t.turnId == first]
    assert oldest > 1
    assert len(turn_started) == 1
    assert [i.text for i in turn_started[0].items] == ["the first question", "the first answer"]
    assert len(live.turns) == 4
    assert restarted.turns == live.turns


async def test_approvals_show_what_was_asked_and_who_decided(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    scripted_model.script(ExecCommand("touch asked.txt", then=ApplyPatch(
        "*** Add File: patched.txt\n+patched", then=Plain("both asked"))))
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session(
                cwd=str(work), approval_policy="untrusted", sandbox="workspace-write",
                approvals="clients")
            sid = session.sessionId
            async with client.events(after=0, session_id=sid) as stream:
                accepted = await client.start_turn(sid, "ask twice")
                decided: list[tuple[Any, Any]] = []
                async for event in stream:
                    if event.type != "approval.requested":
                        continue
                    approval_id = event.detail["approval"]["approvalId"]
                    pending = await client.transcript(sid)
                    decided.append((pending, await client.decide_approval(
                        approval_id, "accept" if not decided else "decline",
                        decided_by="a test")))
                    if len(decided) == 2:
                        break
            await client.wait_for_turn(sid, accepted["turnId"])
            (turn,) = (await client.transcript(sid)).turns
    first_pending = decided[0][0].turns[0]
    (asked,) = items_of(first_pending, "approval")
    assert asked.status == "pending"
    assert asked.kind == "commandExecution"
    assert asked.command is not None
    assert "touch asked.txt" in asked.command
    approvals = items_of(turn, "approval")
    assert [a.approvalId for a in approvals] == [d[1].approvalId for d in decided]
    command, patch = approvals
    assert (command.status, command.decision, command.decidedBy) == (
        "resolved", "accept", "a test")
    assert command.decidedAt is not None
    assert command.itemId == items_of(turn, "commandExecution")[0].id
    assert patch.kind == "fileChange"
    assert (patch.status, patch.decision) == ("resolved", "decline")
    (change,) = patch.changes or []
    assert change.kind == "add"
    assert change.diff.endswith("@@ -0,0 +1,1 @@\n+patched\n")
    assert (work / "asked.txt").exists()
    assert not (work / "patched.txt").exists()
    assert items_of(turn, "fileChange")[0].status == "declined"
