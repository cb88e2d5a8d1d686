"""Synchronous tests of the sans-IO JSON-RPC connection (no trio)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from codexd_trio.protocol.jsonrpc import (
    INTERNAL_ERROR,
    Connection,
    ErrorResponse,
    Malformed,
    Notification,
    ProtocolError,
    Response,
    ServerRequest,
)


def _decode(line: bytes) -> dict[str, Any]:
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1, "a message must be exactly one line"
    message = json.loads(line)
    assert isinstance(message, dict)
    return message


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def test_requests_get_increasing_ids_and_become_pending() -> None:
    conn = Connection()
    first, line1 = conn.send_request("initialize", {"clientInfo": {"name": "t", "version": "1"}})
    second, line2 = conn.send_request("thread/start", {})
    assert first != second
    assert _decode(line1) == {
        "id": first,
        "method": "initialize",
        "params": {"clientInfo": {"name": "t", "version": "1"}},
    }
    assert _decode(line2)["id"] == second
    assert set(conn.pending) == {first, second}
    assert conn.pending_method(second) == "thread/start"


def test_params_are_always_sent() -> None:
    # The app-server rejects a request without `params` (codex-app-server.md §1).
    conn = Connection()
    _, request = conn.send_request("thread/loaded/list")
    assert _decode(request)["params"] == {}
    assert _decode(conn.send_notification("initialized")) == {"method": "initialized", "params": {}}


def test_newline_inside_strings_stays_on_one_line() -> None:
    conn = Connection()
    _, line = conn.send_request("turn/start", {"input": [{"type": "text", "text": "a\nb\n"}]})
    assert _decode(line)["params"]["input"][0]["text"] == "a\nb\n"


def test_response_is_correlated_and_pops_pending() -> None:
    conn = Connection()
    request_id, _ = conn.send_request("thread/start")
    incoming = conn.receive_line(_line({"id": request_id, "result": {"thread": {"id": "t1"}}}))
    assert incoming == Response(request_id, {"thread": {"id": "t1"}})
    assert request_id not in conn.pending
    # A second answer to the same id is not delivered twice.
    again = conn.receive_line(_line({"id": request_id, "result": {}}))
    assert isinstance(again, Malformed)


def test_error_response() -> None:
    conn = Connection()
    request_id, _ = conn.send_request("thread/read", {"threadId": "x"})
    line = _line({"id": request_id, "error": {"code": -32600, "message": "thread not loaded: x"}})
    expected = ErrorResponse(request_id, -32600, "thread not loaded: x", None)
    assert conn.receive_line(line) == expected
    assert not conn.pending


def test_error_response_keeps_data() -> None:
    conn = Connection()
    request_id, _ = conn.send_request("x")
    line = _line({"id": request_id, "error": {"code": -32001, "message": "busy", "data": [1]}})
    assert conn.receive_line(line) == ErrorResponse(request_id, -32001, "busy", [1])


def test_broken_error_member_still_releases_the_caller() -> None:
    conn = Connection()
    request_id, _ = conn.send_request("x")
    incoming = conn.receive_line(_line({"id": request_id, "error": "boom"}))
    assert isinstance(incoming, ErrorResponse)
    assert incoming.code == INTERNAL_ERROR
    assert not conn.pending


def test_notification_with_emitted_at() -> None:
    conn = Connection()
    line = _line({"method": "turn/started", "params": {"threadId": "t"}, "emittedAtMs": 1795489702})
    assert conn.receive_line(line) == Notification("turn/started", {"threadId": "t"}, 1795489702)
    bare = conn.receive_line(_line({"method": "initialized"}))
    assert bare == Notification("initialized", {}, None)


def test_server_request_with_colliding_id_is_not_a_response() -> None:
    # Server request ids count from 0 like ours: id 0 with a method is the server's request.
    conn = Connection()
    request_id, _ = conn.send_request("turn/start", {"threadId": "t"})
    assert request_id == 0
    approval: dict[str, Any] = {
        "id": 0,
        "method": "item/commandExecution/requestApproval",
        "params": {"itemId": "call-1"},
    }
    incoming = conn.receive_line(_line(approval))
    assert incoming == ServerRequest(0, approval["method"], {"itemId": "call-1"})
    assert 0 in conn.pending, "our request 0 is still waiting for its answer"
    assert conn.receive_line(_line({"id": 0, "result": {"turn": {}}})) == Response(0, {"turn": {}})


def test_replies_to_server_requests_echo_ids() -> None:
    conn = Connection()
    assert _decode(conn.send_result(0, {"decision": "accept"})) == {
        "id": 0,
        "result": {"decision": "accept"},
    }
    assert _decode(conn.send_result("req-7", {"decision": "decline"}))["id"] == "req-7"
    assert _decode(conn.send_error("abc", -32603, "no handler")) == {
        "id": "abc",
        "error": {"code": -32603, "message": "no handler"},
    }
    with_data = _decode(conn.send_error(3, -32603, "boom", {"why": "x"}))
    assert with_data["error"]["data"] == {"why": "x"}
    # Replies never touch our pending set.
    assert not conn.pending


def test_string_server_request_id_round_trips() -> None:
    conn = Connection()
    incoming = conn.receive_line(_line({"id": "s-1", "method": "item/x", "params": {}}))
    assert isinstance(incoming, ServerRequest)
    assert _decode(conn.send_result(incoming.id, None))["id"] == "s-1"


def test_response_to_unknown_id_is_malformed() -> None:
    conn = Connection()
    request_id, _ = conn.send_request("x")
    unknown = conn.receive_line(_line({"id": request_id + 1, "result": {}}))
    assert isinstance(unknown, Malformed)
    assert "not pending" in unknown.reason
    # A string id that looks like ours is a different id.
    as_string = conn.receive_line(_line({"id": str(request_id), "result": {}}))
    assert isinstance(as_string, Malformed)
    assert request_id in conn.pending


def test_abandoned_request_answer_is_malformed() -> None:
    conn = Connection()
    request_id, _ = conn.send_request("x")
    assert conn.abandon(request_id)
    assert not conn.abandon(request_id)
    assert isinstance(conn.receive_line(_line({"id": request_id, "result": {}})), Malformed)


def test_abandon_all() -> None:
    conn = Connection()
    ids = [conn.send_request("x")[0] for _ in range(3)]
    assert sorted(conn.abandon_all()) == ids
    assert not conn.pending


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"this is not json\n", "invalid JSON"),
        (b"\n", "empty line"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"id": 5}\n', "neither"),
        (b'{"method": 5, "params": {}}\n', "method is not a string"),
        (b'{"method": "m", "params": [1]}\n', "not an object"),
        (b'{"id": true, "method": "m", "params": {}}\n', "invalid id"),
        (b'{"id": null, "result": {}}\n', "never sent"),
        (b'{"truncated": \n', "invalid JSON"),
    ],
)
def test_malformed_lines(line: bytes, reason: str) -> None:
    conn = Connection()
    conn.send_request("x")
    incoming = conn.receive_line(line)
    assert isinstance(incoming, Malformed)
    assert incoming.line == line
    assert reason in incoming.reason
    # The connection stays usable.
    assert conn.receive_line(_line({"id": 0, "result": 1})) == Response(0, 1)


def test_line_without_newline_and_crlf_are_accepted() -> None:
    conn = Connection()
    request_id, _ = conn.send_request("x")
    assert conn.receive_line(json.dumps({"id": request_id, "result": 2}).encode() + b"\r\n") == (
        Response(request_id, 2)
    )
    assert conn.receive_line(b'{"method":"n","params":{}}') == Notification("n", {}, None)


def test_unencodable_params_raise_protocol_error_without_pending() -> None:
    conn = Connection()
    with pytest.raises(ProtocolError):
        conn.send_request("x", {"bad": object()})
    assert not conn.pending
    with pytest.raises(ProtocolError):
        conn.send_result(True, {})
    with pytest.raises(ProtocolError):
        conn.send_result(1.5, {})  # type: ignore[arg-type]
