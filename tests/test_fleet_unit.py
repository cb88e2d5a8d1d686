"""The fleet's sans-IO parts (cursors, merged pages, placement), its access rule and settings,
and its etcd records against a real etcd (issue 28)."""

from __future__ import annotations

import argparse
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from codexd_trio.store.sessiontable import activity_time as codexd_activity_time
from codexd_trio.web.envelope import decode_key_cursor, encode_key_cursor
from conductor_trio.auth.devices import DeviceStore
from conductor_trio.config import (
    ConductorConfig,
    ConfigError,
    add_conductor_flags,
    parse_labels,
    resolve_conductor,
)
from conductor_trio.fleet.merge import (
    BadCursor,
    activity_time,
    decode_fleet_cursor,
    encode_fleet_cursor,
    merge_approvals,
    merge_sessions,
    node_cursor,
)
from conductor_trio.fleet.peers import Peers
from conductor_trio.fleet.records import (
    FleetNode,
    NodeCounts,
    NodeRecord,
    labels_match,
    place,
)
from conductor_trio.fleet.registry import FleetRegistry
from conductor_trio.lease.etcd_gateway import EtcdGateway
from conductor_trio.web.access import Caller, fleet_access
from tests.etcd_fixture import free_port, open_etcd, require_etcd
from tests.fake_codexd import open_fake_codexd
from tests.test_lease_etcd import TTL, conductor, wait_one_leader


def _session(sid: str, updated: str) -> dict[str, Any]:
    return {"sessionId": sid, "updatedAt": updated}


def test_the_node_cursor_is_codexds_own_activity_cursor() -> None:
    for updated in ("2026-12-07T06:16:02.123Z", "2026-01-01T00:00:00.000+00:00", "garbage"):
        assert activity_time(updated) == codexd_activity_time(updated)
        expected = encode_key_cursor((codexd_activity_time(updated), "session-x"))
        assert node_cursor(updated, "session-x") == expected
        assert decode_key_cursor(node_cursor(updated, "session-x")) == (
            codexd_activity_time(updated), "session-x")


def test_fleet_cursors_round_trip_and_made_up_ones_are_refused() -> None:
    cursor = encode_fleet_cursor("2026-12-07T06:16:02.123Z", "session-1")
    assert decode_fleet_cursor(cursor) == ("2026-12-07T06:16:02.123Z", "session-1")
    assert decode_fleet_cursor(None) is None
    assert decode_fleet_cursor("") is None
    for bad in ("made-up", "!!!", encode_key_cursor((1.0, "x")), "Zm9v"):
        with pytest.raises(BadCursor):
            decode_fleet_cursor(bad)


def test_merged_sessions_newest_first_each_naming_its_node() -> None:
    pages = {
        "a": ([_session("s-a2", "2026-12-07T06:00:05.000Z"),
               _session("s-a1", "2026-12-07T06:00:01.000Z")], False),
        "b": ([_session("s-b2", "2026-12-07T06:00:04.000Z"),
               _session("s-b1", "2026-12-07T06:00:02.000Z")], True),
        "c": ([], False),
    }
    items, following = merge_sessions(pages, 3)
    assert [(s["sessionId"], s["node"]) for s in items] == [
        ("s-a2", "a"), ("s-b2", "b"), ("s-b1", "b")]
    assert decode_fleet_cursor(following) == ("2026-12-07T06:00:02.000Z", "s-b1")
    # The last page: nothing left anywhere.
    items, following = merge_sessions({"a": (pages["a"][0], False)}, 5)
    assert len(items) == 2
    assert following is None
    # A node with more but nothing on this page still gets a cursor.
    items, following = merge_sessions({"a": (pages["a"][0][:1], True)}, 5)
    assert following is not None


def test_equal_times_order_by_session_id_like_codexd() -> None:
    same = "2026-12-07T06:00:00.000Z"
    pages = {"a": ([_session("s-3", same), _session("s-1", same)], False),
             "b": ([_session("s-2", same)], False)}
    items, _ = merge_sessions(pages, 10)
    assert [s["sessionId"] for s in items] == ["s-3", "s-2", "s-1"]


