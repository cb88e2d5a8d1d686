"""The session/turn state machine, driven synchronously with notifications as Codex sends them."""

from __future__ import annotations

import msgspec
import pytest

from codexd_trio.base.contracts import Event, Session, now_iso
from codexd_trio.core.domain import (
    Emit,
    NoActiveTurn,
    SessionBook,
    SessionClosed,
    SessionNotFound,
    TurnInProgress,
    event_type_for,
)


def _session(sid: str = "session-1", thread: str = "thread-1") -> Session:
    now = now_iso()
    return Session(sessionId=sid, threadId=thread, createdAt=now, updatedAt=now)


def _completed(
    thread: str, turn: str, status: str = "completed", **extra: object
) -> dict[str, object]:
    return {"threadId": thread, "turn": {"id": turn, "status": status, "items": [], **extra}}


def test_event_type_mapping() -> None:
    assert event_type_for("turn/completed") == "app-server.turn.completed"
    assert event_type_for("item/agentMessage/delta") == "app-server.item.agentMessage.delta"


def test_turn_lifecycle_folds_output_and_status() -> None:
    book = SessionBook()
    created = book.add(_session())
    assert created.type == "session.created"
    book.begin_turn("session-1")
    with pytest.raises(TurnInProgress):
        book.begin_turn("session-1")
    session, accepted = book.accept_turn("session-1", "turn-1")
    assert accepted.type == "turn.accepted"
    assert session.currentTurnId == "turn-1"
    assert session.turnCount == 1
    with pytest.raises(TurnInProgress) as busy:
        book.begin_turn("session-1")
    assert busy.value.details["currentTurnId"] == "turn-1"

    item = {"type": "agentMessage", "id": "msg-1", "text": "hello there"}
    emits = book.on_notification(
        "item/completed", {"threadId": "thread-1", "turnId": "turn-1", "item": item}
    )
    assert emits[0].type == "app-server.item.completed"
    assert emits[0].session_id == "session-1"
    emits = book.on_notification("turn/completed", _completed("thread-1", "turn-1"))
    assert [e.type for e in emits] == ["app-server.turn.completed"]
    done = book.get("session-1")
    assert done.currentTurnId is None
    assert done.lastTurnStatus == "completed"
    assert done.lastTurnOutput == "hello there"
    assert done.threadPersisted is True
    assert done.lastTurnCompletedAt is not None


def test_completion_that_overtakes_the_start_response_does_not_leave_the_session_busy() -> None:
    book = SessionBook([_session()])
    book.begin_turn("session-1")
    # The reader folds turn/completed before the task that sent turn/start resumes.
    items = [{"type": "agentMessage", "text": "fast"}]
    book.on_notification("turn/completed", _completed("thread-1", "turn-9", items=items))
    session, _ = book.accept_turn("session-1", "turn-9")
    assert session.currentTurnId is None
    assert session.lastTurnStatus == "completed"
    assert session.lastTurnOutput == "fast"
    book.begin_turn("session-1")  # free again


def test_failed_turn_records_error_code_and_emits_turn_failed() -> None:
    book = SessionBook([_session()])
    book.begin_turn("session-1")
    book.accept_turn("session-1", "turn-1")
    error = {"message": "mock failure", "codexErrorInfo": "internalServerError"}
    emits = book.on_notification(
        "turn/completed", _completed("thread-1", "turn-1", status="failed", error=error)
    )
    assert [e.type for e in emits] == ["app-server.turn.completed", "turn.failed"]
    assert emits[0].level == "error"
    s = book.get("session-1")
    assert s.lastTurnStatus == "failed"
    assert s.lastTurnError is not None
    assert s.lastTurnError.code == "internalServerError"
    assert s.lastTurnError.message == "mock failure"


def test_error_code_from_object_shaped_error_info() -> None:
    book = SessionBook([_session()])
    book.begin_turn("session-1")
    book.accept_turn("session-1", "turn-1")
    error = {"message": "429", "codexErrorInfo": {"responseTooManyFailedAttempts": {}}}
    book.on_notification(
        "turn/completed", _completed("thread-1", "turn-1", status="failed", error=error)
    )
    s = book.get("session-1")
    assert s.lastTurnError is not None
    assert s.lastTurnError.code == "responseTooManyFailedAttempts"


def test_child_exit_settles_running_turns_as_failed() -> None:
    book = SessionBook([_session(), _session("session-2", "thread-2")])
    book.begin_turn("session-1")
    book.accept_turn("session-1", "turn-1")
    emits = book.fail_all_current("child_exited", "codex app-server exited (killed by SIGKILL)")
    assert [e.type for e in emits] == ["app-server.turn.completed.missing", "turn.failed"]
    assert emits[0].level == "error"
    s = book.get("session-1")
    assert s.currentTurnId is None
    assert s.lastTurnStatus == "failed"
    assert s.lastTurnError is not None
    assert s.lastTurnError.code == "child_exited"
    assert book.get("session-2").lastTurnStatus is None


def test_rethread_moves_the_thread_index() -> None:
    book = SessionBook([_session()])
    emit = book.rethread("session-1", "thread-new", "never persisted")
    assert emit.type == "session.rethreaded"
    assert emit.detail["previousThreadId"] == "thread-1"
    assert book.session_for_thread("thread-new") is not None
    assert book.session_for_thread("thread-1") is None


