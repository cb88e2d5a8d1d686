"""Decisions that need nobody (issue 25 §3): approval rules per node and per session, and the
per-session timeout. The rules' matching alone (fast), then codexd's broker answering a child's
request by a rule or by the session's timeout (the fake app-server asks), then the routes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from codexd_trio.base.contracts import (
    ApprovalRule,
    ApprovalRules,
    ApprovalRulesBook,
    Session,
    now_iso,
)
from codexd_trio.core.approval_rules import RuleBook
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.service import Daemon
from codexd_trio.store.documents import JsonDocument
from codexd_trio.web.routes import create_app
from tests.test_approvals import THREAD, asking_child

COMMAND = {"command": "/bin/bash -lc 'touch x'", "cwd": "/work/ws",
           "commandActions": [{"type": "unknown", "command": "touch x"}]}


def _book(tmp_path: Path, *, node: list[ApprovalRule] | None = None,
          session: ApprovalRules | None = None) -> RuleBook:
    value = ApprovalRulesBook(node=ApprovalRules(rules=node or []),
                              sessions={"s1": session} if session else {})
    return RuleBook(JsonDocument(tmp_path / "rules.json", ApprovalRulesBook, value), 300.0)


def _session(approvals: str = "clients") -> Session:
    now = now_iso()
    return Session(sessionId="s1", threadId="t1", approvals=approvals,  # type: ignore[arg-type]
                   createdAt=now, updatedAt=now)


def _rule(name: str, match: str, decision: str = "accept", **more: Any) -> ApprovalRule:
    return msgspec.convert({"name": name, "match": match, "decision": decision, **more},
                           ApprovalRule)


def test_rules_match_the_whole_command_in_order_session_first(tmp_path: Path) -> None:
    book = _book(tmp_path, node=[_rule("node-touch", r"touch .*", "decline")],
                 session=ApprovalRules(rules=[_rule("mine", r"touch x")]))
    rule = book.decide(_session(), "commandExecution", COMMAND, "item-1")
    assert rule is not None
    assert rule.name == "mine"
    # The whole command must match: a prefix is not enough ("touch x; rm -rf ~" is no "touch x").
    assert book.decide(_session(), "commandExecution",
                       {**COMMAND, "commandActions": [{"command": "touch x; rm -rf ~"}],
                        "command": "sh -c 'touch x; rm -rf ~'"}, "i") is not None  # node rule
    assert _book(tmp_path, session=ApprovalRules(rules=[_rule("mine", "touch x")])).decide(
        _session(), "commandExecution",
        {"command": "sh -c 'touch x; rm -rf ~'",
         "commandActions": [{"command": "touch x; rm -rf ~"}]}, "i") is None


def test_a_rule_decides_only_what_a_person_could(tmp_path: Path) -> None:
    book = _book(tmp_path, node=[_rule("all", ".*")])
    # A session whose approvals codexd declines at once: nobody may decide there, nor a rule.
    assert book.decide(_session("decline"), "commandExecution", COMMAND, "i") is None
    assert book.decide(None, "commandExecution", COMMAND, "i") is None
    assert book.decide(_session(), "commandExecution", COMMAND, "i") is not None
    # A decision a client could not post is no rule at all.
    with pytest.raises(msgspec.ValidationError):
        _rule("bad", ".*", "approve")


def test_cwd_prefix_and_file_changes_need_every_path_covered(tmp_path: Path) -> None:
    book = _book(tmp_path, node=[
        _rule("docs", r".*\.md", kind="fileChange", cwdPrefix="/work/ws/docs"),
        _rule("ws-ls", "ls", kind="commandExecution", cwdPrefix="/work/ws/")])
    assert book.decide(_session(), "commandExecution",
                       {"command": "ls", "cwd": "/work/ws"}, "i") is not None
    assert book.decide(_session(), "commandExecution",
                       {"command": "ls", "cwd": "/work/wsx"}, "i") is None  # not a prefix dir
    # A file change's request has no paths: the rule needs the item seen in item/started.
    assert book.decide(_session(), "fileChange", {}, "patch-1") is None
    book.saw_item({"type": "fileChange", "id": "patch-1", "changes": [
        {"path": "/work/ws/docs/a.md"}, {"path": "/work/ws/docs/b.md"}]})
    assert book.decide(_session(), "fileChange", {}, "patch-1") is not None
    book.saw_item({"type": "fileChange", "id": "patch-2", "changes": [
        {"path": "/work/ws/docs/a.md"}, {"path": "/work/ws/src/main.py"}]})
    assert book.decide(_session(), "fileChange", {}, "patch-2") is None


def test_bad_rules_are_refused_with_the_field() -> None:
    for body, field in (
        ({"rules": [{"name": "x", "match": "(", "decision": "accept"}]}, "match"),
        ({"rules": [{"name": "no spaces", "match": "a", "decision": "accept"}]}, "name"),
        ({"rules": [{"name": "a", "match": "a", "decision": "accept"}] * 2}, "rules"),
        ({"timeoutS": -1}, "timeoutS"),
        ({"timeoutDecision": "accept"}, "timeoutDecision"),
    ):
        with pytest.raises(msgspec.ValidationError, match=field):
            msgspec.convert(body, ApprovalRules)


def test_timeouts_fall_back_session_node_default(tmp_path: Path) -> None:
    book = _book(tmp_path, session=ApprovalRules(timeoutS=60))
    assert book.timeout("s1") == (60, "decline")
    assert book.timeout("other") == (300.0, "decline")
    book.set_node(ApprovalRules(timeoutS=120, timeoutDecision="cancel"))
    assert book.timeout("s1") == (60, "cancel")
    assert book.timeout(None) == (120, "cancel")


# ------------------------------------------------------------------------------------------
# codexd's broker and routes, the fake app-server asking


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(CodexdConfig(local_api_base="http://127.0.0.1:0", logs_dir=tmp_path / "logs",
                            state_dir=tmp_path / "state"))
    now = now_iso()
    d.publish(d.book.add(Session(sessionId="session-1", threadId=THREAD, approvals="clients",
                                 createdAt=now, updatedAt=now)))
    yield d
    d.close()


async def test_a_rule_answers_at_once_and_is_recorded_as_its_decider(daemon: Daemon) -> None:
    api = create_app(daemon).test_client()
    answer = await api.post("/v1/codexd/sessions/session-1/approval-rules", json={
        "rules": [{"name": "touch-ok", "kind": "commandExecution", "match": "touch x",
                   "decision": "acceptForSession"}]})
    assert answer.status_code == 200, await answer.get_data()
    view = (await answer.get_json())["data"]
    assert [r["name"] for r in view["effectiveRules"]] == ["touch-ok"]
    # Durable before the answer.
    on_disk = msgspec.json.decode((daemon.files.approval_rules.path).read_bytes(),
                                  type=ApprovalRulesBook)
    assert on_disk.sessions["session-1"].rules[0].name == "touch-ok"
    with trio.fail_after(30):
        async with asking_child(daemon) as asking:
            await asking.answered.wait()
    assert asking.reply is not None
    assert asking.reply["result"] == {"decision": "acceptForSession"}
    requested = [e for e in asking.emits if e.type == "approval.requested"]
    assert requested[0].detail["rule"] == "touch-ok"  # the notifier leaves it alone
    assert asking.approval is not None
    record = daemon.approval(asking.approval.approvalId)
    assert (record.state, record.decision, record.decidedBy) == (
        "resolved", "acceptForSession", "rule:touch-ok")


async def test_the_sessions_timeout_and_its_decision_are_kept_and_stated(daemon: Daemon) -> None:
    api = create_app(daemon).test_client()
    answer = await api.post("/v1/codexd/sessions/session-1/approval-rules",
                            json={"timeoutS": 0.2, "timeoutDecision": "cancel"})
    assert answer.status_code == 200
    with trio.fail_after(30):
        async with asking_child(daemon) as asking:
            assert asking.approval is not None
            # The request says when and how codexd answers by itself (the notification
            # states it: "cancels the turn by itself at 14:05").
            assert asking.approval.onTimeout == "cancel"
            assert asking.approval.expiresAt is not None
            assert asking.approval.expiresAt > asking.approval.createdAt
            await asking.answered.wait()
    assert asking.reply is not None
    assert asking.reply["result"] == {"decision": "cancel"}
    assert daemon.approval(asking.approval.approvalId).decidedBy == "timeout"


async def test_rule_routes_refuse_bad_input_and_unknown_sessions(daemon: Daemon) -> None:
    api = create_app(daemon).test_client()
    bad = await api.post("/v1/codexd/approval-rules",
                         json={"rules": [{"name": "x", "match": "(", "decision": "accept"}]})
    body = await bad.get_json()
    assert bad.status_code == 400
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["details"]["field"] == "$.rules[0]"
    assert "regular expression" in body["error"]["message"]
    missing = await api.get("/v1/codexd/sessions/session-nope/approval-rules")
    assert missing.status_code == 404
    node = await api.post("/v1/codexd/approval-rules", json={
        "rules": [{"name": "ls", "match": "ls", "decision": "accept"}], "timeoutS": 600})
    assert node.status_code == 200
    session = (await (await api.get("/v1/codexd/sessions/session-1/approval-rules")
                      ).get_json())["data"]
    assert session["settings"] == {"rules": [], "timeoutS": None, "timeoutDecision": None}
    assert [r["name"] for r in session["effectiveRules"]] == ["ls"]
    assert (session["effectiveTimeoutS"], session["effectiveTimeoutDecision"]) == (600,
                                                                                   "decline")
