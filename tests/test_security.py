"""Who may call (CONTRACT.md): every attack a web page can make on the loopback APIs is refused,
and refused requests have no effect. Each daemon is attacked over real sockets; codexd is the
real daemon with the real Codex child."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from codexd_trio.base.addresses import normalize_origin, split_host_header
from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.base.settings import ConfigError, resolve_codexd_token
from codexd_trio.client import CodexdClient, CodexdError, open_websocket
from codexd_trio.testing import ScriptedModel
from codexd_trio.testing.daemon import CodexdProcess, read_events, running_codexd
from conductor_trio.config import ConductorConfig
from conductor_trio.status_api.service import StatusApi
from conductor_trio.web.access import Caller, codex_refusal
from tests.fake_codexd import open_conductor, open_fake_codexd

GUARD = 120
EVIL = "http://evil.example"
TOKEN = "codexd-secret-token"
SHARED = "shared-secret-token"

# What a page can send without a CORS preflight, and what curl sends by default.
SIMPLE_BODIES: list[tuple[str, dict[str, str], bytes]] = [
    ("text/plain", {"content-type": "text/plain"}, b'{"sandbox":"danger-full-access"}'),
    ("form", {"content-type": "application/x-www-form-urlencoded"}, b"sandbox=x"),
    ("multipart", {"content-type": "multipart/form-data; boundary=b"}, b"--b--"),
    ("missing type", {}, b'{"sandbox":"danger-full-access"}'),
]


def _err(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert body["ok"] is False, body
    assert "access-control-allow-origin" not in response.headers
    return response.status_code, body["error"]["code"]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _ws_refusal(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """Try an upgrade that must be refused; return codexd's status and error code."""
    with pytest.raises(CodexdError) as refused:
        async with open_websocket(url, headers=headers):
            pass
    return refused.value.status, refused.value.code


async def _ws_hello(url: str, headers: dict[str, str] | None = None) -> str:
    async with open_websocket(url, headers=headers) as ws:
        with trio.fail_after(10):
            return str(await ws.get_message())


# ------------------------------------------------------------------------------------------
# The parsing rules, fast


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("localhost", ("localhost", None)),
        ("LOCALHOST:4319", ("localhost", 4319)),
        ("127.0.0.1:4319", ("127.0.0.1", 4319)),
        ("[::1]:4319", ("::1", 4319)),
        ("[::1]", ("::1", None)),
        ("evil.example:4319", ("evil.example", 4319)),
        ("127.0.0.1:43x9", None),
        ("[::1", None),
        ("", None),
    ],
)
def test_host_header_parsing(header: str, parsed: tuple[str, int | None] | None) -> None:
    assert split_host_header(header) == parsed


@pytest.mark.parametrize(
    ("origin", "normalized"),
    [
        ("http://127.0.0.1:4319", "http://127.0.0.1:4319"),
        ("HTTP://LocalHost:4317/", "http://localhost:4317"),
        ("http://[::1]:4319", "http://[::1]:4319"),
        ("null", None),
        ("file://", None),
        ("http://a.example/path", None),
    ],
)
def test_origin_normalization(origin: str, normalized: str | None) -> None:
    assert normalize_origin(origin) == normalized


def _conductor_config(*, codexd_token: str | None, shared: str | None,
                      exposed: bool = False) -> ConductorConfig:
    return ConductorConfig(
        local_api="http://0.0.0.0:4317" if exposed else "http://127.0.0.1:4317",
        codexd_token=codexd_token, shared_token=shared,
    )


BEARER = f"Bearer {SHARED}"
LOCAL, REMOTE = "127.0.0.1", "100.64.0.7"