def test_closed_session_refuses_turns_and_unknown_ids_are_not_found() -> None:
    book = SessionBook([_session()])
    assert book.close("session-1").type == "session.closed"
    with pytest.raises(SessionClosed):
        book.begin_turn("session-1")
    with pytest.raises(SessionNotFound):
        book.get("session-nope")
    assert NoActiveTurn.code == "no_active_turn"


def test_notifications_for_unknown_threads_still_become_events() -> None:
    book = SessionBook()
    emits = book.on_notification("warning", {"message": "model metadata not found"})
    assert emits[0].type == "app-server.warning"
    assert emits[0].level == "warn"
    assert emits[0].session_id is None


def _as_events(emits: list[Emit], start: int) -> list[Event]:
    return [
        Event(
            seq=start + i,
            at=f"2026-11-24T00:00:{start + i:02d}.000Z",
            type=e.type,
            level=e.level,
            sessionId=e.session_id,
            threadId=e.thread_id,
            turnId=e.turn_id,
            message=e.message,
            detail=e.detail,
        )
        for i, e in enumerate(emits)
    ]


def test_replaying_the_journal_over_an_old_snapshot_rebuilds_the_registry() -> None:
    live = SessionBook()
    journal: list[Emit] = []
    journal.append(live.add(_session()))
    journal.append(live.add(_session("session-2", "thread-2")))
    snapshot = live.all()  # what the registry file held when it was last written
    live.begin_turn("session-1")
    journal.append(live.accept_turn("session-1", "turn-1")[1])
    item = {"type": "agentMessage", "text": "from the journal"}
    journal += live.on_notification(
        "item/completed", {"threadId": "thread-1", "turnId": "turn-1", "item": item}
    )
    journal += live.on_notification("turn/completed", _completed("thread-1", "turn-1"))
    live.begin_turn("session-2")
    journal.append(live.accept_turn("session-2", "turn-2")[1])  # acknowledged, then a crash
    journal.append(live.rethread("session-1", "thread-1b", "never persisted"))

    restored = SessionBook(snapshot)
    events = _as_events(journal, 1)
    applied = restored.replay(events[2:])  # the snapshot already covers the first two
    assert applied > 0
    one = restored.get("session-1")
    assert one.lastTurnStatus == "completed"
    assert one.lastTurnOutput == "from the journal"
    assert one.threadId == "thread-1b"
    assert one.turnCount == 1
    two = restored.get("session-2")
    assert two.currentTurnId == "turn-2"  # the crash recovery will settle it as failed
    assert two.lastTurnStartedAt == events[5].at  # times come from the log, not the clock
    # The registry snapshot at the live book's end says the same as the rebuilt one.
    assert restored.all() == [
        msgspec.structs.replace(
            s,
            updatedAt=r.updatedAt,
            lastTurnStartedAt=r.lastTurnStartedAt,
            lastTurnCompletedAt=r.lastTurnCompletedAt,
        )
        for s, r in zip(live.all(), restored.all(), strict=True)
    ]


def test_replay_recreates_sessions_missing_from_the_snapshot() -> None:
    live = SessionBook()
    created = live.add(_session())
    restored = SessionBook()
    restored.replay(_as_events([created], 1))
    assert restored.get("session-1").threadId == "thread-1"


def test_a_turn_codex_starts_for_a_compaction_becomes_the_sessions_turn() -> None:
    book = SessionBook()
    book.add(_session())
    book.begin_turn("session-1")
    book.expect_turn("session-1", "compaction")
    with pytest.raises(TurnInProgress):
        book.begin_turn("session-1")  # reserved until Codex names the turn
    started = {"threadId": "thread-1", "turn": {"id": "turn-c", "status": "inProgress"}}
    emits = book.on_notification("turn/started", started)
    assert [e.type for e in emits] == ["app-server.turn.started", "turn.accepted"]
    assert emits[1].detail["origin"] == "compaction"
    assert book.get("session-1").currentTurnId == "turn-c"
    assert not book.expecting("session-1")
    book.on_notification("turn/completed", _completed("thread-1", "turn-c"))
    # A turn/started nobody expects (a client's own turn) changes nothing by itself.
    book.begin_turn("session-1")
    assert len(book.on_notification("turn/started", started)) == 1
    book.abort_turn("session-1")
    # A child that dies before Codex named the turn releases the reservation for good.
    book.begin_turn("session-1")
    book.expect_turn("session-1", "compaction")
    book.fail_all_current("child_exited", "gone")
    assert not book.expecting("session-1")
    assert len(book.on_notification("turn/started", started)) == 1


def test_a_title_is_an_event_and_replays() -> None:
    book = SessionBook()
    created = book.add(_session())
    titled = book.set_title("session-1", "my work", source="default")
    assert (titled.type, titled.detail) == ("session.titled",
                                          {"title": "my work", "source": "default"})
    events = [Event(seq=n + 1, at=now_iso(), type=e.type, sessionId=e.session_id,
                    threadId=e.thread_id, detail=e.detail) for n, e in enumerate([created,
                                                                                titled])]
    again = SessionBook()
    again.replay(events)
    assert again.get("session-1").title == "my work"
