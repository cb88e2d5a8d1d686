"""The etcd keeper in this process against a real etcd on loopback: the wire format of its
campaign (what the gateway double of test_lease_etcd_unit.py takes on trust), and a campaign
lost between the read and the transaction. test_lease_etcd.py covers whole conductors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from conductor_trio.lease.etcd import EtcdLeaseKeeper
from conductor_trio.lease.etcd_gateway import EtcdGateway
from conductor_trio.lease.file import LeaseHolder
from tests.etcd_fixture import Etcd, open_etcd, require_etcd

KEY = "/baa-conductor/leader"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _holder(name: str) -> LeaseHolder:
    return LeaseHolder(nodeId=name, host="h", localApiBase=f"http://{name}:4317")


async def _etcd_call(etcd: Etcd, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer: dict[str, Any] = (await http.post(etcd.url + path, json=body)).json()
        return answer


async def _leases(etcd: Etcd) -> list[str]:
    answer = await _etcd_call(etcd, "/v3/lease/leases", {})
    return sorted(str(lease["ID"]) for lease in answer.get("leases") or [])


class RivalFirst(httpx.AsyncBaseTransport):
    """A real connection on which, just before our first transaction, a rival puts the key
    under a lease of its own (it read "absent" too, and was quicker)."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self.inner = httpx.AsyncHTTPTransport()
        self.rival_lease: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/kv/txn" and self.rival_lease is None:
            grant = await _etcd_call(self.etcd, "/v3/lease/grant", {"TTL": "30"})
            self.rival_lease = str(grant["ID"])
            await _etcd_call(self.etcd, "/v3/kv/put", {
                "key": _b64(KEY.encode()), "value": _b64(msgspec.json.encode(_holder("r"))),
                "lease": self.rival_lease})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


# A follower's watch that ends on a DELETE leaves one of httpcore's inner body generators
# unfinished (etcd_gateway._body closes the outer iterator only); the garbage collector then
# reports it. Harmless here, and reported for a fix in the gateway; the conductors of
# test_lease_etcd.py run as processes and never show it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_campaign_on_real_etcd_takes_the_key_or_names_who_was_quicker(
    tmp_path: Path,
) -> None:
    require_etcd()
    with trio.fail_after(60):
        async with open_etcd(tmp_path) as etcd:
            racing = RivalFirst(etcd)
            gateway_b = EtcdGateway((etcd.endpoint,), transport=racing)
            gateway_a = EtcdGateway((etcd.endpoint,))
            b = EtcdLeaseKeeper(gateway_b, key=KEY, holder=_holder("b"), ttl_s=5)
            a = EtcdLeaseKeeper(gateway_a, key=KEY, holder=_holder("a"), ttl_s=5)
            try:
                async with trio.open_nursery() as nursery:
                    # b loses the race: it names the rival from the transaction's answer and
                    # gives its own lease back (only the rival's is left in etcd).
                    assert await nursery.start(b.run) == "standby"
                    assert b.lease_holder_id == "r@h"
                    assert (b.consecutive_failures, b.last_error) == (0, None)
                    assert await _leases(etcd) == [racing.rival_lease]
                    rival_term = b.term
                    assert rival_term is not None

                    # The rival's lease goes: b sees the key go and takes it, on etcd's terms.
                    await _etcd_call(etcd, "/v3/lease/revoke", {"ID": racing.rival_lease})
                    while b.role != "leader":
                        await b._changed.wait()
                    stored = (await _etcd_call(etcd, "/v3/kv/range",
                                               {"key": _b64(KEY.encode())}))["kvs"][0]
                    assert json.loads(base64.b64decode(stored["value"])) == {
                        "nodeId": "b", "host": "h", "localApiBase": "http://b:4317"}
                    assert str(stored["lease"]) == b.lease_id
                    assert int(stored["create_revision"]) == b.term
                    assert b.term > rival_term

                    # A node that comes later reads the key and follows b.
                    assert await nursery.start(a.run) == "standby"
                    assert a.lease_holder_id == "b@h"
                    assert a.term == b.term
                    nursery.cancel_scope.cancel()
                await b.release()
                assert await _leases(etcd) == []
            finally:
                await gateway_a.aclose()
                await gateway_b.aclose()
                await racing.aclose()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_leader_whose_key_is_rewritten_in_place_steps_down_and_names_the_writer(
    tmp_path: Path,
) -> None:
    # Someone else puts the leader key in place (an operator's `etcdctl put`, a node configured
    # with another key prefix by mistake): the create_revision stays, but the value names
    # another holder and the key no longer belongs to our lease (a revoke would not delete it).
    # The key is not ours any more: the leader must step down, not keep leading on it.
    require_etcd()
    with trio.fail_after(30):
        async with open_etcd(tmp_path) as etcd:
            gateway = EtcdGateway((etcd.endpoint,))
            a = EtcdLeaseKeeper(gateway, key=KEY, holder=_holder("a"), ttl_s=5)
            try:
                async with trio.open_nursery() as nursery:
                    assert await nursery.start(a.run) == "leader"
                    await _etcd_call(etcd, "/v3/kv/put", {
                        "key": _b64(KEY.encode()),
                        "value": _b64(msgspec.json.encode(_holder("o")))})
                    while a.role == "leader" or a.lease_holder_id != "o@h":
                        await a._changed.wait()
                    assert a.role == "standby"
                    nursery.cancel_scope.cancel()
            finally:
                await gateway.aclose()
