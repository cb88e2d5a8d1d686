"""codexd's fast path for ``POST /v1/codexd/turn`` (issue 27): the ordinary turn request is
answered in front of Quart, and its every answer — the 202 and each error — is the one Quart's
route gives. In-process (Quart's test client goes through the same ASGI middlewares), with the
daemon's turn verbs replaced: what is compared is the web layer, not Codex."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from codexd_trio.base.contracts import Session, TurnRequest
from codexd_trio.base.errors import TurnInProgress
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.service import Daemon, TurnOutcome
from codexd_trio.protocol.appserver import AppServerError
from codexd_trio.store.documents import StoreError
from codexd_trio.web import turns
from codexd_trio.web.routes import create_app

SESSION = Session(sessionId="session-1", threadId="thread-1",
                  createdAt="2026-12-07T00:00:00.000Z", updatedAt="2026-12-07T00:00:00.000Z")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(CodexdConfig(local_api_base="http://127.0.0.1:0", logs_dir=tmp_path / "logs",
                            state_dir=tmp_path / "state"))
    d.book.add(SESSION)
    yield d
    d.close()


def _starts_with(daemon: Daemon, monkeypatch: pytest.MonkeyPatch,
                 outcome: Callable[[TurnRequest], Awaitable[tuple[Session, str]]]) -> list[str]:
    """Replace the daemon's turn start; returns the inputs it was asked to start."""
    seen: list[str] = []

    async def start_turn(req: TurnRequest) -> tuple[Session, str]:
        seen.append(str(req.input))
        return await outcome(req)

    monkeypatch.setattr(daemon, "start_turn", start_turn)
    return seen


async def _started(req: TurnRequest) -> tuple[Session, str]:
    await trio.lowlevel.checkpoint()
    return SESSION, "turn-7"


def _quart_answers(app: Any) -> list[str]:
    """The turn requests Quart's route answered (the fast path's never reach it)."""
    seen: list[str] = []
    route = app.view_functions["start_turn"]

    async def spy() -> Any:
        seen.append("start_turn")
        return await route()

    app.view_functions["start_turn"] = spy
    return seen


async def test_an_ordinary_turn_request_is_answered_in_front_of_quart(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    started = _starts_with(daemon, monkeypatch, _started)
    app = create_app(daemon)
    quart = _quart_answers(app)
    client = app.test_client()
    response = await client.post("/v1/codexd/turn", json={"sessionId": "session-1", "input": "hi"},
                                 headers={"X-Request-Id": "req-turn-1"})
    assert response.status_code == 202
    data = (await response.get_json())["data"]
    assert (data["accepted"], data["turnId"], data["session"]["sessionId"]) == (
        True, "turn-7", "session-1")
    assert response.headers["x-request-id"] == "req-turn-1"
    assert response.headers["content-type"] == "application/json"
    assert started == ["hi"]
    assert quart == []
    # Observe still sees it under its route: the metrics and the access line name it.
    metrics = await (await client.get("/metrics")).get_data(as_text=True)
    assert 'route="/v1/codexd/turn"' in metrics
    # A keyed request is recorded for replay by the idempotency store: Quart's route answers.
    keyed = await client.post("/v1/codexd/turn", json={"sessionId": "session-1", "input": "again"},
                              headers={"Idempotency-Key": "k-1"})
    assert keyed.status_code == 202
    assert quart == ["start_turn"]
    replayed = await client.post("/v1/codexd/turn", json={"sessionId": "session-1",
                                                          "input": "again"},
                                 headers={"Idempotency-Key": "k-1"})
    assert replayed.headers["Idempotency-Replayed"] == "true"
    assert started == ["hi", "again"]


def _raising(exc: Exception) -> Callable[[TurnRequest], Awaitable[tuple[Session, str]]]:
    async def outcome(req: TurnRequest) -> tuple[Session, str]:
        await trio.lowlevel.checkpoint()
        raise exc

    return outcome


@pytest.mark.parametrize(("body", "failure"), [
    (b'{"sessionId": "session-1", "input": "hi"}', None),
    (b'{"sessionId": "session-1", "input": "hi", "whenBusy": "queue"}', None),
    (b"", None),
    (b"{not json", None),
    (b'{"sessionId": "session-1"}', None),
    (b'{"sessionId": "session-1", "input": "hi", "extra": 1}', None),
    (b'{"sessionId": "session-1", "input": "hi"}',
     TurnInProgress("session-1 already runs turn-6", activeTurnId="turn-6")),
    (b'{"sessionId": "session-1", "input": "hi"}',
     AppServerError("turn/start", -32602, "bad input item")),
    (b'{"sessionId": "session-1", "input": "hi"}',
     AppServerError("turn/start", -32000, "overloaded")),
    (b'{"sessionId": "session-1", "input": "hi"}',
     StoreError(Path("/state/session-registry.json"), "no space left on device")),
    (b'{"sessionId": "session-1", "input": "hi"}', RuntimeError("simulated bug")),
], ids=["started", "queued", "empty", "not-json", "no-input", "unknown-field", "conflict",
        "codex-refused-input", "codex-refused", "disk-full", "bug"])
async def test_every_answer_is_the_one_quarts_route_gives(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        body: bytes, failure: Exception | None) -> None:
    _starts_with(daemon, monkeypatch, _started if failure is None else _raising(failure))

    async def queued(req: TurnRequest) -> Any:
        session, turn_id = await daemon.start_turn(req)
        return TurnOutcome(session, turn_id=turn_id)

    monkeypatch.setattr(daemon, "turn_or_queue", queued)
    answers = []
    for fast in (True, False):
        if not fast:  # the same app without its fast path: every request is Quart's
            async def through(self: turns.TurnFastPath, scope: Any, receive: Any,
                              send: Any) -> None:
                await self.app(scope, receive, send)

            monkeypatch.setattr(turns.TurnFastPath, "__call__", through)
        app = create_app(daemon)
        quart = _quart_answers(app)
        with caplog.at_level(logging.ERROR, logger="codexd.api"):
            response = await app.test_client().post(
                "/v1/codexd/turn", data=body, headers={"Content-Type": "application/json"})
        assert quart == ([] if fast else ["start_turn"])
        answer = await response.get_json()
        if failure is not None and isinstance(failure, RuntimeError):
            correlation = answer["error"]["details"].pop("correlationId")
            assert correlation in caplog.text  # the traceback is in the log under that id
        answers.append((response.status_code, response.headers["content-type"], answer))
    assert answers[0] == answers[1]


async def test_the_fast_path_sits_behind_the_caller_rules(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    # CONTRACT.md "Who may call": a page's foreign Origin, a rebound Host and a non-JSON body
    # are refused before the turn request is looked at, and nothing starts.
    started = _starts_with(daemon, monkeypatch, _started)
    client = create_app(daemon).test_client()
    body = {"sessionId": "session-1", "input": "hi"}
    refused = [
        (await client.post("/v1/codexd/turn", json=body,
                           headers={"Origin": "https://evil.example"}), 403, "origin_not_allowed"),
        (await client.post("/v1/codexd/turn", json=body,
                           headers={"Host": "evil.example"}), 421, "host_not_allowed"),
        (await client.post("/v1/codexd/turn", data=b'{"sessionId": "session-1", "input": "hi"}',
                           headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
    ]
    for response, status, code in refused:
        assert (response.status_code, (await response.get_json())["error"]["code"]) == (
            status, code)
    assert started == []
    assert (await client.post("/v1/codexd/turn", json=body)).status_code == 202
    assert started == ["hi"]