def test_merged_approvals_page_below_the_cursor() -> None:
    def approval(aid: str, created: str) -> dict[str, Any]:
        return {"approvalId": aid, "createdAt": created}

    pages = {"a": [approval("p1", "2026-12-07T06:00:01.000Z"),
                   approval("p3", "2026-12-07T06:00:03.000Z")],
             "b": [approval("p2", "2026-12-07T06:00:02.000Z")]}
    first, cursor = merge_approvals(pages, 2, None)
    assert [(x["approvalId"], x["node"]) for x in first] == [("p3", "a"), ("p2", "b")]
    rest, end = merge_approvals(pages, 2, decode_fleet_cursor(cursor))
    assert [x["approvalId"] for x in rest] == ["p1"]
    assert end is None


def _node(node_id: str, *, turns: int = 0, sessions: int = 0, labels: dict[str, str] | None = None,
          mode: str = "running", child: str = "running", reachable: bool = True,
          registered: bool = True) -> FleetNode:
    record = NodeRecord(nodeId=node_id, host="h", apiBase=f"http://{node_id}:4317",
                        version="1", mode=mode, role="standby", child=child,
                        codexdReachable=True, labels=labels or {},
                        counts=NodeCounts(activeTurns=turns, sessions=sessions),
                        updatedAt="2026-12-07T06:00:00.000Z")
    return FleetNode(nodeId=node_id, registered=registered, reachable=reachable,
                     registration=record, error=None if reachable else "timeout")


def test_placement_fewest_active_turns_among_the_healthy_ones() -> None:
    nodes = [_node("a", turns=3), _node("b", turns=1, sessions=50), _node("c", turns=1),
             _node("d", mode="paused"), _node("e", child="restarting"),
             _node("f", reachable=False), _node("g", registered=False)]
    chosen, why = place(nodes)
    assert chosen is not None
    assert chosen.nodeId == "c"  # b ties on turns, has more sessions
    assert why["d"] == "mode paused"
    assert why["e"] == "Codex is restarting"
    assert why["f"].startswith("does not answer")
    assert why["g"].startswith("not registered")
    assert "busier" in why["a"]


def test_this_node_is_placed_on_without_an_advertised_address() -> None:
    # One node without etcd: it calls itself at its bound address (found by the console test).
    alone = _node("n")
    assert alone.registration is not None
    record = msgspec.structs.replace(alone.registration, apiBase=None)
    me = msgspec.structs.replace(alone, registration=record, self=True)
    other = msgspec.structs.replace(me, nodeId="m", self=False)
    chosen, why = place([me, other])
    assert chosen is me
    assert why["m"] == "no advertised API base (--advertise-url)"


def test_placement_by_label_and_by_name_and_why_nothing_fits() -> None:
    nodes = [_node("a"), _node("b", labels={"gpu": "", "repo": "baa"}, turns=9)]
    chosen, _ = place(nodes, labels=["gpu"])
    assert chosen is not None
    assert chosen.nodeId == "b"
    chosen, _ = place(nodes, labels=["repo=baa", "gpu"])
    assert chosen is not None
    assert chosen.nodeId == "b"
    chosen, why = place(nodes, labels=["repo=other"])
    assert chosen is None
    assert set(why) == {"a", "b"}
    chosen, _ = place(nodes, node="b")
    assert chosen is not None
    assert chosen.nodeId == "b"
    chosen, why = place(nodes, node="zz")
    assert chosen is None
    assert why["zz"] == "no such node in the fleet"
    assert labels_match({"gpu": ""}, ["gpu"])
    assert not labels_match({"gpu": ""}, ["gpu=1"])


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_conductor_flags(parser)
    return parser.parse_args(argv)


def test_fleet_settings() -> None:
    assert parse_labels(["gpu", "repo=baa", " x = y "]) == (
        ("gpu", ""), ("repo", "baa"), ("x", "y"))
    with pytest.raises(ConfigError):
        parse_labels(["=v"])
    config = resolve_conductor(_args("--lease-store", "etcd://127.0.0.1:2379", "--fleet",
                                     "--advertise-url", "http://mini:4317/", "--label", "gpu"),
                               env={})
    assert (config.fleet, config.advertise_url, config.labels) == (
        True, "http://mini:4317", (("gpu", ""),))
    assert config.fleet_prefix == "/baa-conductor"
    env = {"BAA_CONDUCTOR_FLEET": "1", "BAA_CONDUCTOR_LEASE_STORE": "etcd://127.0.0.1:2379",
           "BAA_CONDUCTOR_ADVERTISE_URL": "http://mini:4317", "BAA_CONDUCTOR_LABELS": "a,b=c"}
    config = resolve_conductor(_args(), env=env)
    assert config.fleet
    assert config.labels == (("a", ""), ("b", "c"))
    with pytest.raises(ConfigError, match="etcd"):
        resolve_conductor(_args("--fleet", "--advertise-url", "http://mini:4317"), env={})
    with pytest.raises(ConfigError, match="advertise"):
        resolve_conductor(_args("--fleet", "--lease-store", "etcd://127.0.0.1:2379"), env={})


