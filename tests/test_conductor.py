"""The conductor's routes, proxy, modes, auth and graceful stop, against the fake codexd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from codexd_trio.base.contracts import Approval, now_iso
from codexd_trio.client import CodexdError, open_websocket
from conductor_trio.lease.file import MemoryLeaseStore
from tests.bodies import post_oversized
from tests.fake_codexd import FakeCodexd, open_conductor, open_fake_codexd

TOKEN = "s3cret-token"


def _err(response: Any) -> tuple[int, str]:
    body = response.json()
    assert body["ok"] is False, body
    return response.status_code, body["error"]["code"]


async def test_probes_describe_and_json_errors(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
            health = await c.http.get("/healthz")
            assert health.status_code == 200
            assert health.json()["data"]["status"] == "ok"
            ready = await c.http.get("/readyz")
            assert ready.json() == {"ok": True, "data": {"ready": True, "role": "leader"}}
            role = await c.http.get("/rolez")
            assert (role.text.strip(), role.headers["content-type"].split(";")[0]) == (
                "leader", "text/plain")
            describe = (await c.http.get("/describe")).json()["data"]
            paths = " ".join(r["path"] for r in describe["routes"])
            assert "/v1/codex/turn" in paths
            assert "runs" not in paths
            assert "exec" not in paths
            runtime = (await c.http.get("/v1/runtime")).json()["data"]
            assert runtime["node_id"] == "test-node"
            assert runtime["lease"]["holder_id"] == "test-node@testhost"

            assert _err(await c.http.get("/v1/nope")) == (404, "not_found")
            assert _err(await c.http.get("/v1/codex/runs")) == (404, "not_found")
            assert _err(await c.http.get("/v1/codex/turn")) == (405, "method_not_allowed")
            too_big = await post_oversized(c.http, "/v1/codex/turn")
            assert _err(too_big) == (413, "payload_too_large")


async def test_proxy_passes_codexd_answers_through(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd(auto_complete=False) as fake, \
                open_conductor(fake.url, tmp_path) as c:
            created = await c.http.post("/v1/codex/sessions", json={"cwd": "/work"},
                                        headers={"Idempotency-Key": "abc-1"})
            assert created.status_code == 201
            session = created.json()["data"]["session"]
            sid = session["sessionId"]
            assert ("POST", "/v1/codexd/sessions") in [(m, p) for m, p, _ in fake.requests]
            assert [h.get("Idempotency-Key") for m, p, h in fake.requests
                    if p == "/v1/codexd/sessions" and m == "POST"] == ["abc-1"]

            listed = (await c.http.get("/v1/codex/sessions")).json()["data"]["sessions"]
            assert [s["sessionId"] for s in listed] == [sid]

            turn = await c.http.post("/v1/codex/turn", json={"sessionId": sid, "input": "hi"})
            assert turn.status_code == 202
            assert turn.json()["data"]["accepted"] is True
            again = await c.http.post("/v1/codex/turn", json={"sessionId": sid, "input": "x"})
            assert _err(again) == (409, "turn_in_progress")
            assert again.json()["error"]["details"]["currentTurnId"] == \
                turn.json()["data"]["turnId"]

            steer = await c.http.post("/v1/codex/turn/steer", json={"sessionId": sid,
                                                                   "input": "more"})
            assert steer.status_code == 200
            interrupt = await c.http.post("/v1/codex/turn/interrupt", json={"sessionId": sid})
            assert interrupt.status_code == 202
            assert _err(await c.http.post("/v1/codex/turn/interrupt",
                                          json={"sessionId": sid})) == (409, "no_active_turn")

            read = (await c.http.get(f"/v1/codex/sessions/{sid}")).json()["data"]
            assert read["session"]["lastTurnStatus"] == "interrupted"
            assert _err(await c.http.get("/v1/codex/sessions/session-nope")) == (404, "not_found")
            bad = await c.http.post("/v1/codex/turn", content=b"{not json",
                                    headers={"content-type": "application/json"})
            assert _err(bad) == (400, "invalid_json")

            page = await c.http.get("/v1/codex/events", params={"after": "0", "limit": "1"})
            assert [e["seq"] for e in page.json()["data"]["events"]] == [1]

            _add_approval(fake, "approval-1")
            pending = await c.http.get("/v1/codex/approvals", params={"state": "pending"})
            assert [a["approvalId"] for a in pending.json()["data"]["approvals"]] == ["approval-1"]
            one = await c.http.get("/v1/codex/approvals/approval-1")
            assert one.json()["data"]["approval"]["state"] == "pending"
            decided = await c.http.post("/v1/codex/approvals/approval-1",
                                        json={"decision": "decline"})
            assert decided.json()["data"]["approval"]["decision"] == "decline"
            second = await c.http.post("/v1/codex/approvals/approval-1",
                                       json={"decision": "accept"})
            assert _err(second) == (409, "approval_resolved")

            codex = (await c.http.get("/v1/codex")).json()["data"]
            assert codex["backend"] == "independent_codexd"
            assert codex["proxy"] == {"target_base_url": fake.url, "reachable": True,
                                      "error": None}
            assert codex["sessions"] == {"count": 1, "active_count": 1}
            assert codex["recent_events"]["count"] == len(fake.events)
            assert not any("runs" in r["path"] or "exec" in r["path"] for r in codex["routes"])


def _add_approval(fake: FakeCodexd, approval_id: str) -> None:
    fake.approvals[approval_id] = Approval(
        approvalId=approval_id, sessionId=None, threadId=None, turnId=None, itemId=None,
        kind="commandExecution", method="item/commandExecution/requestApproval",
        createdAt=now_iso(),
    )


async def test_codexd_down_is_503_and_everything_else_serves(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
            assert (await c.http.get("/v1/codex/sessions")).status_code == 200
            await fake.stop()
            down = await c.http.get("/v1/codex/sessions")
            assert _err(down) == (503, "codexd_unavailable")
            assert down.json()["error"]["details"]["target"] == fake.url
            assert _err(await c.http.post("/v1/codex/turn", json={"sessionId": "s", "input": "x"})
                        ) == (503, "codexd_unavailable")
            assert (await c.http.get("/healthz")).status_code == 200
            assert (await c.http.get("/readyz")).status_code == 200
            status = (await c.http.get("/v1/status")).json()["data"]
            assert status["codexd"]["reachable"] is False
            assert any("codexd unreachable" in w for w in status["warnings"])
            codex = (await c.http.get("/v1/codex")).json()["data"]
            assert codex["proxy"]["reachable"] is False
            state = (await c.http.get("/v1/system/state")).json()["data"]
            assert (state["codexd_reachable"], state["active_turns"]) == (False, None)
            with pytest.raises(CodexdError) as rejected:
                async with open_websocket(_ws(c.url)):
                    pass
            assert (rejected.value.status, rejected.value.code) == (503, "codexd_unavailable")
            # A digit that is not ASCII ("²") is the caller's mistake, not a 500.
            with pytest.raises(CodexdError) as rejected:
                async with open_websocket(_ws(c.url, "?after=%C2%B2")):
                    pass
            assert (rejected.value.status, rejected.value.code) == (400, "invalid_request")


async def test_pause_drain_resume_with_token(tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with trio.fail_after(30):
        async with open_fake_codexd(auto_complete=False) as fake, \
                open_conductor(fake.url, tmp_path, token=TOKEN) as c:
            sid = (await c.http.post("/v1/codex/sessions", json={})).json()["data"]["session"][
                "sessionId"]
            spare = (await c.http.post("/v1/codex/sessions", json={})).json()["data"]["session"][
                "sessionId"]
            assert _err(await c.http.post("/v1/system/pause", json={})) == (401, "unauthorized")
            wrong = {"Authorization": "Bearer nope"}
            assert _err(await c.http.post("/v1/system/pause", headers=wrong, json={})) == (
                401, "unauthorized")
            bogus = await c.http.post("/v1/system/pause", headers=auth, json={"bogus": 1})
            assert _err(bogus) == (400, "invalid_request")
            # The same details as codexd's 400s: the field, by msgspec's path.
            assert bogus.json()["error"]["details"] == {"field": "$.bogus", "path": "$.bogus"}

            paused = await c.http.post("/v1/system/pause", headers=auth,
                                       json={"reason": "maintenance", "requested_by": "ops"})
            assert paused.status_code == 200
            assert paused.json()["data"]["mode"] == "paused"
            refused = await c.http.post("/v1/codex/turn", json={"sessionId": sid, "input": "x"})
            assert _err(refused) == (423, "system_paused")
            assert refused.json()["error"]["details"]["reason"] == "maintenance"
            assert _err(await c.http.post("/v1/codex/sessions", json={})) == (423, "system_paused")
            assert (await c.http.get("/v1/codex/sessions")).status_code == 200
            # Closing a session ends work: the mode never refuses it (issue 20, item 8: the
            # conductor had no close route at all).
            closed = await c.http.post(f"/v1/codex/sessions/{spare}/close", json={})
            assert closed.status_code == 200, closed.text
            assert closed.json()["data"]["session"]["status"] == "closed"

            await c.http.post("/v1/system/resume", headers=auth, json={})
            turn = await c.http.post("/v1/codex/turn", json={"sessionId": sid, "input": "go"})
            assert turn.status_code == 202
            turn_id = turn.json()["data"]["turnId"]

            drained = await c.http.post("/v1/system/drain", headers=auth, json={})
            assert drained.json()["data"]["mode"] == "draining"
            sid2 = (await c.http.post("/v1/codex/sessions", json={})).json()["data"]["session"][
                "sessionId"]
            refused = await c.http.post("/v1/codex/turn", json={"sessionId": sid2, "input": "x"})
            assert _err(refused) == (423, "system_draining")
            closed = await c.http.post(f"/v1/codex/sessions/{sid2}/close", json={})
            assert closed.json()["data"]["session"]["status"] == "closed"
            # codexd's own refusals pass through unchanged.
            busy = await c.http.post(f"/v1/codex/sessions/{sid}/close", json={})
            assert _err(busy) == (409, "turn_in_progress")
            state = (await c.http.get("/v1/system/state")).json()["data"]
            assert (state["mode"], state["drained"]) == ("draining", False)
            assert [t["turnId"] for t in state["active_turns"]] == [turn_id]

            # The running turn may still finish while draining.
            fake.complete_turn(sid)
            state = (await c.http.get("/v1/system/state")).json()["data"]
            assert (state["active_turns"], state["drained"]) == ([], True)
            read = (await c.http.get(f"/v1/codex/sessions/{sid}")).json()["data"]["session"]
            assert read["lastTurnStatus"] == "completed"

        # The mode survives a restart of the conductor.
        async with open_fake_codexd() as fake, \
                open_conductor(fake.url, tmp_path, token=TOKEN) as c:
            state = (await c.http.get("/v1/system/state")).json()["data"]
            assert state["mode"] == "draining"
            status = (await c.http.get("/v1/status")).json()["data"]
            assert status["mode"]["mode"] == "draining"


async def test_without_token_only_loopback_may_change_mode(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
            changed = await c.http.post("/v1/system/pause", json={})
            assert changed.json()["data"]["mode"] == "paused"
            assert changed.json()["data"]["requested_by"] == "127.0.0.1"
            describe = (await c.http.get("/describe")).json()["data"]
            assert describe["auth"]["token_configured"] is False


def _ws(base: str, query: str = "") -> str:
    return base.replace("http://", "ws://") + "/v1/codex/events" + query


async def _frames(ws: trio_websocket.WebSocketConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await ws.get_message()) for _ in range(count)]


async def _close_code(ws: trio_websocket.WebSocketConnection) -> int:
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason is not None
    code: int = closed.value.reason.code
    return code


async def test_event_websocket_is_relayed_with_close_codes(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
            first = (await c.http.post("/v1/codex/sessions", json={})).json()["data"]["session"]
            async with open_websocket(_ws(c.url, "?after=0")) as ws:
                hello, replayed = await _frames(ws, 2)
                assert hello == {"type": "hello", "data": {"lastSeq": 1, "replayFrom": 0}}
                assert (replayed["seq"], replayed["sessionId"]) == (1, first["sessionId"])
                await c.http.post("/v1/codex/sessions", json={})
                (live,) = await _frames(ws, 1)
                assert (live["seq"], live["type"]) == (2, "session.created")
                fake.overflow_all(last_delivered_seq=2)
                (overflow,) = await _frames(ws, 1)
                assert overflow == {"type": "overflow", "data": {"lastDeliveredSeq": 2}}
                assert await _close_code(ws) == 1013

            # sessionId filters; codexd's shutdown close (1001) reaches the client.
            url = _ws(c.url, f"?after=0&sessionId={first['sessionId']}")
            async with open_websocket(url) as ws:
                hello, replayed = await _frames(ws, 2)
                assert replayed["sessionId"] == first["sessionId"]
                await fake.stop()
                assert await _close_code(ws) == 1001


async def test_graceful_stop_closes_relays_and_releases_the_lease(tmp_path: Path) -> None:
    store = MemoryLeaseStore()
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, \
                open_conductor(fake.url, tmp_path, lease_store=store) as c:
            assert store.record is not None
            assert store.record.holder_id == "test-node@testhost"
            async with open_websocket(_ws(c.url)) as ws:
                (hello,) = await _frames(ws, 1)
                assert hello["type"] == "hello"
                c.conductor.begin_stop()
                assert await _close_code(ws) == 1001
            await c.done.wait()
            assert store.record.expires_at <= store.record.renewed_at


async def test_early_refusals_keep_the_connection_usable(tmp_path: Path) -> None:
    # A 401/423 answered before the body is read must not stall the next request on the same
    # keep-alive connection.
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, \
                open_conductor(fake.url, tmp_path, token=TOKEN) as c:
            await c.http.post("/v1/system/pause", headers={"Authorization": f"Bearer {TOKEN}"},
                              json={})
            for size in (0, 10, 20000) * 10:
                body = {"sessionId": "s", "input": "x" * size}
                assert _err(await c.http.post("/v1/codex/turn", json=body)) == (
                    423, "system_paused")
                assert _err(await c.http.post("/v1/codex/sessions", json={})) == (
                    423, "system_paused")
                assert _err(await c.http.post("/v1/system/drain", json=body)) == (
                    401, "unauthorized")
                assert (await c.http.post("/v1/system/state", json={})).status_code == 405
                # Refused before routing (no JSON type), and the connection stays usable.
                assert _err(await c.http.post("/v1/codex/turn", content=b"x" * size)) == (
                    415, "unsupported_media_type")
                assert (await c.http.get("/healthz")).status_code == 200
