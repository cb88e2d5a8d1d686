"""codexd's API in-process (Quart test client, no child): the error paths a live child hides."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import trio
import trio.testing

from codexd_trio.base.contracts import Session, SessionRegistry
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.domain import Emit
from codexd_trio.core.recovery import replay_journal
from codexd_trio.core.service import Daemon, UnsupportedServerRequest
from codexd_trio.core.supervisor import Incarnation
from codexd_trio.protocol.appserver import REPLIED, ServerRequest
from codexd_trio.store.documents import read_document
from codexd_trio.web.routes import create_app
from tests.full_disk import FullDisk


def _incarnation(client: object = None) -> Incarnation:
    # Declining an unsupported request touches neither the client nor the work nursery.
    return Incarnation(number=1, client=cast(Any, client), work=cast(Any, None))


class _Replies:
    """The client half the approval broker uses: it answers a request itself, to know that
    the answer reached the child."""

    def __init__(self) -> None:
        self.sent: list[tuple[ServerRequest, Any]] = []

    async def reply(self, request: ServerRequest, result: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append((request, result))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(
        CodexdConfig(
            local_api_base="http://127.0.0.1:0",
            logs_dir=tmp_path / "logs",
            state_dir=tmp_path / "state",
        )
    )
    yield d
    d.close()


async def test_a_bug_is_a_json_500_with_a_correlation_id_in_the_log(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(daemon, "status", broken)
    client = create_app(daemon).test_client()
    with caplog.at_level(logging.ERROR, logger="codexd.api"):
        response = await client.get("/v1/codexd/status")
    assert response.status_code == 500
    body = await response.get_json()
    assert body["ok"] is False
    assert body["error"]["code"] == "internal_error"
    correlation = body["error"]["details"]["correlationId"]
    assert correlation in caplog.text
    assert "simulated bug" in caplog.text


async def test_without_a_child_readyz_and_work_are_503_but_health_is_fine(daemon: Daemon) -> None:
    client = create_app(daemon).test_client()
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    body = await ready.get_json()
    assert body["error"]["code"] == "child_unavailable"
    assert body["error"]["details"]["child"]["status"] == "stopped"
    created = await client.post("/v1/codexd/sessions", json={})
    assert created.status_code == 503
    assert (await created.get_json())["error"]["code"] == "child_unavailable"
    # Nothing was recorded for the refused request.
    listed = await (await client.get("/v1/codexd/sessions")).get_json()
    assert listed["data"]["sessions"] == []


async def test_idempotency_key_must_be_printable_and_bounded(daemon: Daemon) -> None:
    client = create_app(daemon).test_client()
    response = await client.post(
        "/v1/codexd/sessions", json={}, headers={"Idempotency-Key": "k" * 300}
    )
    assert response.status_code == 400
    body = await response.get_json()
    assert body["error"]["details"]["field"] == "Idempotency-Key"


async def test_unsupported_server_requests_are_declined_and_logged(daemon: Daemon) -> None:
    request = ServerRequest(
        id=7, method="item/tool/requestUserInput", params={"threadId": "t-1", "questions": []}
    )
    with pytest.raises(UnsupportedServerRequest):
        await daemon.on_server_request(_incarnation(), request)
    await daemon.log.flush()  # readers see durable events only
    (event,) = [e for e in daemon.hub.recent() if e.type == "app-server.request.declined"]
    assert event.level == "warn"
    assert event.detail["method"] == "item/tool/requestUserInput"
    assert daemon.approvals() == []  # not an approval: nothing to decide


async def test_sessions_are_listed_in_pages_oldest_first_with_a_status_filter(
    daemon: Daemon,
) -> None:
    for n in range(5):
        daemon.book.add(Session(sessionId=f"session-{n}", threadId=f"thread-{n}",
                                createdAt="2026-11-30T00:00:00.000Z",
                                updatedAt="2026-11-30T00:00:00.000Z"))
    daemon.book.close("session-1")
    daemon.book.close("session-3")
    client = create_app(daemon).test_client()

    async def page(query: str) -> dict[str, Any]:
        response = await client.get(f"/v1/codexd/sessions{query}")
        body: dict[str, Any] = await response.get_json()
        return body

    first = (await page("?limit=2"))["data"]
    assert [s["sessionId"] for s in first["sessions"]] == ["session-0", "session-1"]
    second = (await page(f"?limit=2&cursor={first['nextCursor']}"))["data"]
    assert [s["sessionId"] for s in second["sessions"]] == ["session-2", "session-3"]
    last = (await page(f"?limit=2&cursor={second['nextCursor']}"))["data"]
    assert [s["sessionId"] for s in last["sessions"]] == ["session-4"]
    assert last["nextCursor"] is None
    closed = (await page("?status=closed"))["data"]
    assert [s["sessionId"] for s in closed["sessions"]] == ["session-1", "session-3"]
    # The last page of a filtered list says so, even with sessions after it that do not match.
    closed = (await page("?status=closed&limit=1"))["data"]
    closed = (await page(f"?status=closed&limit=1&cursor={closed['nextCursor']}"))["data"]
    assert [s["sessionId"] for s in closed["sessions"]] == ["session-3"]
    assert closed["nextCursor"] is None
    recent_closed = (await page("?order=activity&status=closed&limit=2"))["data"]
    assert [s["sessionId"] for s in recent_closed["sessions"]] == ["session-3", "session-1"]
    assert recent_closed["nextCursor"] is None
    everything = (await page(""))["data"]
    assert len(everything["sessions"]) == 5
    assert everything["nextCursor"] is None
    # Closed sessions stay readable by id.
    assert (await client.get("/v1/codexd/sessions/session-1")).status_code == 200
    # Newest activity first: the closed ones were touched last.
    recent = (await page("?order=activity&limit=2"))["data"]
    assert [s["sessionId"] for s in recent["sessions"]] == ["session-3", "session-1"]
    rest = (await page(f"?order=activity&limit=5&cursor={recent['nextCursor']}"))["data"]
    assert [s["sessionId"] for s in rest["sessions"]] == ["session-4", "session-2", "session-0"]
    assert rest["nextCursor"] is None
    for bad in ("?cursor=garbage!", "?limit=0", "?status=maybe", "?limit=x", "?order=random",
                f"?order=activity&cursor={first['nextCursor']}",  # another order's cursor
                f"?cursor={recent['nextCursor']}"):
        body = await page(bad)
        assert body["error"]["code"] == "invalid_request", bad
    status = daemon.status().snapshot.sessions
    assert (status.count, status.activeCount) == (5, 3)


async def test_readyz_reports_an_event_log_that_cannot_be_written_until_it_recovers(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(daemon.log, monkeypatch)
    client = create_app(daemon).test_client()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.log.run)
            for _ in range(3):
                daemon.publish(Emit("test.event", "nothing can be written"))
            await disk.retried.wait()
            ready = await client.get("/readyz")
            body = await ready.get_json()
            assert ready.status_code == 503
            assert body["error"]["code"] == "store_unavailable"
            assert "No space left on device" in body["error"]["message"]
            assert body["error"]["details"]["eventsWaiting"] == 3
            assert daemon.hub.recent() == []  # nothing is seen before it is durable
            disk.failing = False
            await daemon.log.wait_durable(3)  # the writer's retry lands
            body = await (await client.get("/readyz")).get_json()
            assert body["error"]["code"] == "child_unavailable"  # the log is fine again
            assert [e.type for e in daemon.hub.recent()] == ["test.event"] * 3
            nursery.cancel_scope.cancel()


async def test_the_registry_snapshot_never_claims_events_the_log_has_not_made_durable(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the chaos harness (a turn accepted, then never ended in the journal): on a disk
    that refused the event log's commits but not the registry's, the snapshot was written with
    the effects of events that were not durable; SIGKILLed then, codexd kept the snapshot (it
    was "ahead of the event log") and those events — a turn's end — were never journaled."""
    disk = FullDisk(daemon.log, monkeypatch)
    writes: list[tuple[int, int]] = []
    write = daemon.files.registry._write_version

    def spy(encode: Any, version: int) -> None:  # the registry's writer thread
        data = encode()
        writes.append((msgspec.json.decode(data)["lastSeq"], daemon.log.durable_seq))
        write(lambda: data, version)

    monkeypatch.setattr(daemon.files.registry, "_write_version", spy)
    session = Session(sessionId="session-0", threadId="thread-0",
                      createdAt="2026-12-07T00:00:00.000Z", updatedAt="2026-12-07T00:00:00.000Z")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.log.run)
            daemon.publish(daemon.book.add(session))
            daemon._save_registry()
            await disk.retried.wait()  # the log cannot make session.created durable
            flushed = trio.Event()

            async def flush() -> None:
                await daemon.files.registry.flush()
                flushed.set()

            nursery.start_soon(flush)
            await trio.testing.wait_all_tasks_blocked()
            disk.failing = False  # the log's next retry (a second away) lands
            await flushed.wait()
            nursery.cancel_scope.cancel()
    assert writes
    assert all(claimed <= durable for claimed, durable in writes), writes
    saved = read_document(daemon.files.registry.path, SessionRegistry)
    assert saved is not None
    assert [s.sessionId for s in saved.sessions] == ["session-0"]


