"""The fleet in etcd: each conductor's registration on its own etcd lease, and the records of
which node owns a session.

Keys under the fleet prefix (the lease key's parent, ``/baa-conductor`` by default):

* ``nodes/<nodeId>``: the node's :class:`~.records.NodeRecord`, put under an etcd lease of the
  node's own (TTL = the leader lease's TTL, kept alive every TTL/3): it goes when the node dies;
* ``members/<nodeId>``: the same record without a lease, written in the same transaction: the
  last known registration of a node that is gone (its counts for the views);
* ``sessions/<sessionId>``: the node id owning that session (no lease: a session outlives any
  one run of its node).

The registration lease is not the leader lease: every node registers, leader or not.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from conductor_trio.fleet.records import NodeRecord
from conductor_trio.lease.etcd_gateway import EtcdGateway, as_int, b64
from conductor_trio.lease.file import LeaseStoreError

__all__ = ["FleetRegistry", "prefix_end"]

log = logging.getLogger("conductor.fleet")
_record = msgspec.json.Decoder(NodeRecord)


def prefix_end(prefix: str) -> str:
    """etcd's ``range_end`` for every key starting with ``prefix`` (its last byte plus one)."""
    raw = prefix.encode()
    return b64(raw[:-1] + bytes([raw[-1] + 1]))


def _decode_kvs(answer: dict[str, Any]) -> dict[str, NodeRecord]:
    out: dict[str, NodeRecord] = {}
    for kv in answer.get("kvs") or []:
        try:
            record = _record.decode(base64.b64decode(kv.get("value", "")))
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
            continue  # not one of ours: never listed as a node
        out[record.nodeId] = record
    return out


class FleetRegistry:
    """This node's registration and the fleet's records in etcd.

    Args:
        gateway: the etcd client (shared with the leader lease).
        prefix: the fleet's key prefix (no trailing slash).
        node_id: this node.
        ttl_s: the registration lease's TTL (whole seconds).

    **Resource handling:** :meth:`release` revokes the registration lease (the node leaves at
    once); without it the registration expires after the TTL.
    """

    def __init__(self, gateway: EtcdGateway, *, prefix: str, node_id: str, ttl_s: int) -> None:
        self.gateway = gateway
        self.prefix = prefix.rstrip("/")
        self.node_id = node_id
        self.ttl_s = ttl_s
        self.lease_id: str | None = None
        self.registered: NodeRecord | None = None
        self.puts = 0
        self.last_error: str | None = None
        self._wake = trio.Event()

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}/{kind}/{name}"

    def changed(self) -> None:
        """Something a registration says changed (the mode): put it now, not at the next tick."""
        self._wake.set()

    # -- this node's registration -------------------------------------------------------------

    async def run(self, build: Callable[[], Awaitable[NodeRecord]], *, every_s: float,
                  refresh_s: float,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, then keep the lease alive every TTL/3 and put the record again whenever
        it changed (checked every ``every_s``, or at once after :meth:`changed`) and at least
        every ``refresh_s``. ``task_status.started()`` after the first attempt.

        **Cancellation:** stops; call :meth:`release` (shielded) afterwards.
        """
        started = False
        kept_alive = put_at = trio.current_time()
        while True:
            try:
                record = await build()
                now = trio.current_time()
                if self.lease_id is None:
                    grant = await self.gateway.call("/v3/lease/grant", {"TTL": str(self.ttl_s)})
                    self.lease_id = str(grant["ID"])
                    kept_alive = now
                    await self._put(record)
                    put_at = now
                elif now - kept_alive >= self.ttl_s / 3:
                    answer = await self.gateway.call("/v3/lease/keepalive", {"ID": self.lease_id})
                    kept_alive = now
                    if as_int((answer.get("result") or {}).get("TTL")) <= 0:
                        # Expired (a long pause, an etcd restore): register afresh at once.
                        self.lease_id = None
                        continue
                if not record.same_state(self.registered) or now - put_at >= refresh_s:
                    await self._put(record)
                    put_at = now
                self.last_error = None
            except LeaseStoreError as exc:
                if self.last_error is None:
                    log.warning("fleet registration failed: %s", exc)
                self.last_error = str(exc) or type(exc).__name__
            if not started:
                task_status.started()
                started = True
            # Never longer than TTL/3: the keep-alive rides on these ticks.
            with trio.move_on_after(min(every_s, self.ttl_s / 3)):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _put(self, record: NodeRecord) -> None:
        value = b64(msgspec.json.encode(record))
        await self.gateway.call("/v3/kv/txn", {"success": [
            {"request_put": {"key": b64(self.key("nodes", self.node_id)), "value": value,
                             "lease": self.lease_id}},
            {"request_put": {"key": b64(self.key("members", self.node_id)), "value": value}},
        ]})
        self.registered = record
        self.puts += 1

    async def release(self) -> None:
        """Leave the fleet at once (revoke the registration lease); failures are ignored."""
        lease_id, self.lease_id = self.lease_id, None
        if lease_id is not None:
            with contextlib.suppress(LeaseStoreError):
                await self.gateway.call("/v3/lease/revoke", {"ID": lease_id})

    # -- reads ----------------------------------------------------------------------------

    async def nodes(self) -> tuple[dict[str, NodeRecord], dict[str, NodeRecord]]:
        """The registered nodes and the last known registration of every member.

        Raises:
            LeaseStoreError: etcd did not answer (or refused).
        """
        def ranged(kind: str) -> dict[str, Any]:
            start = self.key(kind)
            return {"request_range": {"key": b64(start), "range_end": prefix_end(start)}}

        answer = await self.gateway.call("/v3/kv/txn", {
            "success": [ranged("nodes"), ranged("members")]})
        responses = answer.get("responses") or [{}, {}]
        registered = _decode_kvs(responses[0].get("response_range") or {})
        members = _decode_kvs(responses[1].get("response_range") or {})
        return registered, members

    async def owner(self, session_id: str) -> str | None:
        """The node recorded as owning ``session_id``, if any.

        Raises:
            LeaseStoreError: etcd did not answer.
        """
        answer = await self.gateway.call("/v3/kv/range",
                                         {"key": b64(self.key("sessions", session_id))})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", "")).decode(errors="replace") or None

    async def set_owner(self, session_id: str, node_id: str) -> None:
        """Record that ``node_id`` owns ``session_id``.

        Raises:
            LeaseStoreError: etcd did not answer.
        """
        await self.gateway.call("/v3/kv/put", {"key": b64(self.key("sessions", session_id)),
                                               "value": b64(node_id)})
