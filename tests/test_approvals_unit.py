"""The approval ledger and broker in process, with a stand-in for the child's client: every
state change, what each publishes, the policy, the timeout, withdrawal, delivery, replay.

Fast (no process), so the mutation run (``scripts/mutation.sh``) can use them; the real-binary
tests (``test_approvals_real.py``) hold the same promises end to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from codexd_trio.base.contracts import Approval, ApprovalBook, Event, Session
from codexd_trio.base.errors import ApprovalNotFound, ApprovalResolved, ChildUnavailable
from codexd_trio.core.approvals import (
    KEEP_SETTLED,
    UNDELIVERED,
    ApprovalBroker,
    ApprovalLedger,
    UnsupportedServerRequest,
)
from codexd_trio.core.domain import Emit
from codexd_trio.protocol.appserver import REPLIED, ServerRequest
from codexd_trio.protocol.child import ChildGone
from codexd_trio.store.documents import JsonDocument

COMMAND = "item/commandExecution/requestApproval"
FILE_CHANGE = "item/fileChange/requestApproval"
NOW = "2026-01-01T00:00:00.000Z"


def _ledger(tmp_path: Path) -> ApprovalLedger:
    return ApprovalLedger(JsonDocument(tmp_path / "approvals.json", ApprovalBook, ApprovalBook()))


def _approval(n: int, state: str = "pending", **extra: Any) -> Approval:
    return Approval(approvalId=f"approval-{n}", sessionId="s", threadId="t", turnId="u",
                    itemId=f"i{n}", kind="commandExecution", method=COMMAND, createdAt=NOW,
                    state=state, **extra)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- the ledger


def test_put_get_list_and_not_found(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.list() == []
    ledger.put(_approval(1))
    ledger.put(_approval(2, "expired"))
    assert [a.approvalId for a in ledger.list()] == ["approval-1", "approval-2"]
    assert [a.approvalId for a in ledger.list("pending")] == ["approval-1"]
    assert [a.approvalId for a in ledger.list("expired")] == ["approval-2"]
    assert ledger.get("approval-2").state == "expired"
    # Putting the same id again replaces it (and moves it last).
    ledger.put(_approval(1, "resolved"))
    assert [(a.approvalId, a.state) for a in ledger.list()] == [
        ("approval-2", "expired"), ("approval-1", "resolved")]
    with pytest.raises(ApprovalNotFound) as missing:
        ledger.get("approval-9")
    assert missing.value.details == {"approvalId": "approval-9"}
    assert str(missing.value) == "no approval 'approval-9'"
    assert ledger.doc.dirty


def test_only_the_newest_settled_are_kept_and_every_pending_one(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.put(_approval(0))  # pending: never dropped
    for n in range(1, KEEP_SETTLED + 3):
        ledger.put(_approval(n, "resolved"))
    ids = [a.approvalId for a in ledger.list()]
    assert len(ids) == KEEP_SETTLED + 1
    assert ids[0] == "approval-0"
    assert ids[1] == "approval-3"  # 1 and 2, the oldest settled, are gone
    assert ids[-1] == f"approval-{KEEP_SETTLED + 2}"
    # Exactly KEEP_SETTLED settled ones: nothing dropped yet.
    other = _ledger(tmp_path / "other")
    for n in range(KEEP_SETTLED):
        other.put(_approval(n, "expired"))
    assert len(other.list()) == KEEP_SETTLED


def test_resolve_and_expire_record_and_describe_the_change(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.put(_approval(1))
    ledger.put(_approval(2))
    emit = ledger.resolve("approval-1", "accept", "alice")
    record = ledger.get("approval-1")
    assert (record.state, record.decision, record.decidedBy) == ("resolved", "accept", "alice")
    assert record.resolvedAt is not None
    assert emit.type == "approval.resolved"
    assert emit.level == "info"
    assert (emit.session_id, emit.thread_id, emit.turn_id) == ("s", "t", "u")
    assert emit.detail["approval"] == msgspec.to_builtins(record)
    assert "reason" not in emit.detail
    assert emit.message == "approval approval-1 resolved: accept (alice)"

    expired = ledger.expire("approval-2", "why not")
    assert expired is not None
    record = ledger.get("approval-2")
    assert (record.state, record.decision) == ("expired", None)
    assert record.resolvedAt is not None
    assert expired.type == "approval.resolved"
    assert expired.level == "warn"
    assert expired.detail["reason"] == "why not"
    assert expired.detail["approval"]["state"] == "expired"
    assert expired.message == "approval approval-2 expired: why not"
    # Settled already: expiring again changes nothing and publishes nothing.
    assert ledger.expire("approval-2", "again") is None
    assert ledger.expire("approval-1", "again") is None
    assert ledger.get("approval-1").state == "resolved"


def _event(seq: int, type_: str, record: Approval | None, **detail: Any) -> Event:
    if record is not None:
        detail["approval"] = msgspec.to_builtins(record)
    return Event(seq=seq, at=NOW, type=type_, detail=detail)


def test_replay_applies_the_approval_events_after_the_snapshot(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.put(_approval(1))  # the snapshot: 1 pending
    events = [
        _event(5, "approval.requested", _approval(2)),
        _event(6, "session.created", None, session={"sessionId": "s"}),
        _event(7, "approval.resolved", _approval(1, "resolved", decision="decline")),
        _event(8, "approval.resolved", None),  # no approval in it: not ours, skipped
        _event(9, "approval.requested", None, approval={"approvalId": 3}),  # wrong shape
        _event(10, "approval.resolved", _approval(2, "expired")),
    ]
    assert ledger.replay(events) == 3
    assert {a.approvalId: (a.state, a.decision) for a in ledger.list()} == {
        "approval-1": ("resolved", "decline"), "approval-2": ("expired", None)}
    assert ledger.replay([]) == 0


# ------------------------------------------------------------------------------- the broker


@dataclass
class FakeClient:
    """The part of AppServerClient the broker uses: ``reply``."""

    gone: bool = False
    replies: list[tuple[object, Any]] = field(default_factory=list)

    async def reply(self, request: ServerRequest, result: Any) -> None:
        await trio.lowlevel.checkpoint()
        if self.gone:
            raise ChildGone("the app-server is gone")
        self.replies.append((request.id, result))


@dataclass
class FakeIncarnation:
    client: FakeClient = field(default_factory=FakeClient)
    approval_requests: dict[int | str, str] = field(default_factory=dict)


class Harness:
    def __init__(self, tmp_path: Path, timeout_s: float = 60.0) -> None:
        self.ledger = _ledger(tmp_path)
        self.emits: list[Emit] = []
        self.broker = ApprovalBroker(self.ledger, self.emits.append, timeout_s=timeout_s)
        self.incarnation = FakeIncarnation()
        self.outcomes: dict[object, object] = {}

    def session(self, approvals: str | None = "clients") -> Session:
        return Session(sessionId="session-1", threadId="thread-1", approvals=approvals,  # type: ignore[arg-type]
                       createdAt=NOW, updatedAt=NOW)

    async def ask(self, request_id: int, session: Session | None, method: str = COMMAND,
                  params: dict[str, Any] | None = None) -> None:
        req = ServerRequest(id=request_id, method=method, params=params or {
            "threadId": "thread-1", "turnId": "turn-1", "itemId": f"item-{request_id}",
            "command": "touch x"})
        try:
            self.outcomes[request_id] = await self.broker.on_request(
                self.incarnation, req, session)  # type: ignore[arg-type]
        except UnsupportedServerRequest as exc:
            self.outcomes[request_id] = exc

    def types(self) -> list[str]:
        return [e.type for e in self.emits]


async def _asked(h: Harness, nursery: trio.Nursery, request_id: int,
                 session: Session | None, **kw: Any) -> Approval:
    nursery.start_soon(lambda: h.ask(request_id, session, **kw))
    while request_id not in h.incarnation.approval_requests:
        await trio.lowlevel.checkpoint()
    return h.ledger.get(h.incarnation.approval_requests[request_id])


async def test_a_client_decision_is_delivered_then_recorded(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    async with trio.open_nursery() as nursery:
        approval = await _asked(h, nursery, 7, h.session(), method=FILE_CHANGE)
        assert approval.state == "pending"
        assert (approval.kind, approval.method) == ("fileChange", FILE_CHANGE)
        assert (approval.sessionId, approval.threadId, approval.turnId, approval.itemId) == (
            "session-1", "thread-1", "turn-1", "item-7")
        assert approval.approvalId.startswith("approval-")
        assert h.types() == ["approval.requested"]
        assert h.emits[0].detail["approval"]["approvalId"] == approval.approvalId
        assert h.emits[0].message == f"fileChange approval requested ({approval.approvalId})"
        decided = await h.broker.decide(approval.approvalId, "acceptForSession", "bob")
        assert (decided.state, decided.decision, decided.decidedBy) == (
            "resolved", "acceptForSession", "bob")
    assert h.incarnation.client.replies == [(7, {"decision": "acceptForSession"})]
    assert h.outcomes[7] == REPLIED
    assert h.types() == ["approval.requested", "approval.resolved"]
    assert h.incarnation.approval_requests == {}
    assert h.broker._pending == {}
    # Decided once: a second decision is refused with what it was.
    with pytest.raises(ApprovalResolved) as again:
        await h.broker.decide(approval.approvalId, "decline", "bob")
    assert again.value.details["state"] == "resolved"
    assert again.value.details["decision"] == "acceptForSession"
    with pytest.raises(ApprovalNotFound):
        await h.broker.decide("approval-nope", "accept", "bob")


async def test_the_decline_policy_declines_at_once(tmp_path: Path) -> None:
    for session in (None, Harness(tmp_path).session("decline")):
        h = Harness(tmp_path / str(id(session)))
        await h.ask(1, session)
        (record,) = h.ledger.list()
        assert (record.state, record.decision, record.decidedBy) == (
            "resolved", "decline", "policy")
        assert h.incarnation.client.replies == [(1, {"decision": "decline"})]
        assert record.sessionId == (session.sessionId if session else None)


async def test_an_approval_nobody_decides_in_time_is_declined_by_the_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    h = Harness(tmp_path, timeout_s=30.0)
    started = trio.current_time()
    await h.ask(1, h.session())
    assert trio.current_time() - started == pytest.approx(30.0)
    (record,) = h.ledger.list()
    assert (record.state, record.decision, record.decidedBy) == ("resolved", "decline", "timeout")
    assert h.incarnation.client.replies == [(1, {"decision": "decline"})]


async def test_a_decision_before_the_timeout_wins(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    h = Harness(tmp_path, timeout_s=30.0)
    async with trio.open_nursery() as nursery:
        approval = await _asked(h, nursery, 1, h.session())
        await trio.sleep(29.0)
        await h.broker.decide(approval.approvalId, "accept", "client")
    assert h.incarnation.client.replies == [(1, {"decision": "accept"})]


async def test_a_withdrawn_request_expires_and_gets_no_answer(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    async with trio.open_nursery() as nursery:
        approval = await _asked(h, nursery, 3, h.session())
        h.broker.withdrawn(h.incarnation, "not-a-known-id")  # type: ignore[arg-type]
        h.broker.withdrawn(h.incarnation, None)  # type: ignore[arg-type]
        assert h.ledger.get(approval.approvalId).state == "pending"
        h.broker.withdrawn(h.incarnation, 3)  # type: ignore[arg-type]
    record = h.ledger.get(approval.approvalId)
    assert record.state == "expired"
    assert h.emits[-1].detail["reason"] == "the app-server withdrew the request"
    assert h.types() == ["approval.requested", "approval.resolved"]
    assert h.incarnation.client.replies == []
    # The child is told with an error reply (it no longer waits for one).
    assert isinstance(h.outcomes[3], UnsupportedServerRequest)
    assert str(h.outcomes[3]) == "approval expired"
    with pytest.raises(ApprovalResolved) as late:
        await h.broker.decide(approval.approvalId, "accept", "client")
    assert late.value.details["state"] == "expired"


async def test_a_decision_the_child_never_got_is_recorded_undelivered(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.incarnation.client.gone = True
    async with trio.open_nursery() as nursery:
        approval = await _asked(h, nursery, 4, h.session())
        with pytest.raises(ChildUnavailable) as gone:
            await h.broker.decide(approval.approvalId, "accept", "client")
        assert gone.value.details["state"] == "expired"
    record = h.ledger.get(approval.approvalId)
    assert (record.state, record.decision) == ("expired", None)
    assert h.emits[-1].detail["reason"] == UNDELIVERED


async def test_expire_all_settles_every_pending_approval_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    async with trio.open_nursery() as nursery:
        first = await _asked(h, nursery, 1, h.session())
        second = await _asked(h, nursery, 2, h.session())
        h.ledger.put(_approval(9, "resolved"))
        h.broker.expire_all("the codex app-server exited")
    for approval in (first, second):
        assert h.ledger.get(approval.approvalId).state == "expired"
    assert h.ledger.get("approval-9").state == "resolved"
    resolved = [e for e in h.emits if e.type == "approval.resolved"]
    assert len(resolved) == 2
    assert {e.detail["reason"] for e in resolved} == {"the codex app-server exited"}
    assert h.incarnation.client.replies == []


async def test_an_unsupported_request_is_refused_and_recorded(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.ask(5, h.session(), method="item/tool/requestUserInput",
                params={"threadId": "thread-1", "question": "?"})
    assert isinstance(h.outcomes[5], UnsupportedServerRequest)
    assert str(h.outcomes[5]) == "codexd does not handle item/tool/requestUserInput"
    assert h.ledger.list() == []
    (emit,) = h.emits
    assert emit.type == "app-server.request.declined"
    assert emit.message == "declined unsupported app-server request item/tool/requestUserInput"
    assert emit.level == "warn"
    assert emit.session_id == "session-1"
    assert emit.thread_id == "thread-1"
    assert emit.detail == {"method": "item/tool/requestUserInput",
                           "params": {"threadId": "thread-1", "question": "?"}}
    # Without a session or a string thread id.
    h2 = Harness(tmp_path / "2")
    await h2.ask(6, None, method="x/y", params={"threadId": 42})
    assert (h2.emits[0].session_id, h2.emits[0].thread_id) == (None, None)


async def test_received_shapes_that_are_not_strings_are_not_recorded_as_ids(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    await h.ask(8, None, params={"threadId": 1, "turnId": 2, "itemId": ["x"]})
    (record,) = h.ledger.list()
    assert (record.threadId, record.turnId, record.itemId) == (None, None, None)
    assert record.params == {"threadId": 1, "turnId": 2, "itemId": ["x"]}


class HeldClient(FakeClient):
    """A child that takes its time to read the answer: ``reply`` waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()
        self.replying = trio.Event()

    async def reply(self, request: ServerRequest, result: Any) -> None:
        self.replying.set()
        await self.release.wait()
        await super().reply(request, result)


