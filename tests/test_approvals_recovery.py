"""An approval is settled exactly once, across a SIGKILL of codexd (issue 26's chaos finding).

``approvals.json`` used to be rewritten only *after* the approval's event was durable in the
event log; a SIGKILL in between left the file saying ``pending``, and the next start expired the
approval a second time (two ``approval.resolved`` events for one approval, seen by the chaos
harness at seq 3672 and 3691). The document is now stamped with the log position it reflects,
and a start replays the approval events after that stamp before it expires what is still
pending.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest
import trio

from codexd_trio.base.contracts import ApprovalBook, Event
from codexd_trio.client import CodexdClient
from codexd_trio.testing import ExecCommand, Plain, ScriptedModel
from codexd_trio.testing.daemon import read_events, running_codexd, wait_pid_gone


def _book(path: Path) -> ApprovalBook:
    if not path.exists():  # not written yet
        return ApprovalBook()
    return msgspec.json.decode(path.read_bytes(), type=ApprovalBook)


async def _until_on_disk(doc: Path, approval_id: str) -> None:
    """Until codexd (another process) has written the approval to ``doc``: asking the file is
    the only way to know."""
    while True:
        if any(a.approvalId == approval_id for a in _book(doc).approvals):
            return
        await trio.sleep(0.01)


def _settlements(events: list[Event], approval_id: str) -> list[Event]:
    return [e for e in events if e.type == "approval.resolved"
            and e.detail["approval"]["approvalId"] == approval_id]


@pytest.mark.real_codex
async def test_an_approval_settled_before_a_sigkill_is_not_settled_again_at_restart(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir, work = tmp_path / "node", codex_home / "work"
    work.mkdir(parents=True, exist_ok=True)
    with trio.fail_after(150):
        async with (
            running_codexd(workdir, codex_home) as first,
            CodexdClient(first.url) as client,
        ):
            session = await client.create_session(
                cwd=str(work), approval_policy="untrusted", sandbox="workspace-write",
                approvals="clients",
            )
            scripted_model.script(ExecCommand("touch never.txt", then=Plain("declined")))
            turn = await client.start_turn(session.sessionId, "ask first")
            async with client.events(after=0, session_id=session.sessionId) as stream:
                async for event in stream:
                    if event.type == "approval.requested":
                        approval_id = event.detail["approval"]["approvalId"]
                        break
            doc = first.codexd_state / "approvals.json"
            # The pending approval on disk is the state a SIGKILL would leave behind: wait for
            # that write (a condition, not a delay), then hold every later rewrite of the file.
            await _until_on_disk(doc, approval_id)
            pending_bytes = doc.read_bytes()
            # os.replace() cannot put a file over a non-empty directory: the writer's rewrite
            # fails (and retries) while the event log, another file, commits as usual.
            doc.unlink()
            doc.mkdir()
            (doc / "hold").touch()
            await client.decide_approval(approval_id, "decline")
            await client.wait_for_turn(session.sessionId, turn["turnId"])
            child_pid = first.child_pid()
            first.kill()
            await first.process.wait()
            if child_pid is not None:
                await wait_pid_gone(child_pid)
        # The file as the SIGKILL left it: the approval still pending there.
        shutil.rmtree(doc)
        doc.write_bytes(pending_bytes)
        assert {a.approvalId: a.state for a in _book(doc).approvals}[approval_id] == "pending"
        events = read_events(first.codexd_logs / "events.jsonl")
        assert [e.detail["approval"]["decision"]
                for e in _settlements(events, approval_id)] == ["decline"]

        async with (
            running_codexd(workdir, codex_home) as second,
            CodexdClient(second.url) as client,
        ):
            approval = await client.get_approval(approval_id)
            assert (approval.state, approval.decision) == ("resolved", "decline")
            assert await client.list_approvals(state="pending") == []
        events = read_events(second.codexd_logs / "events.jsonl")
        assert len(_settlements(events, approval_id)) == 1