def test_fleet_routes_never_run_for_a_caller_not_authenticated() -> None:
    token = ConductorConfig(shared_token="s3cret")
    loopback = "127.0.0.1"
    # With a shared token: reads too, loopback too.
    assert fleet_access(token, Caller("GET", remote_addr=loopback))[1] is not None
    assert fleet_access(token, Caller("GET", "Bearer wrong", remote_addr=loopback))[1] is not None
    assert fleet_access(token, Caller("GET", "Bearer s3cret", remote_addr="10.0.0.9"))[1] is None
    assert fleet_access(token, Caller("WS", query_tokens=["s3cret"]))[1] is None
    # etcd and no shared token: no node credential, nothing goes.
    etcd = ConductorConfig(lease_store="etcd", lease_endpoints=("127.0.0.1:2379",))
    refused = fleet_access(etcd, Caller("GET", remote_addr=loopback))[1]
    assert refused is not None
    assert refused.details["setting"] == "BAA_SHARED_TOKEN_FILE"
    # One node, no token: /v1/codex/*'s rules (loopback reads and writes).
    alone = ConductorConfig()
    assert fleet_access(alone, Caller("POST", remote_addr=loopback))[1] is None
    assert fleet_access(alone, Caller("POST", remote_addr="10.0.0.9"))[1] is not None


def _record(node_id: str, sessions: int) -> NodeRecord:
    return NodeRecord(nodeId=node_id, host="h", apiBase=None, version="1", mode="running",
                      role="standby", counts=NodeCounts(sessions=sessions),
                      updatedAt="2026-12-07T06:00:00.000Z")


async def test_registrations_members_and_owner_records_in_a_real_etcd(tmp_path: Path) -> None:
    require_etcd()
    with trio.fail_after(60):
        async with open_etcd(tmp_path) as etcd, trio.open_nursery() as nursery:
            gateway = EtcdGateway([etcd.endpoint])
            try:
                one = FleetRegistry(gateway, prefix="/t", node_id="one", ttl_s=2)
                two = FleetRegistry(gateway, prefix="/t", node_id="two", ttl_s=2)
                counts = {"one": 1}

                async def build_one() -> NodeRecord:
                    return _record("one", counts["one"])

                async def build_two() -> NodeRecord:
                    return _record("two", 7)

                await nursery.start(lambda task_status: one.run(
                    build_one, every_s=0.05, refresh_s=5, task_status=task_status))
                await nursery.start(lambda task_status: two.run(
                    build_two, every_s=0.05, refresh_s=5, task_status=task_status))
                registered, members = await one.nodes()
                assert set(registered) == set(members) == {"one", "two"}
                assert registered["two"].counts.sessions == 7
                # A change is put again without waiting for the refresh.
                counts["one"] = 2
                one.changed()
                # etcd is another process: bounded polling of what it holds.
                while (await two.nodes())[0]["one"].counts.sessions != 2:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                # A sibling prefix is not part of this fleet.
                other = FleetRegistry(gateway, prefix="/t2", node_id="x", ttl_s=2)
                assert await other.nodes() == ({}, {})

                assert await one.owner("session-1") is None
                await one.set_owner("session-1", "two")
                assert await two.owner("session-1") == "two"

                # Leaving: gone from nodes/ at once, still a member with its last counts.
                nursery.cancel_scope.cancel()
                await two.release()
                registered, members = await one.nodes()
                assert "two" not in registered
                assert members["two"].counts.sessions == 7
            finally:
                with trio.CancelScope(shield=True):
                    await one.release()
                    await gateway.aclose()