async def test_a_second_decision_while_the_first_is_being_delivered_is_refused(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    held = h.incarnation.client = HeldClient()
    async with trio.open_nursery() as nursery:
        approval = await _asked(h, nursery, 1, h.session())
        nursery.start_soon(h.broker.decide, approval.approvalId, "accept", "first")
        await held.replying.wait()
        with pytest.raises(ApprovalResolved) as second:
            await h.broker.decide(approval.approvalId, "decline", "second")
        assert str(second.value) == f"approval {approval.approvalId} is already decided"
        assert second.value.details == {"approvalId": approval.approvalId, "state": "pending",
                                        "decision": None}
        held.release.set()
    record = h.ledger.get(approval.approvalId)
    assert (record.decision, record.decidedBy) == ("accept", "first")
    with pytest.raises(ApprovalResolved) as third:
        await h.broker.decide(approval.approvalId, "decline", "third")
    assert str(third.value) == f"approval {approval.approvalId} is already resolved"


async def test_a_request_withdrawn_while_its_decision_is_delivered_stays_expired(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    held = h.incarnation.client = HeldClient()
    async with trio.open_nursery() as nursery:
        approval = await _asked(h, nursery, 1, h.session())

        async def decide() -> None:
            with pytest.raises(ApprovalResolved) as late:
                await h.broker.decide(approval.approvalId, "accept", "client")
            assert str(late.value) == f"approval {approval.approvalId} is already expired"
            assert late.value.details == {"approvalId": approval.approvalId,
                                          "state": "expired", "decision": None}

        nursery.start_soon(decide)
        await held.replying.wait()
        h.broker.withdrawn(h.incarnation, 1)  # type: ignore[arg-type]
        held.release.set()
    # The expiry stands; the late delivery does not turn it into a resolution.
    assert h.ledger.get(approval.approvalId).state == "expired"
    assert [e.type for e in h.emits] == ["approval.requested", "approval.resolved"]


async def test_an_undelivered_decision_says_so(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.incarnation.client.gone = True
    async with trio.open_nursery() as nursery:
        approval = await _asked(h, nursery, 4, h.session())
        with pytest.raises(ChildUnavailable) as gone:
            await h.broker.decide(approval.approvalId, "accept", "client")
    assert str(gone.value) == (
        f"approval {approval.approvalId} could not be delivered: the codex app-server that "
        "asked is gone; the approval expired")
    assert gone.value.details == {"approvalId": approval.approvalId, "state": "expired"}
