"""Approval decisions are recorded as what happened to them: delivered to the child that asked
(``resolved``), or not (``expired``, undelivered). In-process codexd API with the fake
app-server (``tests/fake_app_server.py``) as the child that asks."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from codexd_trio.base.contracts import Approval, Session, now_iso
from codexd_trio.core.approvals import UNDELIVERED
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.domain import Emit
from codexd_trio.core.service import Daemon
from codexd_trio.core.supervisor import Incarnation
from codexd_trio.protocol.appserver import AppServerClient, ChildExited, ServerRequest
from codexd_trio.protocol.child import ChildSpec
from codexd_trio.protocol.spawn import open_app_server
from codexd_trio.web.routes import create_app

FAKE_SERVER = Path(__file__).with_name("fake_app_server.py")
THREAD = "thread-asking"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(CodexdConfig(local_api_base="http://127.0.0.1:0", logs_dir=tmp_path / "logs",
                            state_dir=tmp_path / "state"))
    # A session whose approvals wait for a client's decision, on the thread that will ask.
    now = now_iso()
    d.publish(d.book.add(Session(sessionId="session-1", threadId=THREAD, approvals="clients",
                                 createdAt=now, updatedAt=now)))
    yield d
    d.close()


class Asking:
    """A fake app-server child whose requests codexd's broker answers, as an incarnation."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.requested = trio.Event()
        self.answered = trio.Event()  # the child got its reply (or went away)
        self.emits: list[Emit] = []
        self.approval: Approval | None = None
        self.reply: dict[str, Any] | None = None
        self.client: AppServerClient | None = None
        self.incarnation: Incarnation | None = None
        publish = daemon.broker.publish

        def spy(emit: Emit) -> object:
            self.emits.append(emit)
            if emit.type == "approval.requested":
                self.approval = daemon.approvals("pending")[-1]
                self.requested.set()
            return publish(emit)

        daemon.broker.publish = spy

    async def on_server_request(self, req: ServerRequest) -> Any:
        assert self.incarnation is not None
        return await self.daemon.on_server_request(self.incarnation, req)

    async def ask(self) -> None:
        """The child asks for a command approval; records the reply it got, if any."""
        assert self.client is not None
        try:
            with suppress(ChildExited):
                answer = await self.client.request("fake/ask", {
                    "method": "item/commandExecution/requestApproval",
                    "params": {"threadId": THREAD, "turnId": "turn-1", "itemId": "item-1",
                               "command": "touch x"},
                })
                self.reply = answer["reply"]
        finally:
            self.answered.set()


@asynccontextmanager
async def asking_child(daemon: Daemon) -> AsyncIterator[Asking]:
    asking = Asking(daemon)
    spec = ChildSpec(argv=[sys.executable, str(FAKE_SERVER)])
    async with (
        open_app_server(spec, on_notification=lambda note: None,
                        on_server_request=asking.on_server_request) as client,
        trio.open_nursery() as work,
    ):
        asking.client = client
        asking.incarnation = Incarnation(number=1, client=client, work=work)
        work.start_soon(asking.ask)
        await asking.requested.wait()
        yield asking


async def test_a_decision_after_the_child_died_is_recorded_undelivered_not_accepted(
    daemon: Daemon,
) -> None:
    api = create_app(daemon).test_client()
    with trio.fail_after(30):
        async with asking_child(daemon) as asking:
            assert asking.client is not None
            assert asking.approval is not None
            approval_id = asking.approval.approvalId
            os.killpg(asking.client.process_group, signal.SIGKILL)
            await asking.client.wait_exited()
            # The child is dead; its incarnation (and the broker's task holding its request)
            # is not torn down yet. A client decides in that window.
            answer = await api.post(f"/v1/codexd/approvals/{approval_id}",
                                    json={"decision": "accept"})
            body = await answer.get_json()
            record = daemon.approval(approval_id)
            assert (record.state, record.decision) == ("expired", None)  # not "accept"
            assert answer.status_code == 503
            assert body["error"]["code"] == "child_unavailable"
            assert body["error"]["details"]["state"] == "expired"
            assert "child" in body["error"]["details"]
            resolved = [e for e in asking.emits if e.type == "approval.resolved"]
            assert [e.detail["reason"] for e in resolved] == [UNDELIVERED]
            # A second try is told it is settled.
            again = await api.post(f"/v1/codexd/approvals/{approval_id}",
                                   json={"decision": "accept"})
            assert again.status_code == 409
    assert asking.reply is None


async def test_a_delivered_decision_is_recorded_and_reaches_the_child_once(
    daemon: Daemon,
) -> None:
    api = create_app(daemon).test_client()
    with trio.fail_after(30):
        async with asking_child(daemon) as asking:
            assert asking.approval is not None
            approval_id = asking.approval.approvalId
            answer = await api.post(f"/v1/codexd/approvals/{approval_id}",
                                    json={"decision": "accept"})
            assert answer.status_code == 200
            body = await answer.get_json()
            assert body["data"]["approval"]["state"] == "resolved"
            assert body["data"]["approval"]["decision"] == "accept"
            record = daemon.approval(approval_id)
            assert (record.state, record.decision, record.decidedBy) == (
                "resolved", "accept", "client")
            await asking.answered.wait()
    assert asking.reply is not None
    assert asking.reply["result"] == {"decision": "accept"}
