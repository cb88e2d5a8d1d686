"""Approvals and turn inputs no test held before issue 29, against the real codex binary.

- A request nobody decides within ``--approval-timeout`` is declined: Codex's item ends
  ``declined`` and the command never runs.
- A file-change approval (``item/fileChange/requestApproval``: ``apply_patch`` through
  ``exec_command`` under ``untrusted``), accepted and declined.
- The ``acceptForSession`` and ``cancel`` decisions: the first runs the command, the second
  ends the turn ``interrupted`` without running it.
- An image input item reaches the model as an ``input_image``; a session's own ``model`` is
  the model every request of its turns names.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from codexd_trio.base.contracts import Approval, Event
from codexd_trio.client import CodexdClient
from codexd_trio.testing import ExecCommand, Plain, ScriptedModel
from codexd_trio.testing.daemon import read_events, running_codexd

pytestmark = pytest.mark.real_codex

GUARD = 150

PATCH = """apply_patch <<'EOF'
*** Begin Patch
*** Add File: {name}
+patched by the model
*** End Patch
EOF"""

# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


async def _untrusted_session(client: CodexdClient, work: Path, **extra: Any) -> str:
    work.mkdir(parents=True, exist_ok=True)
    session = await client.create_session(
        cwd=str(work), approval_policy="untrusted", sandbox="workspace-write",
        approvals="clients", **extra,
    )
    return session.sessionId


async def _next_pending(client: CodexdClient, session_id: str, after: int = 0) -> Approval:
    """The session's next pending approval, seen on the event stream (no polling)."""
    async with client.events(after=after, session_id=session_id) as stream:
        async for event in stream:
            if event.type == "approval.requested":
                approval = await client.get_approval(event.detail["approval"]["approvalId"])
                if approval.state == "pending":
                    return approval
    raise AssertionError("stream ended without a pending approval")


def _item_status(events: list[Event], item_id: str | None) -> list[str]:
    """The statuses Codex gave the item in its ``item/completed`` notifications."""
    return [e.detail["item"]["status"] for e in events
            if e.type == "app-server.item.completed"
            and e.detail.get("item", {}).get("id") == item_id]


async def test_an_approval_nobody_decides_in_time_is_declined_and_the_command_never_runs(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    work = codex_home / "work-timeout"
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home, "--approval-timeout", "1") as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session_id = await _untrusted_session(client, work)
            scripted_model.script(ExecCommand("touch timed-out.txt", then=Plain("not run")))
            turn = await client.start_turn(session_id, "make a file")
            approval = await _next_pending(client, session_id)
            done = await client.wait_for_turn(session_id, turn["turnId"])
            assert done.lastTurnStatus == "completed"
            record = await client.get_approval(approval.approvalId)
            assert (record.state, record.decision, record.decidedBy) == (
                "resolved", "decline", "timeout")
            assert not (work / "timed-out.txt").exists()
            events = read_events(codexd.codexd_logs / "events.jsonl")
            assert _item_status(events, approval.itemId) == ["declined"]
            # What the model was told: the command was rejected, not its output.
            assert "rejected" in json.dumps(scripted_model.requests[-1].function_call_outputs())


async def test_a_request_codex_withdraws_expires(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    """Interrupting a turn that waits on an approval: Codex ends the turn, then withdraws the
    request (``serverRequest/resolved``); codexd records the approval ``expired`` at once (a
    short approval timeout makes a missed withdrawal show as ``resolved/decline/timeout``)."""
    work = codex_home / "work-withdrawn"
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home, "--approval-timeout", "20") as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session_id = await _untrusted_session(client, work)
            scripted_model.script(ExecCommand("touch withdrawn.txt", then=Plain("unused")))
            turn = await client.start_turn(session_id, "ask, then be interrupted")
            approval = await _next_pending(client, session_id)
            await client.interrupt_turn(session_id, turn_id=turn["turnId"])
            done = await client.wait_for_turn(session_id, turn["turnId"])
            assert done.lastTurnStatus == "interrupted"
            async with client.events(after=0, session_id=session_id) as stream:
                async for event in stream:
                    if (event.type == "approval.resolved"
                            and event.detail["approval"]["approvalId"] == approval.approvalId):
                        break
            assert event.detail["approval"]["state"] == "expired"
            assert event.detail["reason"] == "the app-server withdrew the request"
            assert not (work / "withdrawn.txt").exists()


