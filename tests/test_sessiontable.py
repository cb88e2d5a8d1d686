"""The packed session table: what goes in comes out, in order, hot or cold, and on disk."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from codexd_trio.base.contracts import Session, SessionRegistry, TurnError
from codexd_trio.core.domain import SessionBook
from codexd_trio.store.documents import StoreCorrupt
from codexd_trio.store.sessiontable import SessionTable, read_registry

AT = "2026-11-30T00:00:00.000Z"


def session(n: int, **changes: object) -> Session:
    base = Session(sessionId=f"session-{n}", threadId=f"thread-{n}", createdAt=AT, updatedAt=AT,
                   cwd="/work", lastTurnOutput=f"answer {n}")
    return msgspec.structs.replace(base, **changes)


def test_sessions_come_back_equal_whether_hot_or_packed() -> None:
    table = SessionTable(hot_size=2)
    failed = session(1, lastTurnStatus="failed", turnCount=3,
                     lastTurnError=TurnError(code="other", message="boom"))
    table.load([failed, session(2)])  # packed straight away
    for n in range(3, 6):
        table.put(session(n))  # 3 falls out of the two hot ones and is packed
    assert table["session-1"] == failed
    assert [s.sessionId for s in table.values()] == [f"session-{n}" for n in range(1, 6)]
    assert table.get("session-9") is None
    assert "session-9" not in table
    with pytest.raises(KeyError):
        table["session-9"]
    table.put(session(1, status="closed"))  # a replace keeps the session's place
    assert table.order[0] == "session-1"
    assert table["session-1"].status == "closed"
    assert len(table) == 5


def test_a_frozen_copy_does_not_move_with_the_table() -> None:
    table = SessionTable(hot_size=1)
    table.put(session(1))
    frozen = table.freeze()
    table.put(session(1, status="closed"))
    table.put(session(2))
    assert [(s.sessionId, s.status) for s in frozen.sessions()] == [("session-1", "active")]


def test_the_registry_round_trips_through_the_file_one_session_at_a_time(tmp_path: Path) -> None:
    book = SessionBook([session(n) for n in range(1, 4)])
    book.close("session-2")
    path = tmp_path / "session-registry.json"
    path.write_bytes(book.freeze().registry_json(42))
    as_json = json.loads(path.read_text())
    assert as_json["lastSeq"] == 42
    assert len(as_json["sessions"]) == 3
    assert msgspec.json.decode(path.read_bytes(), type=SessionRegistry).sessions == book.all()
    last_seq, sessions = read_registry(path)
    restored = SessionBook(sessions)
    assert last_seq == 42
    assert restored.all() == book.all()
    assert (restored.count, restored.active_count) == (3, 2)
    assert restored.session_for_thread("thread-3") == book.get("session-3")


def test_a_registry_with_a_bad_session_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "session-registry.json"
    path.write_text('{"version":1,"lastSeq":3,"sessions":[{"sessionId":1}]}')
    _, sessions = read_registry(path)
    with pytest.raises(StoreCorrupt, match="session 0"):
        SessionBook(sessions)
    path.write_text("{not json")
    with pytest.raises(StoreCorrupt, match="not valid JSON"):
        read_registry(path)
    assert read_registry(tmp_path / "missing.json")[0] == 0


def test_the_activity_order_pages_newest_first_and_follows_updates() -> None:
    book = SessionBook([
        session(n, updatedAt=f"2026-11-30T00:00:0{n}.000Z") for n in range(1, 6)
    ] + [session(6, updatedAt="2026-11-30T00:00:03.000Z")])  # a tie with session-3
    page, key = book.page_by_activity(limit=2)
    assert [s.sessionId for s in page] == ["session-5", "session-4"]
    page, key = book.page_by_activity(before=key, limit=2)
    assert [s.sessionId for s in page] == ["session-6", "session-3"]  # ties: by id, newest first
    page, key = book.page_by_activity(before=key, limit=5)
    assert [s.sessionId for s in page] == ["session-2", "session-1"]
    assert key is None
    # Activity moves a session to the top; closed ones can be filtered out.
    book.now = lambda: "2026-11-30T00:01:00.000Z"
    book.close("session-1")
    page, _ = book.page_by_activity(limit=3)
    assert [s.sessionId for s in page] == ["session-1", "session-5", "session-4"]
    page, _ = book.page_by_activity(limit=10, status="active")
    assert "session-1" not in [s.sessionId for s in page]
    assert len(page) == 5