async def test_a_fleet_standby_serves_its_own_sessions_and_a_pause_is_registered_at_once(
        tmp_path: Path) -> None:
    """Issue 28 §3: on a fleet node ``not_leader`` refuses only leader-only work: the standby
    creates sessions on its own codexd (a pair's standby refuses them: test_lease_etcd)."""
    require_etcd()
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    auth = {"Authorization": "Bearer t0ken"}
    with trio.fail_after(120):
        async with open_etcd(tmp_path) as etcd, open_fake_codexd() as fake, \
                AsyncExitStack() as stack:
            nodes = []
            for name in ("a", "b"):
                port = free_port()
                nodes.append(await stack.enter_async_context(conductor(
                    name, etcd, tmp_path, fake.url, "--fleet", "--token-file", str(token),
                    "--local-api", f"http://127.0.0.1:{port}",
                    "--advertise-url", f"http://127.0.0.1:{port}", port=port)))
            leader = await wait_one_leader(nodes, within_s=TTL + 3)
            standby = nodes[1] if leader is nodes[0] else nodes[0]
            assert await standby.role() == "standby"
            made = await standby.http.post("/v1/codex/sessions", json={}, headers=auth)
            assert made.status_code == 201, made.text
            # ... so it is ready (a pair's standby is not: test_lease_etcd).
            ready = await standby.http.get("/readyz")
            assert (ready.status_code, ready.json()["data"]["role"]) == (200, "standby")
            # The standby answers for the fleet too, and names both nodes.
            listed = await standby.http.get("/v1/fleet/nodes", headers=auth)
            assert {n["nodeId"] for n in listed.json()["data"]["nodes"]} == {"a", "b"}

            # A pause reaches the registration (a change is put when seen, not at the refresh,
            # 5 s away; the bound is for a loaded machine, not a speed claim).
            paused = await standby.http.post("/v1/system/pause", json={}, headers=auth)
            assert paused.status_code == 200
            with trio.fail_after(10):
                while True:
                    seen = (await leader.http.get("/v1/fleet/nodes", headers=auth)
                            ).json()["data"]["nodes"]
                    if {n["nodeId"]: n["registration"]["mode"] for n in seen}[
                            standby.name] == "paused":
                        break
                    await trio.sleep(0.05)
            # ... and placement leaves it out, saying why.
            refused = await leader.http.post("/v1/fleet/sessions", headers=auth,
                                             json={"node": standby.name})
            assert refused.status_code == 503
            assert refused.json()["error"]["details"]["nodes"][standby.name] == "mode paused"


async def test_a_paired_device_reads_the_fleet_and_a_revoked_one_does_not(
        tmp_path: Path) -> None:
    """The phone pairing of issue 25 works against any node: its device token is a credential
    for /v1/fleet/* there (the node then calls the others with its own node credential)."""
    store = DeviceStore(tmp_path / "devices.json")
    store.load()
    device, token = await store.add("phone", ["codex"])
    config = ConductorConfig(shared_token="s3cret", lease_store="etcd",
                             lease_endpoints=("127.0.0.1:2379",))
    came_as, refused = fleet_access(config, Caller("GET", f"Bearer {token}"), store)
    assert refused is None
    assert came_as is not None
    assert came_as.id == device.id
    await store.revoke(device.id)
    _, refused = fleet_access(config, Caller("GET", f"Bearer {token}"), store)
    assert refused is not None
    assert refused.details["reason"] == "device_revoked"