@pytest.mark.parametrize(
    ("codexd_token", "shared", "exposed", "caller", "allowed"),
    [
        # codexd has a token: the caller's own credential, wherever the conductor listens.
        (TOKEN, SHARED, False, Caller("GET", remote_addr=LOCAL), False),
        (TOKEN, SHARED, False, Caller("POST", remote_addr=LOCAL), False),
        (TOKEN, SHARED, False, Caller("WS", remote_addr=LOCAL), False),
        (TOKEN, SHARED, False, Caller("GET", f"Bearer {TOKEN}", remote_addr=LOCAL), False),
        (TOKEN, SHARED, False, Caller("GET", BEARER, remote_addr=LOCAL), True),
        (TOKEN, SHARED, True, Caller("POST", BEARER, remote_addr=REMOTE), True),
        (TOKEN, SHARED, False, Caller("WS", query_tokens=[SHARED]), True),
        (TOKEN, SHARED, False, Caller("WS", query_tokens=[SHARED, "nope"]), False),
        # ?token= only on a websocket upgrade.
        (TOKEN, SHARED, False, Caller("GET", query_tokens=[SHARED]), False),
        # No shared token to check: nobody gets codexd's.
        (TOKEN, None, False, Caller("GET", BEARER, remote_addr=LOCAL), False),
        # codexd without a token: loopback as before; exposed writes need the shared token.
        (None, SHARED, False, Caller("POST", remote_addr=LOCAL), True),
        (None, SHARED, False, Caller("WS", remote_addr=LOCAL), True),
        (None, SHARED, True, Caller("GET", remote_addr=REMOTE), True),
        (None, SHARED, True, Caller("POST", remote_addr=REMOTE), False),
        (None, SHARED, True, Caller("POST", BEARER, remote_addr=REMOTE), True),
        (None, None, True, Caller("POST", remote_addr=REMOTE), False),
        (None, None, True, Caller("POST", remote_addr=LOCAL), True),
    ],
)
def test_who_may_use_the_codex_routes(
    codexd_token: str | None, shared: str | None, exposed: bool, caller: Caller, allowed: bool
) -> None:
    config = _conductor_config(codexd_token=codexd_token, shared=shared, exposed=exposed)
    refusal = codex_refusal(config, caller)
    assert (refusal is None) == allowed
    if refusal is not None:
        assert (refusal.status, refusal.code) == (401, "unauthorized")
        # The message never echoes a token.
        assert SHARED not in refusal.message
        assert TOKEN not in refusal.message
    if codexd_token is not None and shared is None:
        assert refusal is not None
        assert refusal.details == {"setting": "BAA_SHARED_TOKEN_FILE"}
        assert "BAA_SHARED_TOKEN_FILE" in refusal.message


