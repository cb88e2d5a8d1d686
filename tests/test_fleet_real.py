"""The fleet end to end (issue 28): a real etcd and two full nodes — codexd with a real Codex
child (scripted model) and a conductor each — on loopback ports.

Node A answers for the fleet; node B (label ``gpu``) holds sessions placed there through A.
Turns, transcripts, approvals and the event stream reach B's sessions through A; B's conductor
SIGKILLed leaves the fleet within TTL + 1 s and its sessions are named unreachable (never
silently lost); B back, they are reachable again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from codexd_trio.client import open_websocket
from codexd_trio.testing import ExecCommand, Plain, ScriptedModel, codex_child_env
from codexd_trio.testing.codexhome import temporary_codex_home
from tests.etcd_fixture import Etcd, free_port, open_etcd, require_etcd
from tests.fake_codexd import Daemon, spawn_daemon

pytestmark = pytest.mark.real_codex

TOKEN = "fleet-shared-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TTL = 2
# How late polling another process may see what it did by a deadline (loaded 2-core machine).
OBSERVE_MARGIN_S = 1.0
GUARD_S = 300


def _env(base: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in base.items() if not k.startswith("BAA_")}


@asynccontextmanager
async def codexd(tmp: Path, name: str, home: Path, binary: Path) -> AsyncIterator[Daemon]:
    argv = [sys.executable, "-m", "codexd_trio", "start",
            "--local-api-base", "http://127.0.0.1:0",
            "--logs-dir", str(tmp / name / "logs"), "--state-dir", str(tmp / name / "state"),
            "--server-command", str(binary), "--server-cwd", str(tmp / name)]
    (tmp / name).mkdir(parents=True, exist_ok=True)
    async with spawn_daemon(argv, env=_env(codex_child_env(home, binary))) as daemon:
        yield daemon


@asynccontextmanager
async def conductor(tmp: Path, name: str, etcd: Etcd, codexd_url: str, port: int,
                    *labels: str) -> AsyncIterator[Daemon]:
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "conductor_trio", "start", "--local-api", base,
            "--advertise-url", base, "--codexd-base", codexd_url,
            "--state-dir", str(tmp / name / "state"), "--node-id", name, "--host", "loopback",
            "--lease-store", f"etcd://{etcd.endpoint}", "--lease-ttl", str(TTL),
            "--token-file", str(token_file), "--fleet",
            *(f"--label={label}" for label in labels)]
    async with spawn_daemon(argv, env=_env(dict(os.environ))) as daemon:
        yield daemon


async def _poll(http: httpx.AsyncClient, path: str, done: Any, *, within_s: float
                ) -> dict[str, Any]:
    """GET ``path`` until ``done(data)``; another process cannot tell us, so bounded polling."""
    with trio.fail_after(within_s):
        while True:
            answer = await http.get(path)
            if answer.status_code == 200 and done(data := answer.json()["data"]):
                return dict(data)
            await trio.sleep(0.05)


def _registered(data: dict[str, Any]) -> set[str]:
    return {n["nodeId"] for n in data["nodes"]}


async def _turn_via_fleet_stream(a_url: str, session_id: str, turn_id: str) -> list[str]:
    """Follow the session's events through A's fleet relay (replayed from 0) until the turn
    settles; the event types seen."""
    url = (a_url.replace("http://", "ws://")
           + f"/v1/fleet/sessions/{session_id}/events?after=0")
    seen: list[str] = []
    async with open_websocket(url, headers=AUTH) as ws:
        hello = json.loads(await ws.get_message())
        assert hello["type"] == "hello"
        while True:
            event = json.loads(await ws.get_message())
            assert event["sessionId"] == session_id
            seen.append(event["type"])
            if event["turnId"] == turn_id and event["type"] in (
                    "app-server.turn.completed", "turn.failed"):
                return seen


async def test_two_nodes_one_fleet(tmp_path: Path, scripted_model: ScriptedModel,
                                   codex_home: Path, codex_binary: Path) -> None:
    require_etcd()
    a_port, b_port = free_port(), free_port()
    with trio.fail_after(GUARD_S), temporary_codex_home(scripted_model.base_url) as b_home:
        async with AsyncExitStack() as stack:
            etcd = await stack.enter_async_context(open_etcd(tmp_path))
            a_codexd = await stack.enter_async_context(
                codexd(tmp_path, "a", codex_home, codex_binary))
            b_codexd = await stack.enter_async_context(
                codexd(tmp_path, "b", b_home, codex_binary))
            a = await stack.enter_async_context(
                conductor(tmp_path, "a", etcd, a_codexd.url, a_port))
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=a.url, timeout=30, headers=AUTH))
            async with conductor(tmp_path, "b", etcd, b_codexd.url, b_port, "gpu") as b:
                sessions = await _both_up(http, tmp_path, scripted_model, a.url)
                # B's registration has caught up with its sessions (it is put on change, at
                # B's next look at its codexd): these are the counts it leaves behind.
                await _poll(http, "/v1/fleet/nodes", lambda d: {
                    n["nodeId"]: n["registration"]["counts"]["sessions"] for n in d["nodes"]
                }.get("b") == len(sessions["b"]), within_s=30)
                # B dies without a word: its registration expires with its lease.
                os.killpg(b.process.pid, signal.SIGKILL)
                with trio.fail_after(TTL + 1 + OBSERVE_MARGIN_S):
                    await _poll(http, "/v1/fleet/nodes",
                                lambda d: _registered(d) == {"a"}, within_s=60)
            await _b_down(http, tmp_path, sessions)
            async with conductor(tmp_path, "b", etcd, b_codexd.url, b_port, "gpu"):
                await _poll(http, "/v1/fleet/nodes",
                            lambda d: _registered(d) == {"a", "b"}, within_s=30)
                listed = (await http.get("/v1/fleet/sessions")).json()["data"]
                assert {s["sessionId"] for s in listed["sessions"]} >= set(sessions["b"])
                back = await http.get(f"/v1/fleet/sessions/{sessions['b'][0]}")
                assert back.status_code == 200
                assert back.headers["X-Baa-Node"] == "b"


async def _both_up(http: httpx.AsyncClient, tmp: Path, model: ScriptedModel, a_url: str
                   ) -> dict[str, list[str]]:
    nodes = await _poll(http, "/v1/fleet/nodes", lambda d: _registered(d) == {"a", "b"},
                        within_s=30)
    by_id = {n["nodeId"]: n for n in nodes["nodes"]}
    assert by_id["b"]["reachable"] is True
    assert by_id["b"]["registration"]["labels"] == {"gpu": ""}
    assert by_id["b"]["registration"]["apiBase"].startswith("http://127.0.0.1:")
    assert by_id["a"]["self"] is True

    # Who may call: no credential, no fleet (not even a read), nothing forwarded.
    async with httpx.AsyncClient(base_url=a_url, timeout=10) as stranger:
        refused = await stranger.get("/v1/fleet/nodes")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        assert (await stranger.post("/v1/fleet/sessions", json={})).status_code == 401

    # Placement by label: created through A, placed on B.
    work = tmp / "work"
    work.mkdir()
    made = await http.post("/v1/fleet/sessions", json={"labels": ["gpu"], "cwd": str(work)})
    assert made.status_code == 201, made.text
    assert made.json()["data"]["node"] == "b"
    on_b = made.json()["data"]["session"]["sessionId"]

    # A turn and its transcript through A reach B's session; its events through A's relay.
    model.script(Plain("hello from b"))
    turn = await http.post(f"/v1/fleet/sessions/{on_b}/turn", json={"input": "hi"})
    assert turn.status_code == 202, turn.text
    assert turn.headers["X-Baa-Node"] == "b"
    seen = await _turn_via_fleet_stream(a_url, on_b, turn.json()["data"]["turnId"])
    assert "turn.accepted" in seen
    transcript = await _poll(http, f"/v1/fleet/sessions/{on_b}/transcript",
                             lambda d: len(d["turns"]) == 1, within_s=30)
    assert "hello from b" in json.dumps(transcript["turns"][0])

    # An approval on B, listed by A and decided through A.
    asking = await http.post("/v1/fleet/sessions", json={
        "node": "b", "cwd": str(work), "approvalPolicy": "untrusted",
        "sandbox": "workspace-write", "approvals": "clients"})
    assert asking.status_code == 201, asking.text
    asker = asking.json()["data"]["session"]["sessionId"]
    model.script(ExecCommand("touch approved-through-a.txt", then=Plain("made it")))
    turn = await http.post(f"/v1/fleet/sessions/{asker}/turn", json={"input": "make a file"})
    assert turn.status_code == 202, turn.text
    pending = await _poll(http, "/v1/fleet/approvals?state=pending",
                          lambda d: len(d["approvals"]) == 1, within_s=60)
    approval = pending["approvals"][0]
    assert (approval["node"], approval["sessionId"]) == ("b", asker)
    decided = await http.post(
        f"/v1/fleet/sessions/{asker}/approvals/{approval['approvalId']}",
        json={"decision": "accept", "decidedBy": "fleet-test"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["data"]["approval"]["state"] == "resolved"
    await _poll(http, f"/v1/fleet/sessions/{asker}",
                lambda d: d["session"]["currentTurnId"] is None
                and d["session"]["lastTurnStatus"] == "completed", within_s=60)
    assert (work / "approved-through-a.txt").exists()

    # The rest of a session's routes reach B the same way: its queue, its events page, its
    # approvals, its title, and closing it (a session of its own, closed at the end).
    queue = await http.get(f"/v1/fleet/sessions/{asker}/queue")
    assert (queue.status_code, queue.headers["X-Baa-Node"]) == (200, "b")
    assert queue.json()["data"]["queue"]["entries"] == []
    page = (await http.get(f"/v1/fleet/sessions/{asker}/events?after=0&limit=1000")
            ).json()["data"]
    assert {e["sessionId"] for e in page["events"]} == {asker}
    mine = (await http.get(f"/v1/fleet/sessions/{asker}/approvals")).json()["data"]
    assert [a["approvalId"] for a in mine["approvals"]] == [approval["approvalId"]]
    closing = await http.post("/v1/fleet/sessions", json={"node": "b", "cwd": str(work)})
    doomed = closing.json()["data"]["session"]["sessionId"]
    titled = await http.post(f"/v1/fleet/sessions/{doomed}/title", json={"title": "to close"})
    assert titled.status_code == 200, titled.text
    closed = await http.post(f"/v1/fleet/sessions/{doomed}/close", json={})
    assert closed.status_code == 200, closed.text
    assert closed.json()["data"]["session"]["status"] == "closed"
    active = (await http.get("/v1/fleet/sessions?status=active")).json()["data"]
    assert doomed not in {s["sessionId"] for s in active["sessions"]}

    # No node named, no label: the least busy healthy node (A has no session yet).
    plain = await http.post("/v1/fleet/sessions", json={"cwd": str(work)})
    assert plain.status_code == 201, plain.text
    assert plain.json()["data"]["node"] == "a"
    on_a = plain.json()["data"]["session"]["sessionId"]

    # The merged list, paged: every session once, each naming its node.
    pages: list[dict[str, Any]] = []
    cursor = ""
    while True:
        pages.append((await http.get(f"/v1/fleet/sessions?limit=2{cursor}")).json()["data"])
        if pages[-1]["nextCursor"] is None:
            break
        cursor = f"&cursor={pages[-1]['nextCursor']}"
    assert [len(p["sessions"]) for p in pages] == [2, 2]
    listed = [(s["sessionId"], s["node"]) for p in pages for s in p["sessions"]]
    assert sorted(listed) == sorted([(on_b, "b"), (asker, "b"), (doomed, "b"), (on_a, "a")])
    assert {n["nodeId"]: n["state"] for n in pages[0]["nodes"]} == {"a": "ok", "b": "ok"}
    bad = await http.get("/v1/fleet/sessions?cursor=made-up")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")
    return {"a": [on_a], "b": [on_b, asker, doomed]}


async def _b_down(http: httpx.AsyncClient, tmp: Path, sessions: dict[str, list[str]]) -> None:
    nodes = (await http.get("/v1/fleet/nodes")).json()["data"]
    offline = {n["nodeId"]: n for n in nodes["offline"]}
    # Gone from the registered nodes, still listed with its last known counts.
    assert offline["b"]["registered"] is False
    assert offline["b"]["registration"]["counts"]["sessions"] == 3

    listed = (await http.get("/v1/fleet/sessions")).json()["data"]
    assert {s["sessionId"] for s in listed["sessions"]} == set(sessions["a"])
    states = {n["nodeId"]: n for n in listed["nodes"]}
    assert states["b"]["state"] == "offline"
    assert states["b"]["counts"]["sessions"] == 3

    gone = await http.get(f"/v1/fleet/sessions/{sessions['b'][0]}")
    assert gone.status_code == 503
    assert gone.json()["error"]["code"] == "node_unavailable"
    assert gone.json()["error"]["details"]["node"] == "b"
    turn = await http.post(f"/v1/fleet/sessions/{sessions['b'][0]}/turn", json={"input": "x"})
    assert (turn.status_code, turn.json()["error"]["code"]) == (503, "node_unavailable")

    # Creating without a node places on A; asking for B (or its label) says why not.
    made = await http.post("/v1/fleet/sessions", json={"cwd": str(tmp / "work")})
    assert made.status_code == 201, made.text
    assert made.json()["data"]["node"] == "a"
    refused = await http.post("/v1/fleet/sessions", json={"labels": ["gpu"]})
    assert refused.status_code == 503
    err = refused.json()["error"]
    assert err["code"] == "no_node_available"
    assert set(err["details"]["nodes"]) == {"a", "b"}
    sessions["a"].append(made.json()["data"]["session"]["sessionId"])
