"""Replay = live: folding any prefix of the journal over an empty registry gives exactly the
sessions that live processing had when it wrote that prefix (issue 11: "every journal event
carries what replay needs"). Hypothesis generates the orders, including turns whose
``turn/completed`` overtakes their ``turn/start`` answer."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from codexd_trio.base.contracts import Event, Session
from codexd_trio.core.domain import DomainError, Emit, SessionBook

SESSIONS = 2

Op = tuple[str, int, str]  # (kind, session index, variant)

ops = st.lists(
    st.tuples(
        st.sampled_from(["turn_fast", "turn_slow", "message", "child_exit", "close"]),
        st.integers(min_value=0, max_value=SESSIONS - 1),
        st.sampled_from(["completed", "failed", "interrupted"]),
    ),
    max_size=25,
)


class Journal:
    """Live processing: a book, the events it emitted, and its state after each operation."""

    def __init__(self) -> None:
        self.clock = itertools.count(1)
        self.now = "2026-11-30T00:00:00.000Z"
        self.book = SessionBook()
        self.book.now = lambda: self.now
        self.events: list[Event] = []
        self.states: dict[int, list[Session]] = {0: []}

    def tick(self) -> None:
        n = next(self.clock)
        self.now = f"2026-11-30T00:{n // 60:02d}:{n % 60:02d}.000Z"

    def publish(self, emits: list[Emit] | Emit) -> None:
        for emit in emits if isinstance(emits, list) else [emits]:
            self.events.append(
                Event(
                    seq=len(self.events) + 1, at=self.now, type=emit.type, level=emit.level,
                    sessionId=emit.session_id, threadId=emit.thread_id, turnId=emit.turn_id,
                    message=emit.message, detail=emit.detail,
                )
            )

    def checkpoint(self) -> None:
        self.states[len(self.events)] = self.book.all()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.publish(self.book.on_notification(method, params))


def _turn(turn_id: str, status: str, text: str | None) -> dict[str, Any]:
    turn: dict[str, Any] = {"id": turn_id, "status": status, "items": []}
    if text is not None:
        turn["items"] = [{"type": "agentMessage", "id": f"m-{turn_id}", "text": text}]
    if status == "failed":
        turn["error"] = {"message": "model said no", "codexErrorInfo": "other"}
    return turn


def run_live(operations: list[Op]) -> Journal:
    journal = Journal()
    turns = itertools.count(1)
    for index in range(SESSIONS):
        journal.tick()
        session = Session(
            sessionId=f"session-{index}", threadId=f"thread-{index}", createdAt=journal.now,
            updatedAt=journal.now,
        )
        journal.publish(journal.book.add(session))
        journal.checkpoint()
    for kind, index, variant in operations:
        journal.tick()
        sid, thread = f"session-{index}", f"thread-{index}"
        current = journal.book.get(sid).currentTurnId
        try:
            if kind in ("turn_fast", "turn_slow"):
                journal.book.begin_turn(sid)
                turn_id = f"turn-{next(turns)}"
                done = {"threadId": thread, "turn": _turn(turn_id, variant, f"answer {turn_id}")}
                if kind == "turn_fast":
                    # turn/completed arrives before codexd has processed the turn/start answer.
                    journal.notify("turn/completed", done)
                    _, emit = journal.book.accept_turn(sid, turn_id)
                    journal.publish(emit)
                else:
                    _, emit = journal.book.accept_turn(sid, turn_id)
                    journal.publish(emit)
            elif kind == "message" and current is not None:
                item = {"type": "agentMessage", "id": f"m2-{current}", "text": f"live {current}"}
                journal.notify("item/completed",
                               {"threadId": thread, "turnId": current, "item": item})
                journal.notify("turn/completed",
                               {"threadId": thread, "turn": _turn(current, variant, None)})
            elif kind == "child_exit":
                journal.publish(journal.book.fail_all_current("child_exited", "gone"))
            elif kind == "close":
                journal.publish(journal.book.close(sid))
        except DomainError:
            pass  # refused (busy or closed session): nothing happened, nothing was emitted
        journal.checkpoint()
    return journal


@settings(max_examples=150, deadline=None)
@given(ops)
def test_replaying_any_prefix_rebuilds_what_live_processing_had(operations: list[Op]) -> None:
    journal = run_live(operations)
    for length, expected in journal.states.items():
        replayed = SessionBook()
        replayed.replay(journal.events[:length])
        assert _plain(replayed.all()) == _plain(expected), (length, operations)


def test_a_turn_that_completed_before_its_start_answer_replays_as_completed() -> None:
    journal = run_live([("turn_fast", 0, "completed")])
    accepted = [e for e in journal.events if e.type == "turn.accepted"]
    assert accepted[0].detail["settled"]["status"] == "completed"
    replayed = SessionBook()
    replayed.replay(journal.events)
    session = replayed.get("session-0")
    assert (session.lastTurnStatus, session.currentTurnId) == ("completed", None)
    assert session.lastTurnOutput == "answer turn-1"


def _plain(sessions: list[Session]) -> list[dict[str, Any]]:
    return sorted(
        (msgspec.to_builtins(s) for s in sessions), key=lambda s: str(s["sessionId"])
    )
