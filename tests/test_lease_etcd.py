"""The etcd leader lease end to end: real conductors (processes) sharing one real etcd on
loopback. Short TTLs (2 s) keep these fast; the bounds below are the issue's (TTL + 3 s etc.)."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from tests.etcd_fixture import Etcd, free_port, open_etcd, require_etcd
from tests.fake_codexd import Daemon, open_fake_codexd, spawn_daemon

CONDUCTOR = [sys.executable, "-m", "conductor_trio"]
TTL = 2
# How late polling another process may see what it did by a deadline (a loaded 2-core CI
# machine): the lease bounds below are the issue's, plus this.
OBSERVE_MARGIN_S = 1.0


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BAA_")}


class Node:
    """One conductor process and a client for it."""

    def __init__(self, name: str, daemon: Daemon, http: httpx.AsyncClient) -> None:
        self.name, self.daemon, self.http = name, daemon, http

    async def role(self) -> str:
        return (await self.http.get("/rolez")).text.strip()


@asynccontextmanager
async def conductor(name: str, etcd: Etcd, tmp: Path, codexd: str, *extra: str,
                    port: int = 0) -> AsyncIterator[Node]:
    argv = [*CONDUCTOR, "start", "--local-api", f"http://127.0.0.1:{port}",
            "--codexd-base", codexd, "--state-dir", str(tmp / name), "--node-id", name,
            "--host", "testhost", "--lease-store", f"etcd://{etcd.endpoint}",
            "--lease-ttl", str(TTL), *extra]
    async with (
        spawn_daemon(argv, env=_env()) as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=10) as http,
    ):
        yield Node(name, daemon, http)


async def wait_role(node: Node, role: str, *, within_s: float) -> None:
    """Ask ``node`` until it answers ``role``. Another process cannot tell us; bounded."""
    with trio.fail_after(within_s):
        while await node.role() != role:  # noqa: ASYNC110 - cross-process polling, bounded
            await trio.sleep(0.05)


async def wait_one_leader(nodes: list[Node], *, within_s: float) -> Node:
    with trio.fail_after(within_s):
        while True:
            roles = [await n.role() for n in nodes]
            assert roles.count("leader") <= 1, roles
            if roles.count("leader") == 1:
                return nodes[roles.index("leader")]
            await trio.sleep(0.05)


async def sample_never_two_leaders(nodes: list[Node], *, for_s: float) -> int:
    """Ask every node at the same time every 50 ms for ``for_s``; fail on two ``leader``s.
    Returns the number of rounds."""
    rounds = 0
    with trio.move_on_after(for_s):
        while True:
            answers: dict[str, str] = {}

            async def ask(node: Node, answers: dict[str, str] = answers) -> None:
                answers[node.name] = await node.role()

            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(ask, node)
            rounds += 1
            assert list(answers.values()).count("leader") <= 1, answers
            await trio.sleep(0.05)
    return rounds


async def test_two_conductors_one_leader_and_the_standby_names_it(tmp_path: Path) -> None:
    require_etcd()
    with trio.fail_after(120):
        async with open_etcd(tmp_path) as etcd, open_fake_codexd() as fake, AsyncExitStack() as st:
            fast = ("--heartbeat", "0.1")
            a = await st.enter_async_context(conductor("a", etcd, tmp_path, fake.url, *fast))
            b = await st.enter_async_context(conductor("b", etcd, tmp_path, fake.url, *fast))
            leader = await wait_one_leader([a, b], within_s=TTL + 3)
            standby = b if leader is a else a
            assert await standby.role() == "standby"

            # The heartbeat is a leader-only job: it ticks on the leader only.
            async def beats(node: Node) -> int:
                runtime = (await node.http.get("/v1/runtime")).json()["data"]
                runs: int = runtime["loops"]["heartbeat"]["runs"]
                return runs

            standby_beats, leader_beats = await beats(standby), await beats(leader)
            with trio.fail_after(10):
                while await beats(leader) < leader_beats + 5:  # noqa: ASYNC110 - bounded
                    await trio.sleep(0.05)
            assert await beats(standby) == standby_beats

            refused = await standby.http.post("/v1/codex/sessions", json={})
            assert refused.status_code == 503
            err = refused.json()["error"]
            assert err["code"] == "not_leader"
            assert err["details"]["leader"] == {
                "nodeId": leader.name, "host": "testhost", "localApiBase": leader.daemon.url}
            # Reads are served by the standby; writes go through the leader.
            assert (await standby.http.get("/v1/codex/sessions")).status_code == 200
            assert (await leader.http.post("/v1/codex/sessions", json={})).status_code == 201
            # /v1/system/* stays local to a node, leader or not.
            paused = await standby.http.post("/v1/system/pause", json={})
            assert paused.status_code == 200
            assert (await standby.http.get("/readyz")).status_code == 503

            # The term (fencing token) is the key's create revision: both nodes see the same.
            lead_rt = (await leader.http.get("/v1/runtime")).json()["data"]
            stand_rt = (await standby.http.get("/v1/runtime")).json()["data"]
            assert lead_rt["lease"]["store"] == "etcd"
            assert lead_rt["lease"]["is_holder"] is True
            term = lead_rt["lease"]["term"]
            assert isinstance(term, int)
            assert term > 0
            assert stand_rt["lease"]["term"] == term
            assert lead_rt["lease"]["fencing_token"] == term
            assert stand_rt["lease"]["holder_id"] == f"{leader.name}@testhost"
            status = (await leader.http.get("/v1/status")).json()["data"]
            assert (status["role"], status["lease"]["term"]) == ("leader", term)
            assert lead_rt["loops"]["heartbeat"]["fenced"] is True

            # A graceful stop revokes the lease: the standby learns it by its watch and takes
            # over with a higher term.
            leader.daemon.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await leader.daemon.process.wait() == 0
            await wait_role(standby, "leader", within_s=TTL + 3)
            new_term = (await standby.http.get("/v1/runtime")).json()["data"]["lease"]["term"]
            assert new_term > term


async def test_sigstop_of_the_leader_fails_over_and_it_never_leads_alongside(
    tmp_path: Path,
) -> None:
    require_etcd()
    with trio.fail_after(120):
        async with open_etcd(tmp_path) as etcd, AsyncExitStack() as st:
            dead = f"http://127.0.0.1:{free_port()}"  # no codexd: the lease does not need one
            a = await st.enter_async_context(conductor("a", etcd, tmp_path, dead))
            b = await st.enter_async_context(conductor("b", etcd, tmp_path, dead))
            leader = await wait_one_leader([a, b], within_s=TTL + 3)
            other = b if leader is a else a
            os.killpg(leader.daemon.process.pid, signal.SIGSTOP)  # a laptop lid, a VM pause
            try:
                await wait_role(other, "leader", within_s=TTL + 3)
                # Frozen well past its TTL, so it wakes with a lease etcd has expired.
                await trio.sleep(TTL)
            finally:
                os.killpg(leader.daemon.process.pid, signal.SIGCONT)
            rounds = await sample_never_two_leaders([leader, other], for_s=2 * TTL)
            assert rounds > 10
            assert await wait_one_leader([leader, other], within_s=TTL) is other
            assert await leader.role() == "standby"


async def test_sigkill_of_the_leader_fails_over_and_the_restart_is_standby(
    tmp_path: Path,
) -> None:
    require_etcd()
    with trio.fail_after(120):
        async with open_etcd(tmp_path) as etcd, AsyncExitStack() as st:
            dead = f"http://127.0.0.1:{free_port()}"
            a = await st.enter_async_context(conductor("a", etcd, tmp_path, dead))
            await wait_role(a, "leader", within_s=TTL + 3)
            b = await st.enter_async_context(conductor("b", etcd, tmp_path, dead))
            assert await b.role() == "standby"
            os.killpg(a.daemon.process.pid, signal.SIGKILL)
            await a.daemon.process.wait()
            await wait_role(b, "leader", within_s=TTL + 3)
            # Restarted with a dead endpoint listed first: it goes on to the live one.
            dead_etcd = f"127.0.0.1:{free_port()}"
            again = await st.enter_async_context(conductor(
                "a", etcd, tmp_path, dead, "--lease-store",
                f"etcd://{dead_etcd},{etcd.endpoint}"))
            assert await again.role() == "standby"
            rounds = await sample_never_two_leaders([again, b], for_s=TTL)
            assert rounds > 5
            assert await b.role() == "leader"


NOT_ETCD = {
    # A member started without the gateway: Go's plain 404.
    "no-gateway-404": b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      b"X-Content-Type-Options: nosniff\r\nContent-Length: 19\r\n"
                      b"Connection: close\r\n\r\n404 page not found\n",
    # A load balancer in front of a member that is down.
    "html-502": b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 87\r\n"
                b"Connection: close\r\n\r\n<html><head><title>502 Bad Gateway</title></head>"
                b"<body><h1>502 Bad Gateway</h1></body></html>\n",
}


@pytest.mark.parametrize("answer", NOT_ETCD.values(), ids=NOT_ETCD.keys())
async def test_a_member_that_does_not_answer_as_etcd_listed_first_does_not_stop_the_election(
    tmp_path: Path, answer: bytes,
) -> None:
    # Its answer used to end the call (EtcdUnavailable) instead of moving on to the next
    # endpoint: the node stayed degraded with a healthy etcd listed second.
    require_etcd()
    asked: list[bytes] = []

    async def member(stream: trio.SocketStream) -> None:
        """Reads one HTTP request, answers ``answer``, closes."""
        buffer = b""
        async with stream:
            while b"\r\n\r\n" not in buffer:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                buffer += chunk
            head, _, body = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                body += chunk
            asked.append(head.split(b"\r\n", 1)[0])
            await stream.send_all(answer)

    with trio.fail_after(120):
        async with open_etcd(tmp_path) as etcd, trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, member, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            try:
                dead = f"http://127.0.0.1:{free_port()}"  # no codexd: the lease needs none
                async with conductor("a", etcd, tmp_path, dead, "--lease-store",
                                     f"etcd://127.0.0.1:{port},{etcd.endpoint}") as a:
                    await wait_role(a, "leader", within_s=TTL + 3)
                    assert asked[0] == b"POST /v3/kv/range HTTP/1.1"  # asked first, skipped
                    lease = (await a.http.get("/v1/runtime")).json()["data"]["lease"]
                    assert lease["is_holder"] is True
            finally:
                nursery.cancel_scope.cancel(reason="the test is over")


async def test_a_frozen_etcd_leaves_no_leader_then_one_again(tmp_path: Path) -> None:
    require_etcd()
    with trio.fail_after(120):
        async with open_etcd(tmp_path) as etcd, AsyncExitStack() as st:
            dead = f"http://127.0.0.1:{free_port()}"
            a = await st.enter_async_context(conductor("a", etcd, tmp_path, dead))
            b = await st.enter_async_context(conductor("b", etcd, tmp_path, dead))
            await wait_one_leader([a, b], within_s=TTL + 3)
            etcd.pause()
            try:
                # A leader steps down by itself within the TTL of its last renewal (before
                # etcd could grant the key to anyone else). Observed from outside, through
                # HTTP polls of two processes on a shared machine: OBSERVE_MARGIN_S for that.
                with trio.fail_after(TTL + OBSERVE_MARGIN_S):
                    while "leader" in {await a.role(), await b.role()}:  # noqa: ASYNC110 - bounded
                        await trio.sleep(0.05)
                for node in (a, b):
                    assert (await node.http.get("/readyz")).status_code == 503
                    assert await node.role() != "leader"
            finally:
                etcd.resume()
            await wait_one_leader([a, b], within_s=TTL + 5)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--lease-store", "etcd://nohost"], {}, "BAA_CONDUCTOR_LEASE_STORE"),
        ([], {"BAA_CONDUCTOR_LEASE_STORE": "redis://127.0.0.1:6379"}, "file or etcd://"),
        (["--lease-store", "etcd://127.0.0.1:2379", "--lease-ttl", "1.5"], {}, "whole number"),
        ([], {"BAA_CONDUCTOR_LEASE_STORE": "etcd://127.0.0.1:2379",
              "BAA_CONDUCTOR_LEASE_TTL_S": "1"}, ">= 2"),
        ([], {"BAA_CONDUCTOR_STANDBY_WRITES": "maybe"}, "refuse or allow"),
        ([], {"BAA_CONDUCTOR_LEASE_KEY": "a key"}, "BAA_CONDUCTOR_LEASE_KEY"),
    ],
)
async def test_bad_lease_settings_are_one_line_and_exit_2(
    args: list[str], env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    result = await trio.run_process(
        [*CONDUCTOR, "start", "--state-dir", str(tmp_path), *args],
        env={**_env(), **env}, capture_stdout=True, capture_stderr=True, check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("conductor: ")
    assert needle in lines[0]


async def test_etcd_defaults_in_the_resolved_config() -> None:
    result = await trio.run_process(
        [*CONDUCTOR, "config"], capture_stdout=True,
        env={**_env(), "BAA_CONDUCTOR_LEASE_STORE": "etcd://10.0.0.1:2379,10.0.0.2:2379"})
    config = json.loads(result.stdout)
    assert config["lease_store"] == "etcd"
    assert config["lease_endpoints"] == ["10.0.0.1:2379", "10.0.0.2:2379"]
    assert config["lease_key"] == "/baa-conductor/leader"
    assert (config["lease_ttl_s"], config["standby_writes"]) == (10.0, "refuse")
    plain = json.loads((await trio.run_process(
        [*CONDUCTOR, "config"], capture_stdout=True, env=_env())).stdout)
    # A standby refuses writes with either store (CONTRACT); allow is opt-in.
    assert (plain["lease_store"], plain["lease_ttl_s"], plain["standby_writes"]) == (
        "file", 30.0, "refuse")


async def test_a_standby_forwards_writes_when_allowed_and_names_the_leaders_public_base(
    tmp_path: Path,
) -> None:
    """``BAA_CONDUCTOR_STANDBY_WRITES=allow`` relays a standby's writes to its codexd;
    ``BAA_CONDUCTOR_PUBLIC_API_BASE`` is the address the leader publishes in the lease, so the
    ``not_leader`` refusal sends clients there (not to the address it listens on)."""
    require_etcd()
    public = "http://leader-a.example.invalid:4317"
    with trio.fail_after(120):
        async with open_etcd(tmp_path) as etcd, open_fake_codexd() as fake, AsyncExitStack() as st:
            a = await st.enter_async_context(conductor(
                "a", etcd, tmp_path, fake.url, "--public-api-base", public))
            await wait_role(a, "leader", within_s=TTL + 3)
            allowing = await st.enter_async_context(conductor(
                "b", etcd, tmp_path, fake.url, "--standby-writes", "allow"))
            refusing = await st.enter_async_context(conductor("c", etcd, tmp_path, fake.url))
            assert await allowing.role() == await refusing.role() == "standby"

            forwarded = await allowing.http.post("/v1/codex/sessions", json={})
            assert forwarded.status_code == 201, forwarded.text

            refused = await refusing.http.post("/v1/codex/sessions", json={})
            assert refused.status_code == 503
            leader = refused.json()["error"]["details"]["leader"]
            assert (leader["nodeId"], leader["localApiBase"]) == ("a", public)
            runtime = (await a.http.get("/v1/runtime")).json()["data"]
            assert runtime["public_api_base"] == public
