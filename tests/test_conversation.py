"""The conversation records without a child: Codex's items in the transcript's shapes, the fold
of events into per-turn records, the store's files, and transcript pages with a running turn."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import pytest

from codexd_trio.base.contracts import Event
from codexd_trio.base.transcript import ITEM_CAP_BYTES, TranscriptItem, TranscriptTurn
from codexd_trio.core.conversation import ConversationFold, RolledBack, Settled
from codexd_trio.core.items import cap_item, epoch_iso, shape_item, turn_from_codex, unified_diff
from codexd_trio.core.transcripts import Transcripts, cap_turn
from codexd_trio.store.conversation import ConversationStore

# --------------------------------------------------------------------------------------------
# Items


def test_diffs_are_unified_with_headers_whatever_codex_sent() -> None:
    assert unified_diff("/w/new.txt", "add", "a\nb\n") == (
        "--- /dev/null\n+++ b/w/new.txt\n@@ -0,0 +1,2 @@\n+a\n+b\n")
    assert unified_diff("/w/old.txt", "delete", "gone\n") == (
        "--- a/w/old.txt\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-gone\n")
    hunks = "@@ -1 +1 @@\n-x\n+y\n"
    assert unified_diff("/w/f", "update", hunks) == f"--- a/w/f\n+++ b/w/f\n{hunks}"
    assert unified_diff("/w/f", "update", hunks, "/w/g") == f"--- a/w/f\n+++ b/w/g\n{hunks}"
    assert unified_diff("/w/f", "update", "--- a/f\n+++ b/f\n" + hunks).startswith("--- a/f\n")
    # A last line without a newline says so, as diff does.
    assert unified_diff("/w/n", "add", "no newline") == (
        "--- /dev/null\n+++ b/w/n\n@@ -0,0 +1,1 @@\n+no newline\n\\ No newline at end of file\n")
    assert unified_diff("/w/e", "add", "") == "--- /dev/null\n+++ b/w/e\n"


def test_codex_items_take_the_transcripts_shapes_and_unknown_kinds_pass_through() -> None:
    user = shape_item({"type": "userMessage", "id": "u", "content": [
        {"type": "text", "text": "hi ", "text_elements": []}, {"type": "image", "url": "x"},
        {"type": "text", "text": "there"}]})
    assert (user.text, len(user.content or [])) == ("hi there", 3)
    reasoning = shape_item({"type": "reasoning", "id": "r", "summary": ["one", "two"],
                            "content": ["secret"]})
    assert reasoning.summary == "one\n\ntwo"
    command = shape_item({"type": "commandExecution", "id": "c", "command": "ls",
                          "cwd": "/w", "status": "completed", "exitCode": 0,
                          "durationMs": 5, "aggregatedOutput": "é\n"})
    assert (command.output, command.outputBytes, command.truncated) == ("é\n", 3, False)
    change = shape_item({"type": "fileChange", "id": "f", "status": "completed", "changes": [
        {"path": "/w/a", "kind": {"type": "update", "move_path": "/w/b"}, "diff": "@@\n"}]})
    (moved,) = change.changes or []
    assert (moved.kind, moved.movePath) == ("move", "/w/b")
    other = shape_item({"type": "mcpToolCall", "id": "m", "server": "s", "tool": "t",
                        "startedAtMs": 1})
    assert other.data == {"server": "s", "tool": "t"}
    odd = shape_item({"type": "somethingNew", "id": 7})
    assert (odd.type, odd.id) == ("somethingNew", "")
    # Omitted defaults: a reader gets only its kind's fields.
    assert msgspec.to_builtins(shape_item({"type": "agentMessage", "id": "a", "text": "x"})) == {
        "type": "agentMessage", "id": "a", "text": "x"}


def test_caps_cut_outputs_diffs_texts_and_data_and_say_so() -> None:
    small = shape_item({"type": "commandExecution", "id": "c", "aggregatedOutput": "ok"})
    assert cap_item(small) == (small, False)
    output = "".join(f"line {n}\n" for n in range(20_000))
    big, cut = cap_item(shape_item({"type": "commandExecution", "id": "c",
                                    "aggregatedOutput": output}))
    assert cut
    assert big.truncated is True
    assert big.outputBytes == len(output)
    assert big.output is not None
    assert len(big.output.encode()) < ITEM_CAP_BYTES + 100
    assert big.output.startswith("line 0\n")
    assert big.output.endswith("line 19999\n")
    assert "bytes omitted" in big.output
    diffs = shape_item({"type": "fileChange", "id": "f", "changes": [
        {"path": "/a", "kind": {"type": "add"}, "diff": "x" * 40_000},
        {"path": "/b", "kind": {"type": "add"}, "diff": "y" * 40_000}]})
    capped, cut = cap_item(diffs)
    assert cut
    first, second = capped.changes or []
    assert not first.truncated
    assert second.truncated
    assert first.diffBytes + len(second.diff.encode()) == ITEM_CAP_BYTES
    text, cut = cap_item(shape_item({"type": "agentMessage", "id": "a",
                                     "text": "z" * (ITEM_CAP_BYTES + 1)}))
    assert cut
    assert text.truncated is True
    data, cut = cap_item(shape_item({"type": "webSearch", "id": "w",
                                     "results": "r" * ITEM_CAP_BYTES}))
    assert cut
    assert data.data is None
    assert data.dataBytes is not None
    assert data.dataBytes > ITEM_CAP_BYTES


def test_a_codex_turn_becomes_a_transcript_turn() -> None:
    turn = turn_from_codex({"id": "t1", "status": "failed", "startedAt": 0, "completedAt": 1,
                            "error": {"message": "boom", "codexErrorInfo": "other"},
                            "items": [{"type": "userMessage", "id": "u", "content": [
                                {"type": "text", "text": "q"}]}]})
    assert turn.status == "failed"
    assert turn.error is not None
    assert (turn.error.code, turn.error.message) == ("other", "boom")
    assert turn.startedAt == "1970-01-01T00:00:00.000Z"
    assert turn.input == [{"type": "text", "text": "q"}]
    assert turn.origin == "imported"
    assert epoch_iso("x") is None


# --------------------------------------------------------------------------------------------
# The fold


class Log:
    """Events as the hub numbers them, for the fold."""

    def __init__(self) -> None:
        self.seq = itertools.count(1)

    def __call__(self, type_: str, *, sid: str | None = "s1", tid: str | None = None,
                 level: str = "info", msg: str = "", **detail: Any) -> Event:
        return Event(seq=next(self.seq), at="2026-01-01T00:00:00.000Z", type=type_,
                     level=level,  # type: ignore[arg-type]
                     sessionId=sid, turnId=tid, message=msg, detail=detail)


def fold_all(fold: ConversationFold, events: list[Event]) -> list[Settled | RolledBack]:
    return [out for event in events for out in fold.fold(event)]


def item(kind: str, item_id: str, **fields: Any) -> dict[str, Any]:
    return {"item": {"type": kind, "id": item_id, **fields}}


def test_a_turn_folds_into_one_record_with_items_approvals_and_usage() -> None:
    e, fold = Log(), ConversationFold()
    events = [
        e("app-server.turn.started", tid="t1", turn={"id": "t1"}),
        e("turn.accepted", tid="t1", input=[{"type": "text", "text": "go"}]),
        e("app-server.item.completed", tid="t1", **item("userMessage", "u", content=[
            {"type": "text", "text": "go"}])),
        e("app-server.item.started", tid="t1", **item("fileChange", "f", changes=[
            {"path": "/w/x", "kind": {"type": "add"}, "diff": "x\n"}])),
        e("approval.requested", tid="t1", approval={
            "approvalId": "ap", "kind": "fileChange", "itemId": "f", "state": "pending",
            "params": {}}),
        e("app-server.item.agentMessage.delta", tid="t1", delta="ignored"),
        e("approval.resolved", tid="t1", approval={
            "approvalId": "ap", "kind": "fileChange", "itemId": "f", "state": "resolved",
            "decision": "accept", "decidedBy": "me", "resolvedAt": "later", "params": {}}),
        e("app-server.item.completed", tid="t1", **item("fileChange", "f", status="completed",
                                                        changes=[])),
        e("app-server.thread.tokenUsage.updated", tid="t1", tokenUsage={"total": {"n": 1}}),
        e("app-server.turn.completed", tid="t1", turn={"id": "t1", "status": "completed"}),
    ]
    assert fold.resume_seq() == 0
    running = None
    outs: list[Settled | RolledBack] = []
    for event in events:
        outs += fold.fold(event)
        if event.type == "approval.requested":
            running = fold.running("s1")
            assert fold.resume_seq() == 0  # the open turn began at seq 1
    assert running is not None
    assert running.status == "inProgress"
    assert [i.type for i in running.items] == ["userMessage", "approval"]
    (settled,) = outs
    assert isinstance(settled, Settled)
    turn = settled.turn
    assert (turn.turnId, turn.status, turn.origin) == ("t1", "completed", "turn")
    assert turn.input == [{"type": "text", "text": "go"}]
    assert [i.type for i in turn.items] == ["userMessage", "approval", "fileChange"]
    approval = turn.items[1]
    assert (approval.status, approval.decision, approval.decidedBy, approval.decidedAt) == (
        "resolved", "accept", "me", "later")
    assert approval.changes is not None
    assert approval.changes[0].diff.startswith("--- /dev/null\n")
    assert turn.tokenUsage == {"total": {"n": 1}}
    assert fold.running("s1") is None
    assert fold.resume_seq() == events[-1].seq


def test_turns_that_end_without_codex_saying_so_are_failed_with_the_reason() -> None:
    e, fold = Log(), ConversationFold()
    outs = fold_all(fold, [
        e("turn.accepted", tid="a"),
        e("turn.accepted", sid="s2", tid="b"),
        e("approval.requested", sid="s2", tid="b", approval={
            "approvalId": "p", "kind": "commandExecution", "params": {"command": "ls"}}),
        e("app-server.turn.completed.missing", tid="a", code="child_exited", message="gone"),
        e("turn.failed", tid="a", error={"code": "child_exited", "message": "gone"}),
        e("child.exited", sid=None, level="error", msg="codex app-server exited (x)"),
        e("turn.accepted", sid="s3", tid="c"),
        e("daemon.started", sid=None),
    ])
    errors = {o.turn.turnId: o.turn.error for o in outs if isinstance(o, Settled)}
    assert {k: (v.code if v else None) for k, v in errors.items()} == {
        "a": "child_exited", "b": "child_exited", "c": "daemon_restarted"}
    (b,) = [o.turn for o in outs if isinstance(o, Settled) and o.turn.turnId == "b"]
    # An approval pending when its turn ended can no longer be decided.
    assert b.items[0].status == "expired"
    stop = fold_all(ConversationFold(), [
        e("turn.accepted", tid="d"), e("child.exited", sid=None, level="info")])
    (stopped,) = stop
    assert isinstance(stopped, Settled)
    assert stopped.turn.error is not None
    assert stopped.turn.error.code == "daemon_stopped"


def test_late_events_phantoms_imports_rollbacks_and_recorded_turns() -> None:
    e = Log()
    recorded = {("s1", "old")}
    fold = ConversationFold(lambda s, t: (s, t) in recorded)
    outs = fold_all(fold, [
        # A review's turn/started names a fresh id; its items use the root id.
        e("app-server.turn.started", tid="fresh", turn={"id": "fresh", "rootTurnId": "r"}),
        e("app-server.item.completed", tid="r", **item("agentMessage", "m", text="x")),
        e("app-server.turn.started", tid="ghost", turn={"id": "ghost"}),
        e("app-server.turn.completed", tid="r", turn={"id": "r", "status": "completed"}),
        # Completed before Codex answered turn/start: settled already, not reopened.
        e("turn.accepted", tid="r", settled={"status": "completed"}),
        e("approval.resolved", tid="r", approval={"approvalId": "late"}),
        # Already in the store (a refold after a restart).
        e("app-server.item.completed", tid="old", **item("agentMessage", "o", text="x")),
        e("turn.imported", tid="imp", turn=msgspec.to_builtins(TranscriptTurn(
            turnId="imp", status="completed", origin="imported"))),
        e("turn.imported", tid="old", turn={"turnId": "old", "status": "completed"}),
        e("session.rolledBack", removedTurnIds=["r", "imp"]),
    ])
    settled = [o for o in outs if isinstance(o, Settled)]
    assert [s.turn.turnId for s in settled] == ["r", "imp"]
    assert settled[0].turn.origin == "codex"
    assert [i.id for i in settled[0].turn.items] == ["m"]
    assert isinstance(outs[-1], RolledBack)
    assert outs[-1].turn_ids == ["r", "imp"]
    assert fold.running("s1") is None  # the ghost went with the settle; "old" never opened


# --------------------------------------------------------------------------------------------
# The store


def turn(turn_id: str, *items: TranscriptItem, status: str = "completed") -> TranscriptTurn:
    return TranscriptTurn(turnId=turn_id, status=status,  # type: ignore[arg-type]
                          items=list(items))


def text_item(item_id: str, text: str) -> TranscriptItem:
    return TranscriptItem(type="agentMessage", id=item_id, text=text)


async def test_records_page_both_ways_and_survive_a_reopen(tmp_path: Path) -> None:
    store = ConversationStore.open(tmp_path)
    for n in range(7):
        store.append("s", turn(f"t{n}", text_item(f"i{n}", f"answer {n}")), {}, n)
    store.append("other", turn("x"), {}, 99)
    assert not store.append("s", turn("t3"), {}, 100)  # a refold: already there
    first = store.page("s", order="asc", start=None, limit=3)
    assert [e.turn_id for e in first.entries] == ["t0", "t1", "t2"]
    assert first.next_ordinal == 3
    buffered = await store.read(first)  # not on disk yet: read from memory
    await store.flush()
    assert await store.read(first) == buffered
    desc = store.page("s", order="desc", start=None, limit=3)
    assert [e.turn_id for e in desc.entries] == ["t6", "t5", "t4"]
    more = store.page("s", order="desc", start=desc.next_ordinal, limit=10)
    assert [e.turn_id for e in more.entries] == ["t3", "t2", "t1", "t0"]
    assert more.next_ordinal is None
    assert store.remove("s", ["t1", "t5", "nope"]) == ["t1", "t5"]
    store.close()
    again = ConversationStore.open(tmp_path)
    assert again.turn_ids("s") == ["t0", "t2", "t3", "t4", "t6"]
    assert again.next_ordinal("s") == 7  # ordinals are never reused
    page = again.page("s", order="asc", start=4, limit=10)
    assert [t.items[0].text for t in await again.read(page)] == ["answer 4", "answer 6"]
    assert again.resume_seq == 0


async def test_a_crash_leaves_only_what_the_index_claims(tmp_path: Path) -> None:
    store = ConversationStore.open(tmp_path)
    store.claim = lambda: 41
    store.append("s", turn("t0"), {}, 40)
    await store.flush()
    store.append("s", turn("t1"), {}, 50)
    # The record reached the file but its index line did not (a torn index tail instead).
    (line,) = [r for r in store._pending_records]
    segment = tmp_path / "records-000001.jsonl"
    with segment.open("ab") as f:
        f.write(line[2])
    with (tmp_path / "index.jsonl").open("ab") as f:
        f.write(b'{"s":"s","t":"t1"')
    size = segment.stat().st_size
    reopened = ConversationStore.open(tmp_path)
    assert reopened.turn_ids("s") == ["t0"]
    assert reopened.resume_seq == 41
    assert segment.stat().st_size < size  # the unclaimed record was cut
    assert (tmp_path / "index.jsonl").read_bytes().endswith(b"\n")
    reopened.append("s", turn("t1"), {}, 50)
    await reopened.flush()
    reopened.close()
    assert ConversationStore.open(tmp_path).turn_ids("s") == ["t0", "t1"]


async def test_retention_drops_the_oldest_segments_and_their_records(tmp_path: Path) -> None:
    store = ConversationStore.open(tmp_path, segment_bytes=2000, retain_segments=2)
    padding = "p" * 400
    for n in range(40):
        store.append(f"s{n % 2}", turn(f"t{n}", text_item("i", padding)), {}, n)
        await store.flush()
    kept = store.turn_ids("s0") + store.turn_ids("s1")
    segments = sorted(tmp_path.glob("records-*.jsonl"))
    assert len(segments) <= 3  # two sealed and the active one
    assert 0 < len(kept) < 40
    assert "t0" not in kept
    assert "t39" in kept
    reopened = ConversationStore.open(tmp_path, segment_bytes=2000, retain_segments=2)
    assert reopened.turn_ids("s0") + reopened.turn_ids("s1") == kept
    page = reopened.page("s1", order="desc", start=None, limit=1)
    assert [t.turnId for t in await reopened.read(page)] == ["t39"]


async def test_cut_items_are_kept_whole_beside_the_record(tmp_path: Path) -> None:
    store = ConversationStore.open(tmp_path)
    whole = text_item("big", "b" * (ITEM_CAP_BYTES * 2))
    capped, stored = cap_turn(turn("t", whole, text_item("small", "s")))
    assert set(stored) == {"big"}
    assert capped.items[0].truncated is True
    store.append("s", capped, stored, 1)
    await store.flush()
    found = store.find_whole("s", "big")
    assert found is not None
    assert await store.read_whole(found, "big") == ("t", whole)
    assert store.find_whole("s", "small") is None


# --------------------------------------------------------------------------------------------
# Transcript pages with a running turn


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_the_running_turn_is_the_newest_in_either_order(tmp_path: Path,
                                                              order: str) -> None:
    e = Log()
    transcripts = Transcripts(ConversationStore.open(tmp_path), lambda: 123)
    events = []
    for n in range(3):
        events += [e("turn.accepted", tid=f"t{n}"),
                   e("app-server.turn.completed", tid=f"t{n}", turn={"status": "completed"})]
    events.append(e("turn.accepted", tid="live"))
    transcripts.on_durable(events)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = await transcripts.transcript(
            "s1", order=order, start=cursor, limit=2)  # type: ignore[arg-type]
        seen += [t.turnId for t in page.turns]
        assert page.lastSeq == 123
        pages += 1
        if cursor is None:
            break
    expected = ["t0", "t1", "t2", "live"]
    assert seen == (expected if order == "asc" else expected[::-1])
    assert pages == 2
    one, cursor = await transcripts.transcript("s1", order="desc", limit=1)
    assert [t.status for t in one.turns] == ["inProgress"]
    assert cursor is not None
    missing = await transcripts.transcript("nobody")
    assert missing[0].turns == []
