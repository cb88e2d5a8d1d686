"""Replay = live: folding any prefix of the journal over an empty registry gives exactly the
sessions that live processing had when it wrote that prefix (issue 11: "every journal event
carries what replay needs"). Hypothesis generates the orders, including turns whose
``turn/completed`` overtakes their ``turn/start`` answer, and the turn queues (issue 23):
queued turns, starts that Codex accepts or refuses, stops, resumes, removals, moves, closes,
and a codexd restart that finds a start it cannot account for."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from codexd_trio.base.contracts import Event, QueueSnapshot, Session
from codexd_trio.core.domain import DomainError, Emit, SessionBook

SESSIONS = 2

Op = tuple[str, int, str]  # (kind, session index, variant)

ops = st.lists(
    st.tuples(
        # The queue's operations more often than closing, which ends a session's story.
        st.sampled_from(["turn_fast", "turn_slow", "message", "message", "child_exit", "close",
                         "queue", "queue", "queue", "dispatch", "dispatch", "dispatch",
                         "start_fail", "resume", "remove", "move", "move", "restart"]),
        st.integers(min_value=0, max_value=SESSIONS - 1),
        st.sampled_from(["completed", "failed", "interrupted"]),
    ),
    max_size=40,
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
        self.queues: dict[int, QueueSnapshot] = {0: QueueSnapshot()}

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
        self.queues[len(self.events)] = self.book.queue.snapshot()

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
                journal.publish(journal.book.close_session(sid))
            elif kind in ("queue", "dispatch", "start_fail", "resume", "remove", "move",
                          "restart"):
                queue_op(journal, kind, sid, variant, turns)
        except DomainError:
            pass  # refused (busy or closed session): nothing happened, nothing was emitted
        journal.checkpoint()
    return journal


def queue_op(journal: Journal, kind: str, sid: str, variant: str,
             turns: Iterator[int]) -> None:
    """One of the queue's operations, as the daemon and its dispatcher do them."""
    book = journal.book
    if kind == "queue":
        journal.publish(book.enqueue(sid, f"queued {len(journal.events)}")[2])
    elif kind in ("dispatch", "start_fail"):
        ready = book.pick_ready()
        for entry in ready:
            if entry.sessionId != sid:
                book.unpick(entry.queueId)
        head = next((e for e in ready if e.sessionId == sid), None)
        if head is None:
            return
        book.begin_turn(sid)
        journal.publish(book.mark_starting(head.queueId))
        if kind == "start_fail" or variant == "interrupted":
            # Refused by Codex, or (the "interrupted" variant) codexd dies before the answer:
            # the mark stays, and the restart below finds it.
            if kind == "start_fail":
                book.abort_turn(sid)
                stop = book.stop_queue(head.queueId, "invalid_request", "refused")
                journal.publish([stop] if stop else [])
            return
        turn_id = f"turn-{next(turns)}"
        _, accepted = book.accept_turn(sid, turn_id)
        journal.publish([book.dequeue(head.queueId, turn_id), accepted])
    elif kind == "resume":
        journal.publish(book.resume_queue(sid))
    elif kind in ("remove", "move"):
        entries = book.queue_of(sid)[0]
        if not entries:
            return
        if kind == "remove":
            target = entries[-1] if variant == "completed" else entries[0]
            journal.publish(book.remove_queued(sid, target.queueId)[1])
        else:
            # The last one to the front (or to the middle): behind a head being started.
            journal.publish(book.move_queued(sid, entries[-1].queueId,
                                             1 if variant == "failed" else 0))
    elif kind == "restart":
        # A new codexd over what the old one left: the snapshot as of now (the journal after
        # it is empty here), then what codexd_trio.core.recovery.recover_after_restart settles.
        again = SessionBook(book.all(), book.queue.snapshot())
        again.now = book.now
        journal.book = again
        journal.publish(again.fail_all_current("daemon_restarted", "restarted"))
        journal.publish(again.recover_queues())


@settings(max_examples=150, deadline=None)
@given(ops)
# The queue's whole story at least once, whatever hypothesis draws: a busy session fills its
# queue, entries move and go, a start is refused (stop, resume, stop again, removed), a start
# Codex accepts, one codexd dies in the middle of (restart), and a close cancels the rest.
@example([("turn_slow", 0, "completed"), ("queue", 0, "x"), ("queue", 0, "x"),
          ("queue", 0, "x"), ("queue", 0, "x"), ("move", 0, "completed"),
          ("move", 0, "failed"), ("remove", 0, "completed"), ("message", 0, "completed"),
          ("start_fail", 0, "x"), ("resume", 0, "x"), ("start_fail", 0, "x"),
          ("remove", 0, "failed"), ("dispatch", 0, "completed"), ("message", 0, "failed"),
          ("dispatch", 0, "interrupted"), ("restart", 0, "x"), ("resume", 0, "x"),
          ("queue", 1, "x"), ("dispatch", 1, "completed"), ("queue", 1, "x"),
          ("child_exit", 1, "x"), ("close", 1, "x"), ("close", 0, "x")])
# Found by hypothesis: closing a session whose queue was stopped kept the stop on replay.
@example([("queue", 0, "completed"), ("start_fail", 0, "completed"), ("close", 0, "completed")])
def test_replaying_any_prefix_rebuilds_what_live_processing_had(operations: list[Op]) -> None:
    journal = run_live(operations)
    for length, expected in journal.states.items():
        replayed = SessionBook()
        replayed.replay(journal.events[:length])
        assert _plain(replayed.all()) == _plain(expected), (length, operations)
        assert replayed.queue.snapshot() == journal.queues[length], (length, operations)


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
