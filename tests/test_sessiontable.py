"""The packed session table: what goes in comes out, in order, hot or cold, and on disk."""

from __future__ import annotations

import json
from array import array
from pathlib import Path

import msgspec
import pytest

from codexd_trio.base.contracts import (
    QueueSnapshot,
    QueueStop,
    Session,
    SessionQueue,
    SessionRegistry,
    StartedEntry,
    TurnError,
)
from codexd_trio.core.domain import SessionBook
from codexd_trio.store.documents import StoreCorrupt
from codexd_trio.store.sessiontable import ActivityIndex, SessionTable, open_registry, read_registry

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
    with pytest.raises(KeyError, match="session-9"):
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
    with pytest.raises(StoreCorrupt, match="session 0") as info:
        SessionBook(sessions)
    assert info.value.path == path
    path.write_text("{not json")
    with pytest.raises(StoreCorrupt, match="not valid JSON") as info:
        read_registry(path)
    assert info.value.path == path
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


def test_the_hot_sessions_are_the_last_touched_and_each_session_lives_in_one_place() -> None:
    # The table's point is memory: hot_size sessions as objects (the last touched), every other
    # one packed once.
    table = SessionTable(hot_size=2)
    for n in range(1, 4):
        table.put(session(n))
    assert list(table._hot) == ["session-2", "session-3"]
    assert list(table._cold) == ["session-1"]
    assert table.get("session-2") is not None  # touched: session-3 is now the least recent
    table.put(session(4))
    assert list(table._hot) == ["session-2", "session-4"]
    assert table.get("session-1") == session(1)  # unpacked: no packed copy stays behind
    assert sorted(table._cold) == ["session-2", "session-3"]
    assert list(table._hot) == ["session-4", "session-1"]


def test_the_registry_keeps_the_turn_queues(tmp_path: Path) -> None:
    queue = QueueSnapshot(
        sessions=[SessionQueue(sessionId="session-1", stopped=QueueStop(
            code="turn_failed", message="the last turn failed", stoppedAt=AT))],
        started=[StartedEntry(queueId="q1", sessionId="session-1", turnId="t1", startedAt=AT)],
    )
    table = SessionTable()
    table.put(session(1))
    path = tmp_path / "session-registry.json"
    path.write_bytes(table.freeze().registry_json(7, queue))
    registry = open_registry(path)
    assert (registry.last_seq, registry.queue) == (7, queue)
    assert [s.sessionId for s in registry.sessions] == ["session-1"]


def test_an_unreadable_or_misshapen_registry_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "session-registry.json"
    path.mkdir()  # there, but not a file that can be read
    with pytest.raises(StoreCorrupt, match=r"cannot read .*session-registry\.json") as info:
        open_registry(path)
    assert info.value.path == path
    other = tmp_path / "other.json"
    other.write_text('{"lastSeq": "seven"}')
    with pytest.raises(StoreCorrupt, match=r"other\.json does not have the expected shape") as info:
        open_registry(other)
    assert info.value.path == other


def test_activity_keys_with_equal_times_stay_sorted_by_id_among_later_times() -> None:
    index = ActivityIndex()
    index.move("b", None, 1.0)
    index.move("a", None, 2.0)  # a later time, an id that sorts before the tied ones
    index.move("c", None, 1.0)
    assert list(index.newest_first()) == [(2.0, "a"), (1.0, "c"), (1.0, "b")]
    index.move("c", 1.0, 3.0)
    assert list(index.newest_first()) == [(3.0, "c"), (2.0, "a"), (1.0, "b")]
    assert list(index.newest_first(before=(2.0, "a"))) == [(1.0, "b")]


def test_activity_keys_loaded_at_start_are_sorted_by_time_then_id() -> None:
    index = ActivityIndex()
    # A single key first, then a tie: the tie is sorted on its own.
    index.load(array("d", [2.0, 1.0, 2.0]), ["b", "z", "a"])
    assert list(index.newest_first()) == [(2.0, "b"), (2.0, "a"), (1.0, "z")]
    # Ties of three at the oldest time, of two at the newest.
    index.load(array("d", [3.0, 1.0, 2.0, 1.0, 3.0, 1.0]), ["q", "c", "x", "b", "p", "a"])
    assert list(index.newest_first()) == [
        (3.0, "q"), (3.0, "p"), (2.0, "x"), (1.0, "c"), (1.0, "b"), (1.0, "a"),
    ]
