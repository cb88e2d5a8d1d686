"""The turn queue's domain part (issue 23), synchronously: the book's queue commands, the
events they return, the registry snapshot, and codexd's queue routes in-process (no child)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from codexd_trio.base.contracts import Event, QueueSnapshot, Session, now_iso
from codexd_trio.base.errors import (
    QueueEntryNotFound,
    QueueEntryStarted,
    SessionClosed,
    SessionNotFound,
    TurnInProgress,
)
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.domain import Emit, SessionBook
from codexd_trio.core.recovery import replay_journal
from codexd_trio.core.service import Daemon
from codexd_trio.store.sessiontable import SessionTable, open_registry
from codexd_trio.web.routes import create_app

AT = "2026-12-01T00:00:00.000Z"


def _book(*sids: str) -> SessionBook:
    book = SessionBook([Session(sessionId=s, threadId=f"thread-{s}", createdAt=AT,
                                updatedAt=AT) for s in sids or ("s1",)])
    book.now = lambda: AT  # the journal's events below carry the same time
    return book


def _queue(book: SessionBook, sid: str, *texts: str) -> list[str]:
    return [book.enqueue(sid, text)[0].queueId for text in texts]


def _ids(book: SessionBook, sid: str) -> list[str]:
    return [e.queueId for e in book.queue_of(sid)[0]]


def _start(book: SessionBook, turn_id: str) -> list[Emit]:
    """What the dispatcher does for one ready head, Codex accepting it."""
    [head] = book.pick_ready()
    book.begin_turn(head.sessionId)
    starting = book.mark_starting(head.queueId)
    _, accepted = book.accept_turn(head.sessionId, turn_id)
    return [starting, book.dequeue(head.queueId, turn_id), accepted]


def _complete(book: SessionBook, sid: str, turn_id: str) -> None:
    book.on_notification("turn/completed", {
        "threadId": f"thread-{sid}", "turn": {"id": turn_id, "status": "completed", "items": []}})


def test_entries_wait_in_order_and_the_session_counts_them() -> None:
    book = _book()
    entry, position, [event] = book.enqueue("s1", "first")
    assert (position, event.type, event.detail["queueId"]) == (0, "turn.queued", entry.queueId)
    assert event.detail["entry"]["input"] == "first"
    _queue(book, "s1", "second", "third")
    assert [e.input for e in book.queue_of("s1")[0]] == ["first", "second", "third"]
    assert book.get("s1").queueLength == 3
    assert book.must_queue("s1")  # others wait: a new one goes behind them
    with pytest.raises(SessionNotFound):
        book.enqueue("nope", "x")


def test_must_queue_while_a_turn_runs_or_starts() -> None:
    book = _book()
    assert not book.must_queue("s1")
    book.begin_turn("s1")
    assert book.must_queue("s1")
    book.accept_turn("s1", "t1")
    assert book.must_queue("s1")
    _complete(book, "s1", "t1")
    assert not book.must_queue("s1")


def test_heads_start_only_on_idle_sessions_one_at_a_time() -> None:
    book = _book("s1", "s2")
    book.begin_turn("s1")
    book.accept_turn("s1", "t1")
    a, b = _queue(book, "s1", "a", "b")
    (c,) = _queue(book, "s2", "c")
    assert [e.queueId for e in book.pick_ready()] == [c]  # s1 is busy
    assert book.pick_ready() == []  # c is picked already
    _complete(book, "s1", "t1")
    emits = _start(book, "t2")
    assert [e.type for e in emits] == ["turn.queue.starting", "turn.dequeued", "turn.accepted"]
    assert emits[1].turn_id == "t2"
    assert emits[1].detail["queueId"] == a
    assert _ids(book, "s1") == [b]
    assert book.get("s1").queueLength == 1
    assert book.pick_ready() == []  # s1 runs t2; c is still picked


def test_remove_and_move_refuse_what_started_and_what_is_unknown() -> None:
    book = _book()
    a, b, c = _queue(book, "s1", "a", "b", "c")
    [head] = book.pick_ready()
    assert head.queueId == a
    with pytest.raises(QueueEntryStarted):
        book.remove_queued("s1", a)  # being started
    with pytest.raises(QueueEntryStarted):
        book.move_queued("s1", a, 2)
    # Nothing goes ahead of an entry being started.
    book.move_queued("s1", c, 0)
    assert _ids(book, "s1") == [a, c, b]
    assert book.move_queued("s1", c, 1) == []  # already there: no event
    [moved] = book.move_queued("s1", c, 99)
    assert (moved.type, moved.detail["from"], moved.detail["position"]) == (
        "turn.queue.moved", 1, 2)
    book.begin_turn("s1")
    book.mark_starting(a)
    book.accept_turn("s1", "t1")
    book.dequeue(a, "t1")
    with pytest.raises(QueueEntryStarted) as started:
        book.remove_queued("s1", a)
    assert started.value.details["turnId"] == "t1"
    with pytest.raises(QueueEntryNotFound):
        book.remove_queued("s1", "queue-unknown")
    entry, [removed] = book.remove_queued("s1", b)
    assert (entry.queueId, removed.detail["reason"]) == (b, "removed")
    assert book.get("s1").queueLength == 1


def test_a_failed_start_stops_the_queue_until_resumed_or_the_entry_removed() -> None:
    book = _book()
    a, b = _queue(book, "s1", "a", "b")
    [_head] = book.pick_ready()
    book.begin_turn("s1")
    book.mark_starting(a)
    book.abort_turn("s1")
    stop = book.stop_queue(a, "invalid_request", "Codex refused it")
    assert stop is not None
    assert (stop.type, stop.level) == ("turn.queue.stopped", "error")
    entries, stopped = book.queue_of("s1")
    assert stopped is not None
    assert (stopped.queueId, stopped.code) == (a, "invalid_request")
    assert entries[0].lastError is not None
    assert entries[0].state == "waiting"
    assert book.pick_ready() == []  # stopped: nothing starts, no retry
    assert book.must_queue("s1")
    [resumed] = book.resume_queue("s1")
    assert resumed.type == "turn.queue.resumed"
    assert book.resume_queue("s1") == []  # not stopped: nothing to do
    assert [e.queueId for e in book.pick_ready()] == [a]  # tried again
    book.unpick(a)
    book.stop_queue(a, "app_server_error", "again")
    _, emits = book.remove_queued("s1", a)
    assert [e.type for e in emits] == ["turn.queue.removed", "turn.queue.resumed"]
    assert [e.queueId for e in book.pick_ready()] == [b]


def test_closing_cancels_the_queue_and_a_refused_close_cancels_nothing() -> None:
    book = _book()
    a, b = _queue(book, "s1", "a", "b")
    book.begin_turn("s1")
    with pytest.raises(TurnInProgress):
        book.close_session("s1")
    assert _ids(book, "s1") == [a, b]
    book.abort_turn("s1")
    emits = book.close_session("s1")
    assert [(e.type, e.detail.get("queueId"), e.detail.get("reason")) for e in emits] == [
        ("turn.queue.removed", a, "session_closed"), ("turn.queue.removed", b, "session_closed"),
        ("session.closed", None, None)]
    assert (book.get("s1").queueLength, _ids(book, "s1")) == (0, [])
    with pytest.raises(SessionClosed):
        book.enqueue("s1", "late")


def test_a_start_marked_but_never_settled_stops_its_queue_after_a_restart() -> None:
    book = _book()
    a, _ = _queue(book, "s1", "a", "b")
    book.pick_ready()
    book.begin_turn("s1")
    book.mark_starting(a)
    # codexd dies here. The next start rebuilds the book from its snapshot.
    again = SessionBook(book.all(), book.queue.snapshot())
    [stop] = again.recover_queues()
    assert (stop.detail["queueId"], stop.detail["code"]) == (a, "start_interrupted")
    assert again.queue_of("s1")[1] is not None
    assert again.recover_queues() == []


def test_the_registry_snapshot_carries_the_queues(tmp_path: Path) -> None:
    book = _book("s1", "s2")
    a, _b = _queue(book, "s1", "a", "b")
    _queue(book, "s2", "c")
    book.stop_queue(a, "invalid_request", "no")
    _complete(book, "s2", "none")
    table = SessionTable()
    for session in book.all():
        table.put(session)
    path = tmp_path / "session-registry.json"
    path.write_bytes(table.freeze().registry_json(7, book.queue.snapshot()))
    registry = open_registry(path)
    assert registry.last_seq == 7
    restored = SessionBook(registry.sessions, registry.queue)
    assert restored.queue.snapshot() == book.queue.snapshot()
    assert restored.get("s1").queueLength == 2
    assert restored.queue_of("s1")[1] is not None
    # A registry written before there were queues reads as empty queues.
    path.write_bytes(b'{"version":1,"lastSeq":3,"sessions":[]}')
    assert open_registry(path).queue == QueueSnapshot()


def _events(emits: list[Emit]) -> list[Event]:
    return [Event(seq=n, at=AT, type=e.type, sessionId=e.session_id,
                  threadId=e.thread_id, turnId=e.turn_id, message=e.message, detail=e.detail)
            for n, e in enumerate(emits, 1)]


def test_replaying_the_queue_events_rebuilds_the_queues() -> None:
    live = _book()
    emits: list[Emit] = []
    a, b, c, d = (live.enqueue("s1", x) for x in "abcd")
    for _, _, e in (a, b, c, d):
        emits += e
    emits += live.move_queued("s1", d[0].queueId, 0)
    emits += live.remove_queued("s1", c[0].queueId)[1]
    emits += _start(live, "t1")
    emits += live.on_notification("turn/completed", {
        "threadId": "thread-s1", "turn": {"id": "t1", "status": "completed", "items": []}})
    replayed = _book()
    replayed.replay(_events(emits))
    assert replayed.queue.snapshot() == live.queue.snapshot()
    assert replayed.all() == live.all()
    assert replayed.get("s1").queueLength == 2


# ---------------------------------------------------------------------------------------------
# codexd's routes in-process: no child, so a queued post always waits.


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(CodexdConfig(local_api_base="http://127.0.0.1:0", logs_dir=tmp_path / "logs",
                            state_dir=tmp_path / "state"))
    yield d
    d.close()


def _add_session(daemon: Daemon, sid: str = "session-1") -> None:
    now = now_iso()
    daemon.publish(daemon.book.add(Session(sessionId=sid, threadId="thread-1", createdAt=now,
                                           updatedAt=now)))


async def test_queue_routes_answer_in_envelopes_and_the_hold_is_durable(
    daemon: Daemon, tmp_path: Path
) -> None:
    _add_session(daemon)
    client = create_app(daemon).test_client()
    queued = await client.post("/v1/codexd/turn", json={
        "sessionId": "session-1", "input": "later", "whenBusy": "queue"})
    assert queued.status_code == 202
    data = (await queued.get_json())["data"]
    assert (data["queued"], data["position"], data["session"]["queueLength"]) == (True, 0, 1)
    qid = data["queueId"]
    bad = await client.post("/v1/codexd/turn", json={
        "sessionId": "session-1", "input": "x", "whenBusy": "maybe"})
    assert bad.status_code == 400
    assert (await bad.get_json())["error"]["details"]["field"] == "$.whenBusy"
    view = (await (await client.get("/v1/codexd/sessions/session-1/queue")).get_json())["data"]
    assert [e["queueId"] for e in view["queue"]["entries"]] == [qid]
    # The transcript shows the queued turns after the last turn (issue 22's Transcript.queue).
    transcript = await client.get("/v1/codexd/sessions/session-1/transcript")
    assert (await transcript.get_json())["data"]["queue"] == view["queue"]["entries"]
    missing = await client.get("/v1/codexd/sessions/nope/queue")
    assert missing.status_code == 404
    gone = await client.delete("/v1/codexd/sessions/session-1/queue/queue-nope")
    assert (gone.status_code, (await gone.get_json())["error"]["code"]) == (404, "not_found")
    moved = await client.post(f"/v1/codexd/sessions/session-1/queue/{qid}/move",
                              json={"position": "first"})
    assert moved.status_code == 400

    held = await client.post("/v1/codexd/hold", json={"held": True, "reason": "paused"})
    assert (await held.get_json())["data"]["hold"]["held"] is True
    again = await client.post("/v1/codexd/hold", json={"held": True, "reason": "paused"})
    assert again.status_code == 200
    hold_file = tmp_path / "state" / "codexd" / "hold.json"
    assert msgspec.json.decode(hold_file.read_bytes())["held"] is True
    changes = [e for e in await daemon.log.read_after(0) if e.type == "queue.hold.changed"]
    assert len(changes) == 1  # the same hold again changed nothing
    status = (await (await client.get("/v1/codexd/status")).get_json())["data"]
    assert status["snapshot"]["queue"] == {"held": True, "holdReason": "paused", "entries": 1,
                                           "sessions": 1, "stoppedSessions": 0}
    refused = await client.post("/v1/codexd/hold", json={"held": "yes"})
    assert refused.status_code == 400
    metrics = await (await client.get("/metrics")).get_data(as_text=True)
    assert "codexd_queued_turns 1.0" in metrics
    assert "codexd_queues_held 1.0" in metrics
    assert "codexd_queues_stopped 0.0" in metrics

    removed = await client.delete(f"/v1/codexd/sessions/session-1/queue/{qid}")
    body = (await removed.get_json())["data"]
    assert (body["removed"]["queueId"], body["queue"]["entries"]) == (qid, [])


async def test_a_restarted_codexd_replays_the_queue_from_the_journal(tmp_path: Path) -> None:
    config = CodexdConfig(local_api_base="http://127.0.0.1:0", logs_dir=tmp_path / "logs",
                          state_dir=tmp_path / "state")
    first = Daemon(config)
    try:
        _add_session(first)
        client = create_app(first).test_client()
        ids = []
        for text in ("one", "two", "three"):
            answer = await client.post("/v1/codexd/turn", json={
                "sessionId": "session-1", "input": text, "whenBusy": "queue"})
            ids.append((await answer.get_json())["data"]["queueId"])
        await client.post(f"/v1/codexd/sessions/session-1/queue/{ids[2]}/move",
                          json={"position": 0})
    finally:
        first.close()  # the registry snapshot was never written: only the journal has them
    second = Daemon(config)
    try:
        await replay_journal(second)
        assert [e.queueId for e in second.queue_view("session-1").entries] == [
            ids[2], ids[0], ids[1]]
        assert second.book.get("session-1").queueLength == 3
    finally:
        second.close()
