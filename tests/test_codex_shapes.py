"""Whatever a newer Codex sends, codexd reads it: unknown fields, unknown enum values, new union
variants and new methods pass through the JSON-RPC layer and the session fold, and every record
codexd writes from them stays decodable (events, the session registry, the client's types).

The messages are shaped like Codex 0.171's (``agentMessage.moderation.display`` a union tagged by
``mode``, ``CodexErrorInfo`` ``"bioPolicy"``, MCP items with ``environmentId``), plus invented
values standing in for the next release.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from codexd_trio.base.contracts import (
    Event,
    Session,
    SessionRegistry,
    event_decoder,
    json_encoder,
    now_iso,
)
from codexd_trio.core.domain import Emit, SessionBook
from codexd_trio.protocol.jsonrpc import Connection, Notification, Response, ServerRequest

THREAD = "019a0000-0000-7000-8000-000000000001"
TURN = "019a0000-0000-7000-8000-0000000000aa"


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def note(method: str, params: dict[str, Any], **top: Any) -> bytes:
    return line({"method": method, "params": params, "emittedAtMs": 1795489702000, **top})


def agent_message(text: str, display: Any) -> dict[str, Any]:
    return {
        "type": "agentMessage",
        "id": "msg_1",
        "text": text,
        "phase": "finalAnswer",
        "memoryCitation": None,
        "delivery": {"channel": "someNewChannel"},
        "moderation": {"moderated": True, "display": display},
    }


def mcp_item(status: str) -> dict[str, Any]:
    return {
        "type": "mcpToolCall",
        "id": "call_1",
        "server": "docs",
        "tool": "search",
        "status": status,
        "arguments": {"q": "x"},
        "environmentId": "env-local",
        "mcpAppUi": {"resourceUri": "ui://docs/search"},
        "pluginId": None,
        "result": None,
        "error": None,
        "durationMs": 12,
    }


# A turn as Codex 0.171 (and an imagined later release) tells it.
NOTIFICATIONS: list[bytes] = [
    note("account/updated",
         {"authMode": "apikey", "planType": None, "reason": "workspaceRoutingReady"}),
    note("remoteControl/status/changed", {"status": "someNewStatus", "environmentId": None}),
    note("thread/search/partial", {"searchId": "s1", "results": []}),  # new in 0.171
    note("turn/started", {"threadId": THREAD, "turn": {"id": TURN, "status": "inProgress",
                                                       "items": [], "someNewField": 1}}),
    note("item/started", {"threadId": THREAD, "turnId": TURN, "item": mcp_item("inProgress")},
         jsonrpc="2.0"),
    note("item/completed", {"threadId": THREAD, "turnId": TURN, "item": mcp_item("someNewStatus")}),
    note("item/started", {"threadId": THREAD, "turnId": TURN,
                          "item": {"type": "someNewItem", "id": "x1", "payload": [1, 2]}}),
    note("item/completed", {"threadId": THREAD, "turnId": TURN, "item": agent_message(
        "first", {"mode": "show", "version": 1, "trustedContacts": "check",
                  "annotation": {"kind": "wellbeingHelpline", "subject": "answer"}})}),
    note("item/completed", {"threadId": THREAD, "turnId": TURN, "item": agent_message(
        "final words", {"mode": "someNewMode", "version": 2, "reason": {"kind": "future"}})}),
    note("error", {"threadId": THREAD, "turnId": TURN, "willRetry": True,
                   "error": {"message": "retrying", "codexErrorInfo": {"someNewVariant": {"a": 1}},
                             "additionalDetails": None}}),
    note("thread/status/changed", {"threadId": THREAD, "status": {"type": "someNewStatus"}},
         traceparent="00-abc-def-01"),
]


def fold(book: SessionBook, lines: list[bytes], conn: Connection | None = None) -> list[Emit]:
    conn = conn or Connection()
    emits: list[Emit] = []
    for raw in lines:
        incoming = conn.receive_line(raw)
        assert isinstance(incoming, Notification), incoming
        emits.extend(book.on_notification(incoming.method, incoming.params))
    return emits


def as_logged(emits: list[Emit]) -> list[Event]:
    """Each emit as the event log writes and reads it back."""
    events = []
    for seq, emit in enumerate(emits, start=1):
        event = Event(
            seq=seq, at=now_iso(), type=emit.type, level=emit.level, sessionId=emit.session_id,
            threadId=emit.thread_id, turnId=emit.turn_id, message=emit.message,
            detail=emit.detail,
        )
        decoded = event_decoder.decode(json_encoder.encode(event))
        assert decoded == event
        events.append(decoded)
    return events


def assert_records_decode(book: SessionBook) -> None:
    """What readers of codexd's files and API decode: the registry and the session records."""
    registry = SessionRegistry(lastSeq=1, sessions=book.all())
    msgspec.json.decode(json_encoder.encode(registry), type=SessionRegistry)
    for session in book.all():
        msgspec.convert(msgspec.to_builtins(session), Session)


def busy_book() -> SessionBook:
    now = now_iso()
    book = SessionBook([Session(sessionId="session-1", threadId=THREAD, createdAt=now,
                                updatedAt=now)])
    book.begin_turn("session-1")
    book.accept_turn("session-1", TURN)
    return book


