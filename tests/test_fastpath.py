"""The conductor's fast path (issue 27): the plain ``/v1/codex/*`` relays are served in front of
Quart, and only when nothing would refuse them — every refusal is still Quart's. A spy on the
Quart routes' relay (``codex_routes.proxy_http``) tells which of the two answered."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from codexd_trio.web.app import quart_rule_path
from conductor_trio.config import ConductorConfig
from conductor_trio.lease.file import MemoryLeaseStore
from conductor_trio.service import Conductor
from conductor_trio.web import codex_routes
from conductor_trio.web.app import create_app
from conductor_trio.web.fastpath import FAST_ROUTES
from conductor_trio.web.proxy import proxy_http
from tests.fake_codexd import open_conductor, open_fake_codexd


@pytest.fixture
def quart_relays(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The upstream paths Quart's routes relayed (the fast path's do not pass there)."""
    seen: list[str] = []

    async def spy(conductor: Any, upstream_path: str) -> Any:
        seen.append(upstream_path)
        return await proxy_http(conductor, upstream_path)

    monkeypatch.setattr(codex_routes, "proxy_http", spy)
    return seen


def test_every_fast_route_is_one_of_the_apps_routes(tmp_path: Path) -> None:
    # The table cannot drift from codex_routes.py: a fast route Quart does not have would serve
    # a path the API does not document.
    config = ConductorConfig(node_id="n", host="h", codexd_base="http://127.0.0.1:9",
                             state_dir=tmp_path)
    app = create_app(Conductor(config, lease_store=MemoryLeaseStore()))
    routes = {(method, quart_rule_path(rule.rule)) for rule in app.url_map.iter_rules()
              for method in rule.methods or ()}
    missing = [(m, t) for m, t, _ in FAST_ROUTES if (m, t) not in routes]
    assert missing == []


async def test_plain_relays_skip_quart_and_answer_as_codexd_does(
        tmp_path: Path, quart_relays: list[str]) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd(auto_complete=False) as fake, \
                open_conductor(fake.url, tmp_path) as c:
            created = await c.http.post("/v1/codex/sessions", json={"cwd": "/work"},
                                        headers={"Idempotency-Key": "k-1"})
            assert created.status_code == 201
            sid = created.json()["data"]["session"]["sessionId"]
            listed = await c.http.get("/v1/codex/sessions", headers={"X-Request-Id": "req-fast1"})
            assert [s["sessionId"] for s in listed.json()["data"]["sessions"]] == [sid]
            assert listed.headers["x-request-id"] == "req-fast1"
            missing = await c.http.get("/v1/codex/sessions/session-nope")
            assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
            closed = await c.http.post(f"/v1/codex/sessions/{sid}/close", json={})
            assert closed.json()["data"]["session"]["status"] == "closed"
            assert quart_relays == []
            # What codexd saw: the same ids, the request id, the idempotency key, JSON bodies.
            seen = {(m, p): h for m, p, h in fake.requests}
            assert seen[("POST", "/v1/codexd/sessions")]["Idempotency-Key"] == "k-1"
            assert seen[("GET", "/v1/codexd/sessions")]["X-Request-Id"] == "req-fast1"
            assert seen[("POST", f"/v1/codexd/sessions/{sid}/close")]["Content-Type"] == \
                "application/json"
            # A caller's token in the query is the conductor's to check, never codexd's to see;
            # a path parameter is quoted again, as Quart's route does.
            odd = await c.http.get("/v1/codex/sessions/a%3Fb", params={"token": "t", "x": "1"})
            assert odd.json()["error"]["details"]["sessionId"] == "a?b"
            assert fake.requests[-1][1] == "/v1/codexd/sessions/a?b?x=1"  # as codexd decoded it
            assert quart_relays == []


async def test_what_a_rule_refuses_is_still_quarts_to_answer(
        tmp_path: Path, quart_relays: list[str]) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd(auto_complete=False) as fake, \
                open_conductor(fake.url, tmp_path) as c:
            sid = (await c.http.post("/v1/codex/sessions", json={})).json()["data"]["session"][
                "sessionId"]
            await c.http.post("/v1/system/pause", json={})
            forwarded = len(fake.requests)
            turn = await c.http.post("/v1/codex/turn", json={"sessionId": sid, "input": "hi"})
            assert (turn.status_code, turn.json()["error"]["code"]) == (423, "system_paused")
            # Not a mode the GET cares about: still the fast path.
            assert (await c.http.get(f"/v1/codex/sessions/{sid}")).status_code == 200
            await c.http.post("/v1/system/resume", json={})
            turn = await c.http.post("/v1/codex/turn", json={"sessionId": sid, "input": "hi"})
            assert turn.status_code == 202
            assert quart_relays == []
            # A slash inside a parameter is not a parameter: Quart's 404, nothing forwarded.
            before = len(fake.requests)
            odd = await c.http.get("/v1/codex/sessions/a%2Fb")
            assert (odd.status_code, odd.json()["error"]["code"]) == (404, "not_found")
            assert [r for r in fake.requests[before:] if r[1].startswith("/v1/codexd/")] == []
            assert forwarded <= len(fake.requests)


async def test_a_caller_without_the_credential_reaches_nothing(
        tmp_path: Path, quart_relays: list[str]) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, \
                open_conductor(fake.url, tmp_path, token="shared-1", codexd_token="cx") as c:
            before = len(fake.requests)
            for method, path in (("GET", "/v1/codex/sessions"), ("POST", "/v1/codex/turn")):
                refused = await c.http.request(method, path, json={} if method == "POST" else None)
                assert (refused.status_code, refused.json()["error"]["code"]) == (
                    401, "unauthorized")
            assert fake.requests[before:] == []
            allowed = await c.http.get("/v1/codex/sessions",
                                       headers={"Authorization": "Bearer shared-1"})
            assert allowed.status_code == 200
            # The conductor lends codexd's token only to a caller it authenticated.
            assert fake.requests[-1][2]["Authorization"] == "Bearer cx"
            assert quart_relays == []


async def test_an_unreachable_codexd_is_a_503_envelope(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake:
            url = fake.url
        async with open_conductor(url, tmp_path) as c:
            answer = await c.http.get("/v1/codex/sessions")
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "codexd_unavailable"
            assert answer.json()["error"]["details"]["target"] == url


async def test_a_bug_in_a_relay_is_the_500_envelope_with_its_correlation_id_in_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
            upstream = c.conductor.upstream
            assert upstream is not None

            async def broken(*args: Any, **kwargs: Any) -> Any:
                await trio.lowlevel.checkpoint()
                raise RuntimeError("simulated relay bug")

            monkeypatch.setattr(upstream, "request", broken)
            with caplog.at_level(logging.ERROR, logger="conductor.api"):
                answer = await c.http.get("/v1/codex/sessions")
            assert answer.status_code == 500
            assert answer.headers["content-type"] == "application/json"
            error = answer.json()["error"]
            assert error["code"] == "internal_error"
            assert error["message"] == "conductor hit an internal error; see its log"
            correlation = error["details"]["correlationId"]
            assert correlation in caplog.text
            assert "simulated relay bug" in caplog.text
            assert "/v1/codexd/sessions" in caplog.text