async def test_file_change_approvals_accept_for_session_and_cancel(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    work = codex_home / "work-decisions"
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session_id = await _untrusted_session(client, work)

            # A file change, accepted: the patch is applied.
            scripted_model.script(ExecCommand(PATCH.format(name="patched.txt"),
                                              then=Plain("patched")))
            turn = await client.start_turn(session_id, "patch a file in")
            approval = await _next_pending(client, session_id)
            assert (approval.kind, approval.method) == (
                "fileChange", "item/fileChange/requestApproval")
            decided = await client.decide_approval(approval.approvalId, "accept")
            assert (decided.state, decided.decision) == ("resolved", "accept")
            done = await client.wait_for_turn(session_id, turn["turnId"])
            assert done.lastTurnOutput == "patched"
            assert (work / "patched.txt").read_text() == "patched by the model\n"

            # A file change, declined: nothing is written, the model is told.
            scripted_model.script(ExecCommand(PATCH.format(name="refused.txt"),
                                              then=Plain("not patched")))
            turn = await client.start_turn(session_id, "patch another")
            approval = await _next_pending(client, session_id)
            assert approval.kind == "fileChange"
            await client.decide_approval(approval.approvalId, "decline")
            done = await client.wait_for_turn(session_id, turn["turnId"])
            assert done.lastTurnOutput == "not patched"
            assert not (work / "refused.txt").exists()

            # acceptForSession: delivered as such, and the command runs.
            scripted_model.script(ExecCommand("touch for-session.txt", then=Plain("ran")))
            turn = await client.start_turn(session_id, "run it for the session")
            approval = await _next_pending(client, session_id)
            decided = await client.decide_approval(approval.approvalId, "acceptForSession")
            assert (decided.state, decided.decision) == ("resolved", "acceptForSession")
            done = await client.wait_for_turn(session_id, turn["turnId"])
            assert done.lastTurnOutput == "ran"
            assert (work / "for-session.txt").exists()

            # cancel: the command does not run and the turn ends interrupted at once (the
            # model is not called again: its "then" is never played).
            requests_before = len(scripted_model.requests)
            scripted_model.script(ExecCommand("touch cancelled.txt", then=Plain("unreachable")))
            turn = await client.start_turn(session_id, "run it, then cancel")
            approval = await _next_pending(client, session_id)
            decided = await client.decide_approval(approval.approvalId, "cancel")
            assert (decided.state, decided.decision) == ("resolved", "cancel")
            done = await client.wait_for_turn(session_id, turn["turnId"])
            assert done.lastTurnStatus == "interrupted"
            assert not (work / "cancelled.txt").exists()
            assert len(scripted_model.requests) == requests_before + 1
            events = read_events(codexd.codexd_logs / "events.jsonl")
            assert _item_status(events, approval.itemId) == ["declined"]


async def test_an_image_input_reaches_the_model_and_a_session_model_names_every_request(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            session = await client.create_session(model="scripted-other-model")
            scripted_model.script(Plain("a tiny square"))
            turn = await client.start_turn(session.sessionId, [
                {"type": "text", "text": "what is in this picture?"},
                {"type": "image", "url": data_url},
            ])
            done = await client.wait_for_turn(session.sessionId, turn["turnId"])
            assert done.lastTurnOutput == "a tiny square"
            request = scripted_model.requests[-1]
            assert request.body["model"] == "scripted-other-model"
            images = [part for item in request.body["input"] if isinstance(item, dict)
                      for part in (item.get("content") or []) if isinstance(part, dict)
                      and part.get("type") == "input_image"]
            assert [image["image_url"] for image in images] == [data_url]
            assert "what is in this picture?" in request.user_texts()

            # Another session without a model of its own uses the node's default.
            other = await client.create_session()
            scripted_model.script(Plain("plain"))
            turn = await client.start_turn(other.sessionId, "hello")
            await client.wait_for_turn(other.sessionId, turn["turnId"])
            assert scripted_model.requests[-1].body["model"] != "scripted-other-model"
