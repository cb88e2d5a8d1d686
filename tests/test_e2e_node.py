"""The whole node as processes: real codexd + real codex + the scripted model, the conductor and
the status-api, each started on port 0 and found through its ready line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from codexd_trio.client import open_websocket
from codexd_trio.testing import ScriptedModel, codex_child_env
from tests.fake_codexd import spawn_daemon, terminate

TOKEN = "e2e-shared-token"


def _env(base: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in base.items() if not k.startswith("BAA_")}


def _err(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def _wait_turn_via_relay(conductor_url: str, session_id: str, turn_id: str) -> None:
    """Follow the conductor's relayed event stream (replayed from 0) until the turn settles."""
    base = conductor_url.replace("http://", "ws://")
    url = f"{base}/v1/codex/events?after=0&sessionId={session_id}"
    async with open_websocket(url) as ws:
        hello = json.loads(await ws.get_message())
        assert hello["type"] == "hello"
        while True:
            event: dict[str, Any] = json.loads(await ws.get_message())
            assert event["sessionId"] == session_id
            if event["turnId"] == turn_id and event["type"] in (
                "app-server.turn.completed", "turn.failed", "app-server.turn.completed.missing"
            ):
                return


@pytest.mark.real_codex
async def test_node_end_to_end(
    scripted_model: ScriptedModel, codex_home: Path, codex_binary: Path, tmp_path: Path
) -> None:
    env = _env(codex_child_env(codex_home, codex_binary))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    codexd_argv = [
        sys.executable, "-m", "codexd_trio", "start", "--local-api-base", "http://127.0.0.1:0",
        "--logs-dir", str(tmp_path / "logs"), "--state-dir", str(tmp_path / "state"),
        "--server-command", str(codex_binary),
    ]
    with trio.fail_after(240):
        async with spawn_daemon(codexd_argv, env=env) as codexd:
            assert codexd.ready["service"] == "codexd"
            conductor_argv = [
                sys.executable, "-m", "conductor_trio", "start",
                "--local-api", "http://127.0.0.1:0", "--codexd-base", codexd.url,
                "--state-dir", str(tmp_path / "state"), "--token-file", str(token_file),
                "--node-id", "e2e-node",
            ]
            async with spawn_daemon(conductor_argv, env=_env(dict(os.environ))) as conductor:
                status_argv = [
                    sys.executable, "-m", "conductor_trio.status_api", "start",
                    "--local-api", "http://127.0.0.1:0", "--conductor-base", conductor.url,
                ]
                async with spawn_daemon(status_argv, env=_env(dict(os.environ))) as status_api, \
                        httpx.AsyncClient(base_url=conductor.url, timeout=30) as c, \
                        httpx.AsyncClient(base_url=status_api.url, timeout=30) as s:
                    await _flow(c, s, conductor.url, auth)

                    # codexd goes away (graceful stop): proxied routes are 503, the rest serves.
                    assert await terminate(codexd) == 0
                    assert _err(await c.get("/v1/codex/sessions")) == (503, "codexd_unavailable")
                    assert (await c.get("/healthz")).status_code == 200
                    codex = (await c.get("/v1/codex")).json()["data"]
                    assert codex["proxy"]["reachable"] is False
                    snap = (await s.get("/v1/status")).json()["data"]
                    assert (snap["source"], snap["codexd"]["reachable"]) == ("conductor", False)

                    # The conductor goes away: the status-api says so instead of failing.
                    assert await terminate(conductor) == 0
                    down = await s.get("/v1/status")
                    assert down.status_code == 200
                    assert down.json()["data"]["source"] == "unreachable"
                    assert await terminate(status_api) == 0
            lease = json.loads((tmp_path / "state" / "conductor" / "lease.json").read_text())
            assert lease["holder_id"].startswith("e2e-node@")


async def _flow(c: httpx.AsyncClient, s: httpx.AsyncClient, conductor_url: str,
                auth: dict[str, str]) -> None:
    codex = (await c.get("/v1/codex")).json()["data"]
    assert codex["backend"] == "independent_codexd"
    assert codex["proxy"]["reachable"] is True
    assert not any("runs" in r["path"] or "exec" in r["path"] for r in codex["routes"])

    created = await c.post("/v1/codex/sessions", json={"purpose": "smoke"},
                           headers={"Idempotency-Key": "e2e-session-1"})
    assert created.status_code == 201, created.text
    session = created.json()["data"]["session"]
    sid = session["sessionId"]
    again = await c.post("/v1/codex/sessions", json={"purpose": "smoke"},
                         headers={"Idempotency-Key": "e2e-session-1"})
    assert again.json()["data"]["session"]["sessionId"] == sid
    listed = (await c.get("/v1/codex/sessions")).json()["data"]["sessions"]
    assert sid in [x["sessionId"] for x in listed]
    read = await c.get(f"/v1/codex/sessions/{sid}")
    assert read.json()["data"]["session"]["purpose"] == "smoke"

    turn = await c.post("/v1/codex/turn", json={"sessionId": sid, "input": "hello node"})
    assert turn.status_code == 202, turn.text
    turn_id = turn.json()["data"]["turnId"]
    await _wait_turn_via_relay(conductor_url, sid, turn_id)
    done = (await c.get(f"/v1/codex/sessions/{sid}")).json()["data"]["session"]
    assert (done["lastTurnId"], done["lastTurnStatus"]) == (turn_id, "completed")
    assert done["lastTurnOutput"] == "echo: hello node"
    assert done["currentTurnId"] is None

    # Mode changes need the token; paused and draining refuse new turns.
    assert _err(await c.post("/v1/system/pause", json={})) == (401, "unauthorized")
    paused = await c.post("/v1/system/pause", headers=auth, json={"reason": "e2e"})
    assert paused.json()["data"]["mode"] == "paused"
    blocked = await c.post("/v1/codex/turn", json={"sessionId": sid, "input": "no"})
    assert _err(blocked) == (423, "system_paused")
    assert _err(await c.post("/v1/codex/sessions", json={})) == (423, "system_paused")
    await c.post("/v1/system/drain", headers=auth, json={})
    blocked = await c.post("/v1/codex/turn", json={"sessionId": sid, "input": "no"})
    assert _err(blocked) == (423, "system_draining")
    state = (await c.get("/v1/system/state")).json()["data"]
    assert (state["mode"], state["active_turns"], state["drained"]) == ("draining", [], True)
    await c.post("/v1/system/resume", headers=auth, json={})
    assert (await c.get("/v1/system/state")).json()["data"]["mode"] == "running"

    snap = (await s.get("/v1/status")).json()["data"]
    assert snap["source"] == "conductor"
    assert snap["node"]["node_id"] == "e2e-node"
    assert snap["role"] == "leader"
    assert snap["codexd"]["reachable"] is True
    assert snap["codexd"]["child"]["status"] == "running"
    assert snap["sessions"]["count"] >= 1
    assert snap["last_event_seq"] > 0
