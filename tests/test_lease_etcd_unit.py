"""The etcd keeper's logic on a virtual clock (autojump) against an in-process double of etcd's
v3 JSON gateway. In addition to, not instead of, the real-etcd tests in test_lease_etcd.py."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from conductor_trio.config import ConfigError, parse_lease_store
from conductor_trio.lease.etcd import EtcdLeaseKeeper
from conductor_trio.lease.etcd_gateway import EtcdGateway, EtcdUnavailable
from conductor_trio.lease.file import LeaseHolder, LeaseStoreError

TTL = 10
KEY = "/baa-conductor/leader"


class _Lines(httpx.AsyncByteStream):
    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self.receive = receive

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        # A class, not an async generator: an unfinished generator would be a ResourceWarning.
        try:
            return await self.receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self.receive.aclose()


class GatewayDouble:
    """Just enough of etcd's gateway: leases with virtual-time expiry, one key space, txn on
    create_revision, keep-alive, revoke, and streaming watches."""

    def __init__(self) -> None:
        self.revision = 1
        self.next_lease = 100
        self.leases: dict[str, tuple[float, int]] = {}  # id → (expires_at, ttl)
        self.kv: dict[str, dict[str, str]] = {}  # b64 key → kv as on the wire
        self.watchers: list[tuple[str, trio.MemorySendChannel[bytes]]] = []

    def header(self) -> dict[str, str]:
        return {"revision": str(self.revision)}

    def expire(self) -> None:
        now = trio.current_time()
        for lease_id, (expires_at, _) in list(self.leases.items()):
            if expires_at <= now:
                self._drop_lease(lease_id)

    def _drop_lease(self, lease_id: str) -> None:
        self.leases.pop(lease_id, None)
        for key, kv in list(self.kv.items()):
            if kv.get("lease") == lease_id:
                del self.kv[key]
                self.revision += 1
                self._emit(key, {"type": "DELETE",
                                 "kv": {"key": key, "mod_revision": str(self.revision)}})

    def _emit(self, key: str, event: dict[str, Any]) -> None:
        line = json.dumps({"result": {"header": self.header(), "events": [event]}}) + "\n"
        for wkey, send in list(self.watchers):
            if wkey == key:
                try:
                    send.send_nowait(line.encode())
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    self.watchers.remove((wkey, send))

    async def expiry_loop(self) -> None:
        while True:
            await trio.sleep(0.05)
            self.expire()

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.expire()
        if path == "/v3/kv/range":
            kv = self.kv.get(body["key"])
            return {"header": self.header(), **({"kvs": [kv], "count": "1"} if kv else {})}
        if path == "/v3/lease/grant":
            self.next_lease += 1
            lease_id, ttl = str(self.next_lease), int(body["TTL"])
            self.leases[lease_id] = (trio.current_time() + ttl, ttl)
            return {"header": self.header(), "ID": lease_id, "TTL": str(ttl)}
        if path == "/v3/lease/keepalive":
            lease_id = body["ID"]
            if lease_id not in self.leases:
                return {"result": {"header": self.header(), "ID": lease_id}}
            ttl = self.leases[lease_id][1]
            self.leases[lease_id] = (trio.current_time() + ttl, ttl)
            return {"result": {"header": self.header(), "ID": lease_id, "TTL": str(ttl)}}
        if path == "/v3/lease/revoke":
            if body["ID"] not in self.leases:
                return {"error": "etcdserver: requested lease not found", "code": 5}
            self._drop_lease(body["ID"])
            return {"header": self.header()}
        if path == "/v3/kv/txn":
            compare = body["compare"][0]
            key = compare["key"]
            if key not in self.kv:
                put = body["success"][0]["request_put"]
                if put["lease"] not in self.leases:
                    return {"error": "etcdserver: requested lease not found", "code": 5}
                self.revision += 1
                kv = {"key": key, "value": put["value"], "lease": put["lease"],
                      "create_revision": str(self.revision), "mod_revision": str(self.revision),
                      "version": "1"}
                self.kv[key] = kv
                self._emit(key, {"kv": kv})
                return {"header": self.header(), "succeeded": True,
                        "responses": [{"response_put": {"header": self.header()}}]}
            return {"header": self.header(), "responses": [
                {"response_range": {"header": self.header(), "kvs": [self.kv[key]]}}]}
        return None


class Link(httpx.AsyncBaseTransport):
    """One keeper's connection to the double; ``cut`` makes it refuse, ``frozen`` hang
    (a SIGSTOPped etcd seen from one node)."""

    def __init__(self, double: GatewayDouble, *, refuse_hosts: tuple[str, ...] = ()) -> None:
        self.double = double
        self.cut = False
        self.refuse_hosts = refuse_hosts
        self.requests: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        if self.cut or request.url.host in self.refuse_hosts:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        self.requests.append(f"{request.url.host}{path}")
        body = json.loads(request.content or b"{}")
        if path == "/v3/watch":
            send, receive = trio.open_memory_channel[bytes](100)
            key = body["create_request"]["key"]
            self.double.watchers.append((key, send))
            send.send_nowait((json.dumps(
                {"result": {"header": self.double.header(), "created": True}}) + "\n").encode())
            return httpx.Response(200, stream=_Lines(receive))
        answer = self.double.answer(path, body)
        if answer is None:
            return httpx.Response(404, json={"error": "Not Found", "code": 5})
        return httpx.Response(200, json=answer)


def keeper(double: GatewayDouble, name: str, *, link: Link | None = None,
           endpoints: tuple[str, ...] = ("etcd:2379",),
           clock: Callable[[], float] = trio.current_time) -> tuple[EtcdLeaseKeeper, Link]:
    link = link or Link(double)
    gateway = EtcdGateway(endpoints, request_timeout_s=1.0, transport=link)
    return EtcdLeaseKeeper(gateway, key=KEY, ttl_s=TTL, clock=clock,
                           holder=LeaseHolder(nodeId=name, host="h",
                                              localApiBase=f"http://{name}:4317")), link


class FencedJob:
    """A leader-only job for ``run_fenced``: runs until cancelled, and says whether it runs."""

    def __init__(self) -> None:
        self.running = False
        self.starts = 0

    async def __call__(self) -> None:
        self.running, self.starts = True, self.starts + 1
        try:
            await trio.sleep_forever()
        finally:
            self.running = False


def role_now(k: EtcdLeaseKeeper) -> str:
    """The role, asked again (mypy would otherwise keep its earlier narrowing)."""
    return k.role


async def test_takes_the_key_keeps_it_alive_and_the_term_is_its_create_revision(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = GatewayDouble()
    a, _ = keeper(double, "a")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "leader"
        stored = double.kv[base64.b64encode(KEY.encode()).decode()]
        assert a.term == int(stored["create_revision"])
        assert json.loads(base64.b64decode(stored["value"]))["nodeId"] == "a"
        await trio.sleep(5 * TTL)
        assert a.role == "leader"
        assert a.keepalives >= 14  # every TTL/3
        assert a.snapshot()["fencing_token"] == a.term
        nursery.cancel_scope.cancel()


async def test_a_cut_leader_is_degraded_before_etcd_can_give_the_key_to_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = GatewayDouble()
    a, link_a = keeper(double, "a")
    b, _ = keeper(double, "b")
    job = FencedJob()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "leader"
        nursery.start_soon(a.run_fenced, job)
        assert await nursery.start(b.run) == "standby"
        assert b.lease_holder_id == "a@h"
        await trio.sleep(1)
        assert job.running
        link_a.cut = True  # a partition between a and etcd; b still reaches it
        overlap = job_overlap = 0
        for _ in range(int(3 * TTL / 0.01)):
            await trio.sleep(0.01)
            if a.role == "leader" and b.role == "leader":
                overlap += 1
            if job.running and b.role == "leader":
                job_overlap += 1
            if a.role == "leader":
                assert a._valid_until is not None
                assert trio.current_time() < a._valid_until
        assert (overlap, job_overlap) == (0, 0)
        assert b.role == "leader"
        assert a.role == "degraded"
        assert not job.running
        # Reconnected: a learns it lost (keep-alive without TTL) and follows b; the job
        # does not start again.
        link_a.cut = False
        await trio.sleep(TTL)
        assert a.role == "standby"
        assert a.lease_holder_id == "b@h"
        assert job.starts == 1
        nursery.cancel_scope.cancel()


async def test_release_hands_over_through_the_watch_without_waiting_for_the_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = GatewayDouble()
    a, _ = keeper(double, "a")
    b, _ = keeper(double, "b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        await nursery.start(a.run)
        await nursery.start(b.run)
        first_term = a.term
        assert first_term is not None
        released_at = trio.current_time()
        await a.release()
        assert a.role == "standby"
        while b.role != "leader":  # noqa: ASYNC110 - virtual time, measured below
            await trio.sleep(0.01)
        assert trio.current_time() - released_at < 1  # the watch, not the TTL
        assert b.term is not None
        assert b.term > first_term
        nursery.cancel_scope.cancel()


async def test_a_keepalive_answer_without_ttl_ends_leadership(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = GatewayDouble()
    a, _ = keeper(double, "a")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        assert a.lease_id is not None
        # The lease vanishes without a watch event (as if the watch were lost).
        double.watchers.clear()
        double.leases.pop(a.lease_id)
        await trio.sleep(TTL / 3 + 0.1)
        # The next keep-alive answered without TTL: a stepped down at once, without waiting
        # for its local deadline (still TTL - TTL/3 away).
        assert a.role == "standby"
        assert a.last_loss is not None
        assert "without TTL" in a.last_loss
        nursery.cancel_scope.cancel()


async def test_a_process_frozen_past_its_ttl_is_not_leader_on_its_first_question(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = GatewayDouble()
    frozen_for = 0.0
    a, _ = keeper(double, "a", clock=lambda: trio.current_time() + frozen_for)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        assert a.role == "leader"
        # The whole process stood still (SIGSTOP): no task ran, only the clock moved on.
        frozen_for = TTL
        assert role_now(a) == "degraded"
        assert a.snapshot()["is_holder"] is False
        nursery.cancel_scope.cancel()


async def test_an_endpoint_that_refuses_is_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = GatewayDouble()
    link = Link(double, refuse_hosts=("down",))
    a, _ = keeper(double, "a", link=link, endpoints=("down:2379", "up:2379"))
    async with trio.open_nursery() as nursery:
        assert await nursery.start(a.run) == "leader"
        assert all(r.startswith("up/") for r in link.requests)
        nursery.cancel_scope.cancel()


async def test_all_endpoints_down_is_degraded_for_a_standby(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = GatewayDouble()
    a, link = keeper(double, "a")
    link.cut = True
    async with trio.open_nursery() as nursery:
        assert await nursery.start(a.run) == "standby"  # one failure is not yet degraded
        await trio.sleep(TTL)
        assert a.role == "degraded"
        assert a.last_error is not None
        assert "no etcd endpoint answered" in a.last_error
        link.cut = False
        await trio.sleep(TTL)
        assert role_now(a) == "leader"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("value", ["etcd://", "etcd://host", "etcd://h:0", "etcd://h:99999",
                                   "etcd://a:1,", "zookeeper://h:1", "files", "etcd://u@h:1"])
def test_bad_lease_stores_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="BAA_CONDUCTOR_LEASE_STORE"):
        parse_lease_store(value)


def test_lease_stores_parse() -> None:
    assert parse_lease_store("file") == ()
    assert parse_lease_store("etcd://10.0.0.1:2379,etcd-b:2379") == ("10.0.0.1:2379",
                                                                      "etcd-b:2379")


async def test_a_failed_keep_alive_is_retried_soon_so_a_short_outage_keeps_the_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # etcd unreachable from 3.0 s to 7.5 s (an election, a member restarting): the keep-alive
    # at 3.3 s fails. Waiting a whole renew period (3.3 s) before each retry let the lease run
    # out at 9 s; retrying within the time left keeps it.
    double = GatewayDouble()
    a, link = keeper(double, "a")
    roles: set[str] = set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "leader"
        await trio.sleep(3.0)
        link.cut = True
        while trio.current_time() < 7.5:
            await trio.sleep(0.05)
            roles.add(role_now(a))
        link.cut = False
        while trio.current_time() < 15:
            await trio.sleep(0.05)
            roles.add(role_now(a))
        nursery.cancel_scope.cancel()
    assert roles == {"leader"}


async def test_a_fenced_job_stops_when_the_lease_ran_out_while_the_machine_slept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The role is judged on the boot clock, which counts a suspend; Trio's clock (the fence's
    # deadline) does not. A job must not run on for a renew period after such a wake-up.
    double = GatewayDouble()
    slept = [0.0]
    a, _ = keeper(double, "a", clock=lambda: trio.current_time() + slept[0])
    job = FencedJob()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "leader"
        nursery.start_soon(a.run_fenced, job)
        await trio.sleep(0.5)
        assert job.running
        slept[0] = 60.0  # an hour's nap, as the boot clock sees it
        assert role_now(a) == "degraded"
        await trio.sleep(1.1)
        assert not job.running
        nursery.cancel_scope.cancel()


class JunkLink(Link):
    """A link on which the hosts in ``junk`` answer every request with that HTTP answer (a
    member without the gateway, a load balancer's error page) instead of etcd's."""

    def __init__(self, double: GatewayDouble, junk: dict[str, httpx.Response]) -> None:
        super().__init__(double)
        self.junk = junk

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.junk.get(request.url.host)
        if answer is None:
            return await super().handle_async_request(request)
        await trio.lowlevel.checkpoint()
        self.requests.append(f"{request.url.host}{request.url.path}")
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


_HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
             b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n")
UNUSABLE_ANSWERS = {
    "no-gateway-404": httpx.Response(404, text="404 page not found\n"),
    "html-502": httpx.Response(502, content=_HTML_502, headers={"content-type": "text/html"}),
    "html-200": httpx.Response(200, content=_HTML_502, headers={"content-type": "text/html"}),
    "json-array": httpx.Response(200, json=[]),
    "json-wrong-shape": httpx.Response(200, json={"status": "ok"}),
    "json-404-not-etcd": httpx.Response(404, json={"message": "no route"}),
    "json-503": httpx.Response(503, json={"error": "etcdserver: no leader", "code": 14}),
}


@pytest.mark.parametrize("answer", UNUSABLE_ANSWERS.values(), ids=UNUSABLE_ANSWERS.keys())
async def test_a_member_that_does_not_answer_as_etcd_is_skipped(
    autojump_clock: trio.testing.MockClock, answer: httpx.Response,
) -> None:
    # Listed first, it used to stop failover: its answer was decoded outside the error handling
    # and raised EtcdUnavailable, so the node stayed degraded with a healthy quorum.
    double = GatewayDouble()
    link = JunkLink(double, {"junk": answer})
    a, _ = keeper(double, "a", link=link, endpoints=("junk:2379", "up:2379"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "leader"
        assert link.requests[0] == "junk/v3/kv/range"  # it was asked, and skipped
        await trio.sleep(3 * TTL)
        assert role_now(a) == "leader"
        assert a.consecutive_failures == 0
        nursery.cancel_scope.cancel()


async def test_an_etcd_error_answer_is_an_error_not_a_reason_to_try_another_member() -> None:
    # etcd answers "lease not found" with HTTP 404 and its JSON error: that is etcd speaking.
    etcd_404 = httpx.Response(404, json={"error": "etcdserver: requested lease not found",
                                         "message": "etcdserver: requested lease not found",
                                         "code": 5})
    link = JunkLink(GatewayDouble(), {"a": etcd_404, "b": etcd_404})
    gateway = EtcdGateway(("a:2379", "b:2379"), transport=link)
    try:
        with pytest.raises(LeaseStoreError, match="requested lease not found") as caught:
            await gateway.call("/v3/lease/revoke", {"ID": "1"})
        assert not isinstance(caught.value, EtcdUnavailable)
        assert link.requests == ["a/v3/lease/revoke"]
    finally:
        await gateway.aclose()


async def test_when_no_member_answers_as_etcd_the_gateway_says_why() -> None:
    link = JunkLink(GatewayDouble(), {"a": UNUSABLE_ANSWERS["no-gateway-404"],
                                      "b": UNUSABLE_ANSWERS["html-502"]})
    gateway = EtcdGateway(("a:2379", "b:2379"), transport=link)
    try:
        with pytest.raises(EtcdUnavailable) as caught:
            await gateway.call("/v3/kv/range", {"key": "eA=="})
        assert "http://a:2379/v3/kv/range: HTTP 404, not JSON" in str(caught.value)
        assert "http://b:2379/v3/kv/range: HTTP 502, not JSON" in str(caught.value)
    finally:
        await gateway.aclose()