def test_token_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve_codexd_token({"BAA_CODEXD_TOKEN_FILE": str(path)})
    path.chmod(0o600)
    assert resolve_codexd_token({"BAA_CODEXD_TOKEN_FILE": str(path)}) == (TOKEN, "file")
    assert resolve_codexd_token({"BAA_CODEXD_TOKEN": "abc"}) == ("abc", "env")
    assert resolve_codexd_token({}) == (None, "none")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BAA_CODEXD_TOKEN_FILE": "{world_readable}"}, "chmod 600"),
        ({"BAA_CODEXD_TOKEN_FILE": "{missing}"}, "cannot read the codexd token file"),
        ({"BAA_CODEXD_ALLOWED_ORIGINS": "http://ok.example:1,not an origin"}, "not an origin"),
    ],
)
def test_bad_security_settings_are_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    readable = tmp_path / "readable"
    readable.write_text("t")
    readable.chmod(0o644)
    values = {
        k: v.format(world_readable=readable, missing=tmp_path / "nope") for k, v in env.items()
    }
    done = subprocess.run(
        [sys.executable, "-m", "codexd_trio", "config"],
        env={**os.environ, **values},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------
# codexd, the real daemon


@asynccontextmanager
async def _codexd(
    tmp_path: Path, codex_home: Path, env: dict[str, str] | None = None
) -> AsyncIterator[CodexdProcess]:
    async with running_codexd(tmp_path / "node", codex_home, env=env) as codexd:
        yield codexd


def _session_events(codexd: CodexdProcess) -> list[str]:
    """Session events in codexd's journal (only the absence of events is asserted with it)."""
    journal = codexd.logs_dir / "codexd" / "events.jsonl"
    events = read_events(journal) if journal.exists() else []
    return [e.type for e in events if e.type.startswith("session.")]


@pytest.mark.real_codex
async def test_codexd_refuses_every_drive_by_and_nothing_happens(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            _codexd(tmp_path, codex_home) as codexd,
            httpx.AsyncClient(base_url=codexd.url) as http,
        ):
            port = _port(codexd.url)
            for name, headers, body in SIMPLE_BODIES:
                for path in ("/v1/codexd/sessions", "/v1/codexd/turn"):
                    answer = await http.post(path, content=body, headers=headers)
                    assert _err(answer) == (415, "unsupported_media_type"), name
            # A page's fetch always carries its Origin; JSON or not, a foreign one is refused.
            foreign = {"origin": EVIL, "content-type": "application/json"}
            created = await http.post("/v1/codexd/sessions", json={}, headers=foreign)
            assert _err(created) == (403, "origin_not_allowed")
            assert _err(await http.get("/v1/codexd/sessions", headers={"origin": EVIL})) == (
                403, "origin_not_allowed")
            assert _err(await http.get("/v1/codexd/status", headers={"origin": "null"})) == (
                403, "origin_not_allowed")
            # A preflight is never granted.
            preflight = await http.request("OPTIONS", "/v1/codexd/sessions", headers={
                "origin": EVIL, "access-control-request-method": "POST"})
            assert _err(preflight) == (403, "origin_not_allowed")
            # DNS rebinding: the page's own host name reaches codexd's port.
            for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}"):
                answer = await http.get("/v1/codexd/sessions", headers={"host": host})
                assert _err(answer) == (421, "host_not_allowed"), host
                answer = await http.post("/v1/codexd/sessions", json={}, headers={"host": host})
                assert _err(answer) == (421, "host_not_allowed"), host

            # Nothing refused had an effect.
            assert (await http.get("/v1/codexd/sessions")).json()["data"]["sessions"] == []
            assert _session_events(codexd) == []

            # What must keep working: loopback names with or without the port, no Origin,
            # and the daemon's own origin (a page it serves).
            for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
                answer = await http.get("/healthz", headers={"host": host})
                assert answer.status_code == 200, host
            own = {"origin": f"http://127.0.0.1:{port}"}
            created = await http.post(
                "/v1/codexd/sessions", json={}, headers=own | {"host": f"127.0.0.1:{port}"})
            assert created.status_code == 201
            charset = {"content-type": "application/json; charset=utf-8"}
            created = await http.post("/v1/codexd/sessions", content=b"{}", headers=charset)
            assert created.status_code == 201
            listed = (await http.get("/v1/codexd/sessions")).json()["data"]["sessions"]
            assert len(listed) == 2

            # Websockets: a foreign Origin is refused before accept; no event is ever sent.
            events = codexd.url.replace("http://", "ws://") + "/v1/codexd/events?after=0"
            assert await _ws_refusal(events, {"Origin": EVIL}) == (403, "origin_not_allowed")
            assert await _ws_refusal(events, {"Origin": "null"}) == (403, "origin_not_allowed")
            assert '"hello"' in await _ws_hello(events)
            assert '"hello"' in await _ws_hello(events, {"Origin": f"http://localhost:{port}"})