async def test_an_approval_request_with_unexpected_shapes_is_still_recorded(
    daemon: Daemon,
) -> None:
    request = ServerRequest(
        id=8, method="item/commandExecution/requestApproval",
        params={"threadId": "t-1", "turnId": 5, "itemId": ["x"], "command": "ls"},
    )
    # No session owns the thread: the default policy declines at once.
    replies = _Replies()
    assert await daemon.on_server_request(_incarnation(replies), request) is REPLIED
    assert replies.sent == [(request, {"decision": "decline"})]
    (approval,) = daemon.approvals()
    assert (approval.turnId, approval.itemId, approval.decision) == (None, None, "decline")
    assert (approval.state, approval.decidedBy) == ("resolved", "policy")
    encoded = msgspec.json.encode(daemon.files.approvals.value)
    assert msgspec.json.decode(encoded, type=type(daemon.files.approvals.value))


async def test_a_failing_notification_fold_is_recorded_not_swallowed(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from codexd_trio.protocol.appserver import Notification

    daemon.book.add(Session(sessionId="session-0", threadId="thread-0",
                            createdAt="2026-11-30T00:00:00.000Z",
                            updatedAt="2026-11-30T00:00:00.000Z"))
    await daemon.files.registry.flush()

    def half_done(method: str, params: dict[str, Any]) -> list[Emit]:
        daemon.book.close("session-0")  # the fold changed something, then hit a bug
        raise KeyError("a bug")

    monkeypatch.setattr(daemon.book, "on_notification", half_done)
    with caplog.at_level(logging.ERROR, logger="codexd"):
        daemon.on_notification(_incarnation(), Notification(method="turn/completed",
                                                             params={"threadId": "thread-0"}))
    await daemon.log.flush()
    (event,) = [e for e in daemon.hub.recent() if e.type == "app-server.notification.unhandled"]
    assert (event.level, event.detail["method"]) == ("error", "turn/completed")
    assert "folding turn/completed failed" in caplog.text
    assert daemon.files.registry.dirty  # the change the fold made goes to the snapshot
    await daemon.files.registry.flush()
    after = read_document(daemon.files.registry.path, SessionRegistry)
    assert after is not None
    assert [s.status for s in after.sessions] == ["closed"]


async def test_a_409_is_not_hidden_by_a_503_while_the_child_is_down(daemon: Daemon) -> None:
    # No child runs in this daemon: every request that needs one is 503 child_unavailable. A
    # turn on a closed session, or a steer with no turn, is the caller's mistake all the same.
    daemon.book.add(Session(sessionId="session-0", threadId="thread-0",
                            createdAt="2026-11-30T00:00:00.000Z",
                            updatedAt="2026-11-30T00:00:00.000Z"))
    daemon.book.add(Session(sessionId="session-1", threadId="thread-1",
                            createdAt="2026-11-30T00:00:00.000Z",
                            updatedAt="2026-11-30T00:00:00.000Z"))
    daemon.book.close("session-0")
    client = create_app(daemon).test_client()

    async def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = await client.post(path, json=body)
        data: dict[str, Any] = await response.get_json()
        return response.status_code, data["error"]

    status, error = await post("/v1/codexd/turn", {"sessionId": "session-0", "input": "hi"})
    assert (status, error["code"]) == (409, "session_closed")
    status, error = await post("/v1/codexd/turn/steer", {"sessionId": "session-1", "input": "x"})
    assert (status, error["code"]) == (409, "no_active_turn")
    status, error = await post("/v1/codexd/turn", {"sessionId": "session-1", "input": "hi"})
    assert (status, error["code"]) == (503, "child_unavailable")
    assert error["details"]["child"]["status"] == daemon.child.status


async def test_a_snapshot_ahead_of_the_log_is_repaired_on_disk_before_new_events(
    tmp_path: Path,
) -> None:
    # The log lost its tail after the snapshot was written (seq 7 claimed, 0 on disk). New
    # events reuse seqs 1..7: the repaired snapshot must be on disk before any of them, or a
    # crash right after makes the next start replay from 8 and skip them.
    state = tmp_path / "state" / "codexd"
    state.mkdir(parents=True)
    (state / "session-registry.json").write_bytes(
        msgspec.json.encode(SessionRegistry(lastSeq=7)))
    d = Daemon(CodexdConfig(local_api_base="http://127.0.0.1:0", logs_dir=tmp_path / "logs",
                            state_dir=tmp_path / "state"))
    try:
        await replay_journal(d)
        on_disk = read_document(state / "session-registry.json", SessionRegistry)
        assert on_disk is not None
        assert on_disk.lastSeq == 0
    finally:
        d.close()


async def test_a_websocket_to_an_unknown_path_is_a_json_404(daemon: Daemon) -> None:
    # The error handlers read `request`, which a websocket does not have: the answer was a 500
    # with a traceback in the log instead of the 404 envelope.
    from quart.testing import WebsocketResponseError

    client = create_app(daemon).test_client()
    refused: list[WebsocketResponseError] = []
    try:
        async with client.websocket("/v1/codexd/nowhere") as ws:
            await ws.receive()
    except* WebsocketResponseError as group:
        refused.extend(e for e in group.exceptions if isinstance(e, WebsocketResponseError))
    (refusal,) = refused
    response = refusal.response
    assert response.status_code == 404
    body = await response.get_json()
    assert body["error"]["code"] == "not_found"
    assert body["error"]["details"] == {"method": "WS", "path": "/v1/codexd/nowhere"}


async def test_a_turn_without_input_or_with_an_empty_one_names_the_input_field(
    daemon: Daemon,
) -> None:
    # No child is needed: the body is checked before anything else. An empty input used to run
    # a turn; a missing one was reported at "$".
    daemon.book.add(Session(sessionId="session-1", threadId="thread-1",
                            createdAt="2026-11-30T00:00:00.000Z",
                            updatedAt="2026-11-30T00:00:00.000Z"))
    client = create_app(daemon).test_client()
    for path in ("/v1/codexd/turn", "/v1/codexd/turn/steer"):
        for body in ({"sessionId": "session-1"}, {"sessionId": "session-1", "input": ""},
                     {"sessionId": "session-1", "input": "  \n\t"},
                     {"sessionId": "session-1", "input": []}):
            response = await client.post(path, json=body)
            error = (await response.get_json())["error"]
            assert (response.status_code, error["code"]) == (400, "invalid_request"), (path, body)
            assert error["details"] == {"field": "$.input", "path": "$.input"}, (path, body)
            assert "input" in error["message"]
    response = await client.post("/v1/codexd/turn", json={"input": "hi"})
    assert (await response.get_json())["error"]["details"]["field"] == "$.sessionId"
    # A real input gets past the body check (to the missing child here).
    response = await client.post("/v1/codexd/turn", json={"sessionId": "session-1",
                                                          "input": "hi"})
    assert response.status_code == 503


async def test_a_limit_above_the_maximum_is_refused_naming_it(daemon: Daemon) -> None:
    client = create_app(daemon).test_client()
    for path in ("/v1/codexd/sessions", "/v1/codexd/events"):
        for limit in ("5000", "1001"):
            response = await client.get(f"{path}?limit={limit}")
            error = (await response.get_json())["error"]
            assert (response.status_code, error["code"]) == (400, "invalid_request"), path
            assert error["details"] == {"field": "limit", "max": 1000}, path
            assert "1000" in error["message"]
        assert (await client.get(f"{path}?limit=1000")).status_code == 200, path