async def test_a_node_that_does_not_answer_in_time_is_named_with_its_last_counts(
        tmp_path: Path) -> None:
    """Per-node deadlines: B frozen (SIGSTOP) but still registered (its lease has 10 s): A's
    merged page still answers, with A's sessions, and B ``unreachable`` with its counts."""
    require_etcd()
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    auth = {"Authorization": "Bearer t0ken"}
    with trio.fail_after(120):
        async with open_etcd(tmp_path) as etcd, open_fake_codexd() as fake, \
                AsyncExitStack() as stack:
            nodes = []
            for name in ("a", "b"):
                port = free_port()
                nodes.append(await stack.enter_async_context(conductor(
                    name, etcd, tmp_path, fake.url, "--fleet", "--token-file", str(token),
                    "--advertise-url", f"http://127.0.0.1:{port}", "--lease-ttl", "10",
                    port=port)))
            a, b = nodes
            made = await a.http.post("/v1/fleet/sessions", headers=auth, json={"node": "a"})
            assert made.status_code == 201, made.text
            with trio.fail_after(10):
                while True:  # another process registering: bounded polling
                    seen = (await a.http.get("/v1/fleet/nodes", headers=auth)
                            ).json()["data"]["nodes"]
                    if len(seen) == 2 and all(n["reachable"] for n in seen):
                        break
                    await trio.sleep(0.05)
            os.killpg(b.daemon.process.pid, signal.SIGSTOP)
            try:
                page = (await a.http.get("/v1/fleet/sessions", headers=auth)).json()["data"]
                states = {n["nodeId"]: n for n in page["nodes"]}
                assert states["a"]["state"] == "ok"
                assert states["b"]["state"] == "unreachable"
                assert "no answer within" in states["b"]["error"]
                assert states["b"]["counts"]["sessions"] is not None
                # The fake codexd is shared: A's answer holds its sessions, named A's.
                assert {s["node"] for s in page["sessions"]} == {"a"}
                listed = (await a.http.get("/v1/fleet/nodes", headers=auth)).json()["data"]
                b_now = {n["nodeId"]: n for n in listed["nodes"]}["b"]
                assert (b_now["registered"], b_now["reachable"]) == (True, False)
            finally:
                os.killpg(b.daemon.process.pid, signal.SIGCONT)


async def test_with_etcd_silent_the_fleet_answers_from_what_it_last_read(tmp_path: Path) -> None:
    """etcd frozen: the views keep the last registrations read (``etcdError`` says why), and a
    session is still placed and created; its owner is found by asking the nodes."""
    require_etcd()
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    auth = {"Authorization": "Bearer t0ken"}
    with trio.fail_after(120):
        async with open_etcd(tmp_path) as etcd, open_fake_codexd() as fake, \
                AsyncExitStack() as stack:
            nodes = []
            for name in ("a", "b"):
                port = free_port()
                nodes.append(await stack.enter_async_context(conductor(
                    name, etcd, tmp_path, fake.url, "--fleet", "--token-file", str(token),
                    "--advertise-url", f"http://127.0.0.1:{port}", port=port)))
            a = nodes[0]
            with trio.fail_after(10):
                while True:  # another process registering: bounded polling
                    listed = (await a.http.get("/v1/fleet/nodes", headers=auth)).json()["data"]
                    if len(listed["nodes"]) == 2:
                        break
                    await trio.sleep(0.05)
            etcd.pause()
            try:
                listed = (await a.http.get("/v1/fleet/nodes", headers=auth)).json()["data"]
                assert {n["nodeId"] for n in listed["nodes"]} == {"a", "b"}
                assert listed["etcdError"]
                made = await a.http.post("/v1/fleet/sessions", headers=auth, json={"node": "b"})
                assert made.status_code == 201, made.text
                sid = made.json()["data"]["session"]["sessionId"]
                # No owner record could be written: every node is asked (the fake codexd is
                # shared, so the first to answer owns it here).
                found = await a.http.get(f"/v1/fleet/sessions/{sid}", headers=auth)
                assert found.status_code == 200
                assert found.headers["X-Baa-Node"] in {"a", "b"}
                # The node says its registration is not getting through.
                with trio.fail_after(10):
                    while True:  # another process: bounded polling
                        warnings = (await a.http.get("/v1/runtime")).json()["data"]["warnings"]
                        if any(w.startswith("fleet registration failing") for w in warnings):
                            break
                        await trio.sleep(0.05)
            finally:
                etcd.resume()


async def test_a_peer_at_an_unusable_address_is_an_answer_with_its_error() -> None:
    # etcd is shared: a registration may name an address no client can use; the fan-out must
    # still answer for every other node.
    peers = Peers("t0ken")
    try:
        answers = await peers.fan_out({"bad": "http://[::1", "noscheme": "mini:4317",
                                       "closed": f"http://127.0.0.1:{free_port()}"},
                                      "/healthz", deadline_s=5)
    finally:
        await peers.aclose()
    assert {n: a.status for n, a in answers.items()} == {
        "bad": None, "noscheme": None, "closed": None}
    assert all(a.error for a in answers.values())
