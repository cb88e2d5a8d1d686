"""Edges of the approval broker that the mutation run (issue 29 §2, ``scripts/mutation.sh
approvals``) found no test holding: the times an approval states, what a request codexd declines
at once promises, a file-change rule finding its item, and a record nobody holds a request for.

Fast and in process (the broker with the stand-in child of ``test_approvals_unit.py``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import trio

from codexd_trio.base.contracts import ApprovalBook, ApprovalRule, ApprovalRules, ApprovalRulesBook
from codexd_trio.base.errors import ApprovalResolved
from codexd_trio.core.approval_rules import RuleBook
from codexd_trio.core.approvals import ApprovalBroker, ApprovalLedger
from codexd_trio.store.documents import JsonDocument
from tests.test_approvals_unit import FILE_CHANGE, Harness, _approval, _asked

# Every time in the API: ISO-8601 UTC with milliseconds and a "Z" (as now_iso()).
ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_a_waiting_approval_states_in_utc_when_codexd_answers_by_itself(
    tmp_path: Path,
) -> None:
    # The notification tells its person "codexd declines by itself at 14:05": createdAt and
    # expiresAt are UTC times in the API's one format, the session's timeout apart.
    h = Harness(tmp_path, timeout_s=90.0)
    async with trio.open_nursery() as nursery:
        approval = await _asked(h, nursery, 1, h.session())
        assert ISO_UTC_MS.fullmatch(approval.createdAt), approval.createdAt
        assert approval.expiresAt is not None
        assert ISO_UTC_MS.fullmatch(approval.expiresAt), approval.expiresAt
        created = datetime.fromisoformat(approval.createdAt)
        expires = datetime.fromisoformat(approval.expiresAt)
        assert created.utcoffset() == timedelta(0)
        assert expires - created == timedelta(seconds=90)
        assert approval.onTimeout == "decline"
        await h.broker.decide(approval.approvalId, "accept", "client")


async def test_an_approval_codexd_declines_at_once_promises_no_deadline(tmp_path: Path) -> None:
    # Without a session, or in one whose approvals codexd declines, nobody is waited for: the
    # record states no deadline and no answer-by-itself (a notifier would announce one).
    for n, session in enumerate((None, Harness(tmp_path).session("decline"))):
        h = Harness(tmp_path / str(n))
        await h.ask(1, session)
        (record,) = h.ledger.list()
        assert (record.state, record.decision, record.decidedBy) == (
            "resolved", "decline", "policy")
        assert (record.expiresAt, record.onTimeout) == (None, None)
        assert ISO_UTC_MS.fullmatch(record.createdAt), record.createdAt


async def test_a_file_change_rule_decides_the_item_the_request_names(tmp_path: Path) -> None:
    # A file-change request carries no paths: the rule finds them through the request's
    # itemId (the item seen in item/started). Without it the request would wait for a person.
    rule = msgspec.convert({"name": "docs", "kind": "fileChange", "match": r".*\.md",
                            "cwdPrefix": "/work/ws/docs", "decision": "accept"}, ApprovalRule)
    rules = RuleBook(JsonDocument(tmp_path / "rules.json", ApprovalRulesBook,
                                  ApprovalRulesBook(node=ApprovalRules(rules=[rule]))), 300.0)
    rules.saw_item({"type": "fileChange", "id": "patch-1",
                    "changes": [{"path": "/work/ws/docs/a.md"}]})
    h = Harness(tmp_path)
    h.broker = ApprovalBroker(h.ledger, h.emits.append, timeout_s=60.0, rules=rules)
    with trio.fail_after(10):  # a request left waiting for a person would hang the test
        await h.ask(1, h.session(), method=FILE_CHANGE,
                    params={"threadId": "thread-1", "turnId": "turn-1", "itemId": "patch-1"})
    (record,) = h.ledger.list()
    assert (record.state, record.decision, record.decidedBy) == ("resolved", "accept",
                                                                 "rule:docs")
    assert h.incarnation.client.replies == [(1, {"decision": "accept"})]
    assert h.emits[0].detail["rule"] == "docs"


async def test_a_pending_record_nobody_holds_a_request_for_is_refused_not_a_crash(
    tmp_path: Path,
) -> None:
    # A pending record the broker holds no request for (approvals.json of a codexd that was
    # killed, before the restart expires it): a decision could reach no child, so it is
    # refused as settled (409), not an AttributeError (500), and the record is left alone.
    h = Harness(tmp_path)
    h.ledger.put(_approval(1))
    with pytest.raises(ApprovalResolved) as refused:
        await h.broker.decide("approval-1", "accept", "client")
    assert refused.value.details == {"approvalId": "approval-1", "state": "pending",
                                     "decision": None}
    assert h.ledger.get("approval-1").state == "pending"
    assert h.emits == []


async def test_a_child_reusing_an_open_request_id_still_gets_each_approval_settled(
    tmp_path: Path,
) -> None:
    # JSON-RPC forbids it, but a buggy child may send a second request with the id of one
    # still open: each is its own approval, and each decision is delivered and recorded (the
    # request-id map losing the id first must not leave the second pending and its client
    # waiting forever).
    h = Harness(tmp_path)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = await _asked(h, nursery, 5, h.session())
            nursery.start_soon(lambda: h.ask(5, h.session()))
            while len(h.ledger.list("pending")) < 2:
                await trio.lowlevel.checkpoint()
            (second,) = [a for a in h.ledger.list("pending") if a.approvalId != first.approvalId]
            await h.broker.decide(first.approvalId, "accept", "client")
            decided = await h.broker.decide(second.approvalId, "decline", "client")
    assert (decided.state, decided.decision) == ("resolved", "decline")
    assert [(a.state, a.decision) for a in h.ledger.list()] == [
        ("resolved", "accept"), ("resolved", "decline")]
    assert h.incarnation.client.replies == [(5, {"decision": "accept"}),
                                            (5, {"decision": "decline"})]


def test_a_change_to_the_records_keeps_the_snapshots_stamp(tmp_path: Path) -> None:
    # approvals.json is a snapshot stamped with the event seq it reflects (issue 26); the
    # stamp is the writer's to move, not the ledger's to erase: a file without one is never
    # replayed at start, which would bring back settling an approval twice after a SIGKILL.
    path = tmp_path / "approvals.json"
    ledger = ApprovalLedger(JsonDocument(path, ApprovalBook, ApprovalBook(lastSeq=41)))
    ledger.put(_approval(1))
    ledger.resolve("approval-1", "accept", "client")
    assert ledger.doc.value.lastSeq == 41
    ledger.doc.write_now()
    on_disk = msgspec.json.decode(path.read_bytes(), type=ApprovalBook)
    assert on_disk.lastSeq == 41
    assert [(a.approvalId, a.state) for a in on_disk.approvals] == [("approval-1", "resolved")]