def test_a_newer_codex_turn_folds_and_every_record_decodes() -> None:
    book = busy_book()
    completed = note("turn/completed", {
        "threadId": THREAD,
        "turn": {"id": TURN, "status": "completed", "items": [], "durationMs": 5,
                 "someNewField": {"x": 1}},
    })
    emits = fold(book, [*NOTIFICATIONS, completed])
    assert [e.type for e in emits] == [
        "app-server.account.updated",
        "app-server.remoteControl.status.changed",
        "app-server.thread.search.partial",
        "app-server.turn.started",
        "app-server.item.started",
        "app-server.item.completed",
        "app-server.item.started",
        "app-server.item.completed",
        "app-server.item.completed",
        "app-server.error",
        "app-server.thread.status.changed",
        "app-server.turn.completed",
    ]
    # Codex's params are carried verbatim, unknown members included.
    mcp = emits[5].detail["item"]
    assert mcp["environmentId"] == "env-local"
    assert mcp["status"] == "someNewStatus"
    assert emits[8].detail["item"]["moderation"]["display"]["mode"] == "someNewMode"
    assert emits[9].level == "warn"
    assert all(e.session_id == "session-1" for e in emits[3:])
    as_logged(emits)

    session = book.get("session-1")
    assert session.currentTurnId is None
    assert session.lastTurnStatus == "completed"
    assert session.lastTurnOutput == "final words"  # the last agentMessage, moderation or not
    assert_records_decode(book)


def test_bio_policy_and_future_error_variants_fail_the_turn_with_their_name() -> None:
    book = busy_book()
    emits = fold(book, [note("turn/completed", {"threadId": THREAD, "turn": {
        "id": TURN, "status": "failed", "items": [],
        "error": {"message": "This request was blocked.", "codexErrorInfo": "bioPolicy",
                  "additionalDetails": None, "misalignment": None},
    }})])
    assert [e.type for e in emits] == ["app-server.turn.completed", "turn.failed"]
    session = book.get("session-1")
    assert session.lastTurnStatus == "failed"
    assert session.lastTurnError is not None
    assert (session.lastTurnError.code, session.lastTurnError.message) == (
        "bioPolicy", "This request was blocked.")
    assert_records_decode(book)
    as_logged(emits)


@pytest.mark.parametrize(
    ("info", "code"),
    [
        ("someNewPolicy", "someNewPolicy"),
        ({"httpConnectionFailed": {"httpStatusCode": 502}}, "httpConnectionFailed"),
        ({"someNewVariant": {"extra": True}}, "someNewVariant"),
        ({"type": "taggedVariant", "detail": 1}, "taggedVariant"),
        (None, "turn_failed"),
        (42, "turn_failed"),
    ],
)
def test_any_codex_error_info_becomes_a_code(info: Any, code: str) -> None:
    book = busy_book()
    fold(book, [note("turn/completed", {"threadId": THREAD, "turn": {
        "id": TURN, "status": "failed", "error": {"message": "no", "codexErrorInfo": info}}})])
    error = book.get("session-1").lastTurnError
    assert error is not None
    assert error.code == code


@pytest.mark.parametrize(
    ("turn", "recorded"),
    [
        ({"status": "cancelled"}, "completed"),
        ({"status": "cancelled", "error": {"message": "stopped"}}, "failed"),
        ({"status": "inProgress"}, "completed"),
        ({}, "completed"),
        ({"status": {"type": "someNewObject"}}, "completed"),
    ],
)
def test_an_unknown_turn_status_never_reaches_a_session_record(
    turn: dict[str, Any], recorded: str
) -> None:
    book = busy_book()
    emits = fold(book, [note("turn/completed", {"threadId": THREAD,
                                                "turn": {"id": TURN, "items": [], **turn}})])
    session = book.get("session-1")
    assert session.currentTurnId is None
    assert session.lastTurnStatus == recorded
    assert emits[0].detail["turn"] == {"id": TURN, "items": [], **turn}  # Codex's own words
    assert_records_decode(book)
    # Replaying the log rebuilds the same state.
    replayed = SessionBook([msgspec.structs.replace(
        session, currentTurnId=None, lastTurnStatus=None, lastTurnError=None)])
    replayed.begin_turn("session-1")
    replayed.accept_turn("session-1", TURN)
    replayed.replay(as_logged(emits))
    assert replayed.get("session-1").lastTurnStatus == recorded


def test_responses_and_server_requests_with_unknown_members() -> None:
    conn = Connection()
    request_id, _ = conn.send_request("thread/start", {})
    result = {
        "thread": {"id": THREAD, "status": {"type": "idle"}, "someNewField": [1]},
        "sandbox": {"type": "someNewSandbox", "anything": True},
        "approvalPolicy": {"granular": {"sandbox_approval": True}},
        "multiAgentMode": "someNewMode",
    }
    got = conn.receive_line(line({"id": request_id, "result": result, "jsonrpc": "2.0",
                                  "someNewTopLevel": 1}))
    assert got == Response(request_id, result)

    approval = {"threadId": THREAD, "turnId": TURN, "itemId": "call_1", "command": "touch x",
                "availableDecisions": ["accept", "someNewDecision"],
                "environmentId": "env-local", "someNewField": {"a": 1}}
    got = conn.receive_line(line({"id": 0, "method": "item/commandExecution/requestApproval",
                                  "params": approval, "traceparent": "x"}))
    assert got == ServerRequest(0, "item/commandExecution/requestApproval", approval)

    # A notification's emittedAtMs in a shape we do not expect is dropped, not fatal.
    got = conn.receive_line(line({"method": "warning", "params": {"message": "m"},
                                  "emittedAtMs": 1.5e12}))
    assert got == Notification("warning", {"message": "m"}, None)