@pytest.mark.real_codex
async def test_configured_origins_are_served(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    console = "http://console.example:8080"
    env = {"BAA_CODEXD_ALLOWED_ORIGINS": f"{console}, http://other.example:9"}
    with trio.fail_after(GUARD):
        async with (
            _codexd(tmp_path, codex_home, env) as codexd,
            httpx.AsyncClient(base_url=codexd.url) as http,
        ):
            answer = await http.get("/v1/codexd/sessions", headers={"origin": console})
            assert answer.status_code == 200
            # Served, but still without CORS headers: a browser page of another origin could
            # not read the answer even so; the setting is for reverse proxies and tools.
            assert "access-control-allow-origin" not in answer.headers
            assert _err(await http.get("/v1/codexd/sessions", headers={"origin": EVIL})) == (
                403, "origin_not_allowed")


@pytest.mark.real_codex
async def test_codexd_token_guards_every_route_but_healthz_and_passes_through_the_conductor(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    token_file = tmp_path / "codexd.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {"BAA_CODEXD_TOKEN_FILE": str(token_file)}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with trio.fail_after(GUARD):
        async with (
            _codexd(tmp_path, codex_home, env) as codexd,
            httpx.AsyncClient(base_url=codexd.url) as http,
        ):
            assert (await http.get("/healthz")).status_code == 200
            for path in ("/readyz", "/describe", "/v1/codexd/status", "/v1/codexd/sessions"):
                assert _err(await http.get(path)) == (401, "unauthorized"), path
            wrong = {"Authorization": "Bearer nope"}
            assert _err(await http.post("/v1/codexd/sessions", json={}, headers=wrong)) == (
                401, "unauthorized")
            assert _session_events(codexd) == []
            assert (await http.get("/v1/codexd/sessions", headers=auth)).status_code == 200

            events = codexd.url.replace("http://", "ws://") + "/v1/codexd/events"
            assert await _ws_refusal(events, {}) == (401, "unauthorized")
            assert '"hello"' in await _ws_hello(events, auth)
            assert '"hello"' in await _ws_hello(f"{events}?token={TOKEN}")
            assert await _ws_refusal(f"{events}?token=nope", {}) == (401, "unauthorized")

            # The client library and the conductor pass the token (the conductor's own caller
            # shows the shared token: see the next test).
            async with CodexdClient(codexd.url, token=TOKEN) as client:
                session = await client.create_session(purpose="smoke")
            shared = {"Authorization": f"Bearer {SHARED}"}
            async with open_conductor(
                codexd.url, tmp_path / "with-token", codexd_token=TOKEN, token=SHARED
            ) as c:
                listed = await c.http.get("/v1/codex/sessions", headers=shared)
                sessions = listed.json()["data"]["sessions"]
                assert [s["sessionId"] for s in sessions] == [session.sessionId]
                created = await c.http.post("/v1/codex/sessions", json={}, headers=shared)
                assert created.status_code == 201
                relay = c.url.replace("http://", "ws://") + "/v1/codex/events?after=0"
                assert '"hello"' in await _ws_hello(relay, shared)
            # A conductor without the token gets codexd's refusal, passed on as it is.
            async with open_conductor(codexd.url, tmp_path / "without") as c:
                listed = await c.http.get("/v1/codex/sessions")
                assert _err(listed) == (401, "unauthorized")
            listed = (await http.get("/v1/codexd/sessions", headers=auth)).json()["data"]
            assert len(listed["sessions"]) == 2


@pytest.mark.real_codex
async def test_conductor_lends_codexds_token_to_no_caller_without_a_credential(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    # Issue 20, item 1: the conductor attaches codexd's token to what it forwards. Before, a
    # caller on loopback needed nothing: any local user could start a full-access session and
    # run turns as the node, and read every event through the relay.
    token_file = tmp_path / "codexd.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {"BAA_CODEXD_TOKEN_FILE": str(token_file)}
    with trio.fail_after(GUARD):
        async with (
            _codexd(tmp_path, codex_home, env) as codexd,
            CodexdClient(codexd.url, token=TOKEN) as direct,
        ):
            # A session made by someone entitled to: the turn below would target it.
            sid = (await direct.create_session(purpose="smoke")).sessionId
            async with open_conductor(codexd.url, tmp_path / "conductor", codexd_token=TOKEN,
                                      token=SHARED) as c:
                await _refused_without_the_shared_token(c.url, c.http, sid)
                # Nothing refused reached codexd: no session, no turn, no close, no event.
                assert [s.sessionId for s in await direct.list_sessions()] == [sid]
                session, events = await direct.get_session(sid)
                assert (session.status, session.turnCount) == ("active", 0)
                # Its events are its creation's (the app-server's thread notifications arrive
                # when they do): none of a turn, none of a close.
                assert [e.type for e in events if e.turnId or e.type == "session.closed"] == []
                assert _session_events(codexd) == ["session.created"]
                await _served_with_the_shared_token(c.url, c.http, sid)

            # A conductor whose codexd has a token but that has no shared token itself refuses
            # every /v1/codex/* call, and says what to configure.
            async with open_conductor(codexd.url, tmp_path / "no-shared",
                                      codexd_token=TOKEN) as c:
                for path in ("/v1/codex/sessions", "/v1/codex/approvals"):
                    answer = await c.http.get(path)
                    assert _err(answer) == (401, "unauthorized")
                    assert answer.json()["error"]["details"]["setting"] == "BAA_SHARED_TOKEN_FILE"
                runtime = (await c.http.get("/v1/runtime")).json()["data"]
                assert any("BAA_SHARED_TOKEN_FILE" in w for w in runtime["warnings"]), runtime
                described = (await c.http.get("/describe")).json()["data"]
                assert "/v1/codex/sessions" in described["auth"]["routes"]
                assert "/v1/codex/events" in described["auth"]["routes"]


async def _refused_without_the_shared_token(url: str, http: httpx.AsyncClient, sid: str) -> None:
    relay = url.replace("http://", "ws://") + "/v1/codex/events"
    nobody: dict[str, str] = {}
    wrong = {"Authorization": "Bearer nope"}
    # codexd's own token is not a credential for the conductor's callers either.
    borrowed = {"Authorization": f"Bearer {TOKEN}"}
    for headers in (nobody, wrong, borrowed):
        for method, path, body in (
            ("POST", "/v1/codex/sessions", {"sandbox": "danger-full-access"}),
            ("POST", "/v1/codex/turn", {"sessionId": sid, "input": "rm -rf ~"}),
            ("POST", f"/v1/codex/sessions/{sid}/close", {}),
            ("GET", "/v1/codex/sessions", None),
            ("GET", f"/v1/codex/sessions/{sid}", None),
            ("GET", "/v1/codex/events?after=0", None),
            ("GET", "/v1/codex/approvals", None),
            ("GET", "/v1/codex/metrics", None),
        ):
            answer = await http.request(method, path, json=body, headers=headers)
            assert _err(answer) == (401, "unauthorized"), (method, path, headers)
        assert await _ws_refusal(f"{relay}?after=0", headers) == (401, "unauthorized")
    # ?token= is for websockets only: never on an HTTP request (it would end up in logs).
    answer = await http.get("/v1/codex/sessions", params={"token": SHARED})
    assert _err(answer) == (401, "unauthorized")
    assert await _ws_refusal(f"{relay}?after=0&token=nope", {}) == (401, "unauthorized")


async def _served_with_the_shared_token(url: str, http: httpx.AsyncClient, sid: str) -> None:
    """Everything is served with the shared token, the relay too (header or ?token=)."""
    relay = url.replace("http://", "ws://") + "/v1/codex/events"
    shared = {"Authorization": f"Bearer {SHARED}"}
    assert (await http.get("/v1/codex/sessions", headers=shared)).status_code == 200
    created = await http.post("/v1/codex/sessions", json={}, headers=shared)
    assert created.status_code == 201, created.text
    other = created.json()["data"]["session"]["sessionId"]
    closed = await http.post(f"/v1/codex/sessions/{other}/close", json={}, headers=shared)
    assert closed.status_code == 200, closed.text
    assert closed.json()["data"]["session"]["status"] == "closed"
    turn = await http.post("/v1/codex/turn", json={"sessionId": sid, "input": "hi"},
                           headers=shared)
    assert turn.status_code == 202, turn.text
    assert '"hello"' in await _ws_hello(f"{relay}?after=0", shared)
    assert '"hello"' in await _ws_hello(f"{relay}?after=0&token={SHARED}")
    assert (await http.get("/v1/codex/metrics", headers=shared)).status_code == 200
    # The conductor's own views stay open: they hold no Codex content, only counts.
    assert (await http.get("/v1/codex")).status_code == 200
    assert (await http.get("/v1/status")).status_code == 200


# ------------------------------------------------------------------------------------------
# conductor and status-api


async def test_conductor_refuses_drive_bys_before_they_reach_codexd(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            open_fake_codexd() as fake,
            open_conductor(fake.url, tmp_path) as c,
        ):
            port = _port(c.url)
            for name, headers, body in SIMPLE_BODIES:
                for path in ("/v1/codex/sessions", "/v1/codex/turn", "/v1/system/pause"):
                    answer = await c.http.post(path, content=body, headers=headers)
                    assert _err(answer) == (415, "unsupported_media_type"), (name, path)
            foreign = {"origin": EVIL}
            for path in ("/v1/codex/sessions", "/v1/system/pause"):
                answer = await c.http.post(path, json={}, headers=foreign)
                assert _err(answer) == (403, "origin_not_allowed")
            assert _err(await c.http.get("/v1/status", headers=foreign)) == (
                403, "origin_not_allowed")
            answer = await c.http.post("/v1/codex/sessions", json={},
                                       headers={"host": f"evil.example:{port}"})
            assert _err(answer) == (421, "host_not_allowed")
            relay = c.url.replace("http://", "ws://") + "/v1/codex/events"
            assert await _ws_refusal(relay, {"Origin": EVIL}) == (403, "origin_not_allowed")

            # Nothing reached codexd, and the mode did not change.
            assert [(m, p) for m, p, _ in fake.requests if m == "POST"] == []
            assert not any("/events" in p for _, p, _ in fake.requests)
            assert fake.sessions == {}
            state = (await c.http.get("/v1/system/state")).json()["data"]
            assert state["mode"] == "running"

            # Same-origin (the status page's own origin) and curl keep working.
            own = {"origin": f"http://localhost:{port}", "host": f"localhost:{port}"}
            assert (await c.http.post("/v1/codex/sessions", json={}, headers=own)).status_code \
                == 201
            assert '"hello"' in await _ws_hello(relay, {"Origin": f"http://127.0.0.1:{port}"})


async def test_exposed_conductor_needs_the_shared_token_for_every_write(tmp_path: Path) -> None:
    # Listening on every interface (as on a tailnet) makes every write need the token; the test
    # itself only talks to it over 127.0.0.1.
    auth = {"Authorization": f"Bearer {SHARED}"}
    with trio.fail_after(30):
        async with (
            open_fake_codexd() as fake,
            open_conductor(fake.url, tmp_path / "exposed", token=SHARED,
                           local_api="http://0.0.0.0:0", allowed_hosts=("0.0.0.0",)) as c,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{_port(c.url)}") as http,
        ):
            for path in ("/v1/codex/sessions", "/v1/codex/turn", "/v1/codex/turn/steer",
                         "/v1/codex/turn/interrupt", "/v1/codex/approvals/a-1",
                         "/v1/system/pause"):
                assert _err(await http.post(path, json={})) == (401, "unauthorized"), path
            assert [(m, p) for m, p, _ in fake.requests if m == "POST"] == []
            assert (await http.get("/v1/codex/sessions")).status_code == 200
            created = await http.post("/v1/codex/sessions", json={}, headers=auth)
            assert created.status_code == 201


async def test_loopback_conductor_over_a_codexd_without_token_needs_none(tmp_path: Path) -> None:
    # codexd trusts loopback callers (it has no token), so the conductor lends nothing by
    # forwarding a loopback caller's request: reads, writes and the relay need no token there
    # (only /v1/system/* does, when one is set).
    with trio.fail_after(30):
        async with (
            open_fake_codexd() as fake,
            open_conductor(fake.url, tmp_path / "loopback", token=SHARED) as c,
        ):
            created = await c.http.post("/v1/codex/sessions", json={})
            assert created.status_code == 201
            sid = created.json()["data"]["session"]["sessionId"]
            turn = await c.http.post("/v1/codex/turn", json={"sessionId": sid, "input": "hi"})
            assert turn.status_code == 202
            assert (await c.http.get("/v1/codex/sessions")).status_code == 200
            relay = c.url.replace("http://", "ws://") + "/v1/codex/events?after=0"
            assert '"hello"' in await _ws_hello(relay)
            assert _err(await c.http.post("/v1/system/pause", json={})) == (401, "unauthorized")
            # A caller's ?token= is the conductor's to check, never forwarded to codexd.
            await c.http.get(f"/v1/codex/events?after=0&token={SHARED}&to%6Ben=x&limit=5")
            await _ws_hello(f"{relay}&token={SHARED}")
            forwarded = [(m, p) for m, p, _ in fake.requests if "/events" in p][-2:]
            assert forwarded == [("GET", "/v1/codexd/events?after=0&limit=5"),
                                 ("WS", "/v1/codexd/events?after=0")]
            assert not any(SHARED in p for _, p, _ in fake.requests)


async def test_status_api_refuses_foreign_origins_and_hosts(tmp_path: Path) -> None:
    from conductor_trio.config import StatusApiConfig

    with trio.fail_after(30):
        async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
            api = StatusApi(StatusApiConfig(local_api="http://127.0.0.1:0",
                                            conductor_base=c.url))
            async with trio.open_nursery() as nursery:
                url = await nursery.start(api.serve)
                async with httpx.AsyncClient(base_url=url) as http:
                    port = _port(url)
                    assert _err(await http.get("/v1/status", headers={"origin": EVIL})) == (
                        403, "origin_not_allowed")
                    assert _err(await http.get("/", headers={"host": "evil.example"})) == (
                        421, "host_not_allowed")
                    assert _err(await http.post("/v1/status", content=b"x")) == (
                        415, "unsupported_media_type")
                    ok = await http.get("/v1/status", headers={"origin": f"http://localhost:{port}",
                                                               "host": f"localhost:{port}"})
                    assert ok.status_code == 200
                api.begin_stop()

