"""The conductor's side of the turn queue (issue 23), over the fake codexd: the mode sets
codexd's queue hold (and a restarted conductor asserts it again), queued turns pass a paused
or draining node once codexd confirms the hold, and the new DELETE route keeps every caller
rule that POST has."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from conductor_trio.lease.file import MemoryLeaseStore
from tests.fake_codexd import open_conductor, open_fake_codexd

TOKEN = "queue-conductor-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUEUED = {"sessionId": "session-x", "input": "later", "whenBusy": "queue"}


def _err(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def _posts(fake: object) -> list[str]:
    return [p for m, p, _ in fake.requests if m == "POST"]  # type: ignore[attr-defined]


async def test_the_mode_sets_codexds_hold_and_a_restarted_conductor_asserts_it(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake:
            async with open_conductor(fake.url, tmp_path, token=TOKEN) as c:
                # Running, and codexd not held: nothing to set.
                assert "/v1/codexd/hold" not in _posts(fake)
                paused = await c.http.post("/v1/system/pause", headers=AUTH,
                                           json={"reason": "upgrade"})
                assert paused.json()["data"]["queue_hold"] == {
                    "held": True, "reason": "node paused: upgrade", "confirmed": True,
                    "codexd_held": True, "error": None}
                assert fake.hold == {"held": True, "reason": "node paused: upgrade"}
                drained = await c.http.post("/v1/system/drain", headers=AUTH, json={})
                assert drained.json()["data"]["queue_hold"]["confirmed"] is True
                assert fake.hold == {"held": True, "reason": "node draining"}

            # codexd lost its hold while the conductor was down (a wiped state dir, say):
            # the conductor, still draining, asserts it again as it starts.
            fake.hold = {"held": False, "reason": None}
            async with open_conductor(fake.url, tmp_path, token=TOKEN) as c:
                await fake.wait_hold(True)
                assert fake.hold["reason"] == "node draining"
                resumed = await c.http.post("/v1/system/resume", headers=AUTH, json={})
                assert resumed.json()["data"]["queue_hold"]["codexd_held"] is False
                assert fake.hold == {"held": False, "reason": None}
                # Someone holds codexd behind the conductor's back: the next look at
                # codexd's status puts it back to what the mode says.
                fake.hold = {"held": True, "reason": "by hand"}
                await c.http.get("/v1/system/state")
                await fake.wait_hold(False)


async def test_a_queued_turn_passes_a_held_node_once_codexd_confirms_the_hold(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, \
                open_conductor(fake.url, tmp_path, token=TOKEN) as c:
            fake.refuse_hold = True
            paused = await c.http.post("/v1/system/pause", headers=AUTH, json={})
            # The mode changed anyway (it is the conductor's); the answer says codexd did not
            # confirm, the warnings too, and a queued turn is not let through.
            hold = paused.json()["data"]["queue_hold"]
            assert (paused.json()["data"]["mode"], hold["confirmed"]) == ("paused", False)
            assert "store_unavailable" in hold["error"]
            warnings = (await c.http.get("/v1/runtime")).json()["data"]["warnings"]
            assert any("queue hold" in w for w in warnings)
            refused = await c.http.post("/v1/codex/turn", json=QUEUED)
            assert _err(refused) == (503, "codexd_unavailable")
            assert "/v1/codexd/turn" not in _posts(fake)

            fake.refuse_hold = False
            plain = await c.http.post("/v1/codex/turn", json={**QUEUED, "whenBusy": "reject"})
            assert _err(plain) == (423, "system_paused")
            broken = await c.http.post("/v1/codex/turn", content=b"{not json",
                                       headers={"content-type": "application/json"})
            assert _err(broken) == (423, "system_paused")
            forwarded = await c.http.post("/v1/codex/turn", json=QUEUED)
            # The fake has no session-x: its own 404 came back, so the turn was forwarded,
            # after the hold was confirmed.
            assert _err(forwarded) == (404, "not_found")
            posts = _posts(fake)
            assert posts.index("/v1/codexd/turn") > posts.index("/v1/codexd/hold")
            assert fake.hold["held"] is True


async def test_delete_keeps_the_caller_rules_of_every_write(tmp_path: Path) -> None:
    path = "/v1/codex/sessions/session-x/queue/queue-y"
    with trio.fail_after(30):
        async with open_fake_codexd() as fake:
            async with open_conductor(fake.url, tmp_path / "a") as c:
                port = c.url.rsplit(":", 1)[1]
                foreign = await c.http.delete(path, headers={"origin": "http://evil.example"})
                assert _err(foreign) == (403, "origin_not_allowed")
                rebound = await c.http.delete(path, headers={"host": f"evil.example:{port}"})
                assert _err(rebound) == (421, "host_not_allowed")
                assert not [p for m, p, _ in fake.requests if m == "DELETE"]
                # Allowed: proxied with the ids encoded (the fake has no such route: 404).
                await c.http.delete("/v1/codex/sessions/a%3Fb/queue/c%3Fd")
                assert ("DELETE", "/v1/codexd/sessions/a?b/queue/c?d") in [
                    (m, p) for m, p, _ in fake.requests]

            store = MemoryLeaseStore()
            store.failing = True  # never the leader
            async with open_conductor(fake.url, tmp_path / "b", lease_store=store) as c:
                assert _err(await c.http.delete(path)) == (503, "not_leader")

            async with open_conductor(fake.url, tmp_path / "c", token=TOKEN,
                                      local_api="http://0.0.0.0:0",
                                      allowed_hosts=("0.0.0.0",)) as c, \
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{c.url.rsplit(':', 1)[1]}") \
                    as http:
                assert _err(await http.delete(path)) == (401, "unauthorized")
                assert (await http.delete(path, headers=AUTH)).status_code == 404
