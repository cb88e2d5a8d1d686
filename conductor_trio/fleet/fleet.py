"""The fleet as one conductor answers for it: which nodes there are, the merged pages, where a
new session goes and which node owns a session.

Every node answers for the whole fleet: it reads etcd (:mod:`.registry`) and asks the other
conductors in parallel, each under a deadline (:mod:`.peers`). Without etcd (one node, a file
lease) the fleet is this node alone, through the same code.

**The session owner.** A session id is codexd's ``session-<uuid4>``: it cannot name a node,
and codexd (not the conductor) makes it. So the owner is a record in etcd,
``<prefix>/sessions/<id> → nodeId``, written when a session is created through the fleet
(``POST /v1/fleet/sessions``). A session made on a node directly (``/v1/codex/sessions``,
``codexd`` on the machine) has no record: then every registered node is asked at once, the one
that has it answers 200, and the record is written then. A record outlives its node's runs, so
a dead owner is named (503 ``node_unavailable``) instead of the session looking lost.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
import trio

from codexd_trio.base.contracts import now_iso
from conductor_trio import __version__
from conductor_trio.config import ConductorConfig
from conductor_trio.fleet.merge import (
    decode_fleet_cursor,
    merge_approvals,
    merge_sessions,
    node_cursor,
)
from conductor_trio.fleet.peers import PeerAnswer, Peers
from conductor_trio.fleet.records import FleetNode, NodeRecord, place, record_for
from conductor_trio.fleet.registry import FleetRegistry
from conductor_trio.health import CodexdProbe
from conductor_trio.lease.etcd import EtcdLeaseKeeper
from conductor_trio.lease.file import LeaseKeeper, LeaseStoreError

__all__ = ["Fleet", "FleetRefusal"]

log = logging.getLogger("conductor.fleet")


class FleetRefusal(Exception):
    """A fleet operation that cannot be done: the envelope's status, code, message, details."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


class Fleet:
    """The fleet seen from this conductor.

    Args:
        node_id: this node.
        registry: the etcd records (``None``: no etcd, the fleet is this node alone).
        peers: the client of the conductors.
        own_base: this conductor's own bound address (how it calls itself).
        own_record: this node's registration, now.
        deadline_s: how long a node may take to answer a read the fleet merges.
        forward_s: how long a call routed to a session's owner may take.
    """

    def __init__(self, node_id: str, *, registry: FleetRegistry | None, peers: Peers,
                 own_base: Callable[[], str | None],
                 own_record: Callable[[], Awaitable[NodeRecord]],
                 deadline_s: float = 2.0, forward_s: float = 30.0) -> None:
        self.node_id = node_id
        self.registry = registry
        self.peers = peers
        self.own_base = own_base
        self.own_record = own_record
        self.deadline_s = deadline_s
        self.forward_s = forward_s
        # The last registrations read from etcd: an etcd that does not answer leaves the views
        # on what was known (said so in ``etcdError``) rather than on this node alone.
        self._known: tuple[dict[str, NodeRecord], dict[str, NodeRecord]] = ({}, {})
        self.etcd_error: str | None = None
        self.every_s = 1.0
        self.refresh_s = 5.0

    @classmethod
    def for_node(cls, config: ConductorConfig, lease: LeaseKeeper | EtcdLeaseKeeper, *,
                 own_base: Callable[[], str | None],
                 probe: Callable[[], Awaitable[CodexdProbe]], mode: Callable[[], str],
                 started_at: str) -> Fleet:
        """The conductor's fleet: registered in etcd when its lease is on etcd (sharing the
        lease's gateway), else this node alone; peers called with the shared token. Its
        registration: the configuration, codexd asked now (``probe``), the mode and role."""

        async def own_record() -> NodeRecord:
            return record_for(config, await probe(), mode=mode(), role=lease.role,
                              version=__version__, started_at=started_at)

        registry = None
        if isinstance(lease, EtcdLeaseKeeper):
            registry = FleetRegistry(lease.gateway, prefix=config.fleet_prefix,
                                     node_id=config.node_id, ttl_s=int(config.lease_ttl_s))
        fleet = cls(config.node_id, registry=registry, peers=Peers(config.shared_token),
                    own_base=own_base, own_record=own_record,
                    forward_s=config.codexd_timeout_s + 5)
        fleet.every_s = min(1.0, config.lease_ttl_s / 3)
        fleet.refresh_s = config.heartbeat_s
        return fleet

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """This node's registration (nothing to do without etcd)."""
        if self.registry is None:
            task_status.started()
            return
        await self.registry.run(self.own_record, every_s=self.every_s,
                                refresh_s=self.refresh_s, task_status=task_status)

    def changed(self) -> None:
        """The mode changed: registration now, not at the next tick."""
        if self.registry is not None:
            self.registry.changed()

    # -- the nodes ------------------------------------------------------------------------

    async def _records(self) -> tuple[dict[str, NodeRecord], dict[str, NodeRecord]]:
        """Registered nodes and last known members (this node always registered)."""
        if self.registry is None:
            own = await self.own_record()
            return {own.nodeId: own}, {own.nodeId: own}
        try:
            self._known = await self.registry.nodes()
            self.etcd_error = None
        except LeaseStoreError as exc:
            self.etcd_error = str(exc) or type(exc).__name__
        registered, members = dict(self._known[0]), dict(self._known[1])
        if self.node_id not in registered:
            # This node answers whatever etcd says (its registration may be in flight).
            registered[self.node_id] = await self.own_record()
        return registered, members

    def base_of(self, node: str, record: NodeRecord | None) -> str | None:
        """Where to call ``node``: this node at its bound address, others where they said."""
        if node == self.node_id:
            return self.own_base()
        return record.apiBase if record is not None else None

    async def nodes(self, *, check: bool = True) -> list[FleetNode]:
        """Every node: the registered ones (answering ``/healthz`` now, when ``check``) and the
        members whose registration is gone, with their last known registration."""
        registered, members = await self._records()
        targets = {n: b for n, r in registered.items() if (b := self.base_of(n, r))}
        answers = (await self.peers.fan_out(targets, "/healthz", deadline_s=self.deadline_s)
                   if check else {})
        checked = now_iso()
        out: list[FleetNode] = []
        for node, record in sorted(registered.items()):
            answer = answers.get(node)
            if node not in targets:
                reachable, error = False, "no advertised API base (--advertise-url)"
            elif not check:
                reachable, error = True, None
            else:
                assert answer is not None
                reachable = answer.status == 200
                error = None if reachable else (answer.error or f"HTTP {answer.status}")
            out.append(FleetNode(nodeId=node, registered=True, reachable=reachable,
                                 self=node == self.node_id, error=error,
                                 checkedAt=checked if check else None, registration=record))
        for node, record in sorted(members.items()):
            if node not in registered:
                out.append(FleetNode(nodeId=node, registered=False, reachable=False,
                                     error="not registered: its lease expired (node down)",
                                     registration=record))
        return out

    def _view(self, node: FleetNode, answer: PeerAnswer | None) -> dict[str, Any]:
        """A node's line in a merged page: ``ok``, ``unreachable`` or ``offline``, with its
        last known counts."""
        record = node.registration
        if not node.registered:
            state, error = "offline", node.error
        elif answer is None:
            state, error = "unreachable", node.error
        elif answer.ok:
            state, error = "ok", None
        else:
            state, error = "unreachable", _why(answer)
        return {"nodeId": node.nodeId, "state": state, "error": error,
                "counts": msgspec.to_builtins(record.counts) if record else None,
                "updatedAt": record.updatedAt if record else None}

    async def _ask_all(self, path: str | Mapping[str, str]
                       ) -> tuple[list[FleetNode], dict[str, PeerAnswer]]:
        nodes = await self.nodes(check=False)
        targets = {n.nodeId: b for n in nodes
                   if n.registered and (b := self.base_of(n.nodeId, n.registration))}
        answers = await self.peers.fan_out(targets, path, deadline_s=self.deadline_s)
        return nodes, answers

    # -- merged pages ---------------------------------------------------------------------

    async def sessions(self, *, limit: int, cursor: str | None, status: str | None
                       ) -> dict[str, Any]:
        """``GET /v1/fleet/sessions``: newest activity first across nodes (see :mod:`.merge`).

        Raises:
            merge.BadCursor: a cursor this API did not hand out.
        """
        key = decode_fleet_cursor(cursor)
        query: dict[str, str] = {"order": "activity", "limit": str(limit)}
        if key is not None:
            query["cursor"] = node_cursor(*key)
        if status is not None:
            query["status"] = status
        nodes, answers = await self._ask_all("/v1/codex/sessions?" + urlencode(query))
        pages: dict[str, tuple[list[dict[str, Any]], bool]] = {}
        for node, answer in answers.items():
            data = answer.data()
            if isinstance(data, dict) and isinstance(data.get("sessions"), list):
                pages[node] = (data["sessions"], data.get("nextCursor") is not None)
        items, following = merge_sessions(pages, limit)
        return {"sessions": items, "nextCursor": following,
                "nodes": [self._view(n, answers.get(n.nodeId)) for n in nodes],
                "etcdError": self.etcd_error}

    async def approvals(self, *, limit: int, cursor: str | None, state: str | None
                        ) -> dict[str, Any]:
        """``GET /v1/fleet/approvals``: every node's approvals, newest first.

        Raises:
            merge.BadCursor: a cursor this API did not hand out.
        """
        key = decode_fleet_cursor(cursor)
        path = "/v1/codex/approvals" + (f"?{urlencode({'state': state})}" if state else "")
        nodes, answers = await self._ask_all(path)
        pages: dict[str, list[dict[str, Any]]] = {}
        for node, answer in answers.items():
            data = answer.data()
            if isinstance(data, dict) and isinstance(data.get("approvals"), list):
                pages[node] = data["approvals"]
        items, following = merge_approvals(pages, limit, key)
        return {"approvals": items, "nextCursor": following,
                "nodes": [self._view(n, answers.get(n.nodeId)) for n in nodes],
                "etcdError": self.etcd_error}

    # -- placement and owners -------------------------------------------------------------

    async def create(self, body: dict[str, Any], headers: Mapping[str, str]
                     ) -> tuple[FleetNode, PeerAnswer]:
        """``POST /v1/fleet/sessions``: place (``node``, ``labels``, else the least busy healthy
        node), create there, record the owner.

        Raises:
            FleetRefusal: 503 ``no_node_available`` (why, per node); 400 for a bad ``node``
                or ``labels``.
        """
        node = body.pop("node", None)
        labels = body.pop("labels", None) or []
        if node is not None and not isinstance(node, str):
            raise FleetRefusal(400, "invalid_request", "node must be a node id.", field="$.node")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise FleetRefusal(400, "invalid_request",
                               "labels must be a list of NAME or NAME=VALUE strings.",
                               field="$.labels")
        chosen, why = place(await self.nodes(), node=node, labels=labels)
        if chosen is None:
            raise FleetRefusal(503, "no_node_available",
                               "No node of the fleet can take this session.", nodes=why,
                               node=node, labels=labels)
        answer = await self.forward(chosen, "POST", "/v1/codex/sessions",
                                    body=msgspec.json.encode(body), headers=headers)
        data = answer.data()
        session = data.get("session") if isinstance(data, dict) else None
        if answer.status == 201 and isinstance(session, dict) and self.registry is not None:
            try:
                await self.registry.set_owner(str(session.get("sessionId")), chosen.nodeId)
            except LeaseStoreError as exc:
                # Not fatal: the owner is found by asking every node until it is recorded.
                log.warning("owner of %s not recorded: %s", session.get("sessionId"), exc)
        return chosen, answer

    async def owner(self, session_id: str) -> FleetNode:
        """The node that owns ``session_id`` (from its record, else by asking every node).

        Raises:
            FleetRefusal: 503 ``node_unavailable`` naming the owner (or the nodes that did not
                answer); 404 ``not_found`` when every node answered and none has it.
        """
        nodes = {n.nodeId: n for n in await self.nodes(check=False)}
        if self.registry is None:
            return nodes[self.node_id]
        recorded: str | None = None
        try:
            recorded = await self.registry.owner(session_id)
        except LeaseStoreError as exc:
            log.warning("owner record of %s unreadable: %s", session_id, exc)
        if recorded is not None:
            found = nodes.get(recorded)
            if found is None or not found.registered:
                raise FleetRefusal(503, "node_unavailable",
                                   f"The session's node {recorded} is not in the fleet now "
                                   "(down); the session is there when it returns.",
                                   node=recorded, sessionId=session_id)
            return found
        targets = {n: b for n, node in nodes.items()
                   if node.registered and (b := self.base_of(n, node.registration))}
        answer, failed = await self.peers.first_with(
            targets, f"/v1/codex/sessions/{quote(session_id, safe='')}",
            deadline_s=self.deadline_s)
        if answer is not None:
            if self.registry is not None:
                with contextlib.suppress(LeaseStoreError):  # else asked again next time
                    await self.registry.set_owner(session_id, answer.node)
            return nodes[answer.node]
        offline = sorted(n for n, node in nodes.items() if not node.registered)
        if failed:
            raise FleetRefusal(503, "node_unavailable",
                               "No node that answered has this session; some did not answer.",
                               sessionId=session_id, unanswered={a.node: _why(a) for a in failed},
                               offline=offline)
        raise FleetRefusal(404, "not_found", "No node of the fleet has this session.",
                           sessionId=session_id, offline=offline)

    async def forward(self, node: FleetNode, method: str, path: str, *, body: bytes | None,
                      headers: Mapping[str, str]) -> PeerAnswer:
        """One call routed to ``node``'s ``/v1/codex/*``.

        Raises:
            FleetRefusal: 503 ``node_unavailable`` when it does not answer in time.
        """
        base = self.base_of(node.nodeId, node.registration)
        if base is None:
            raise FleetRefusal(503, "node_unavailable", f"Node {node.nodeId} has no address.",
                               node=node.nodeId)
        answer = await self.peers.call(node.nodeId, base, method, path, body=body,
                                       headers=headers, deadline_s=self.forward_s)
        if answer.status is None:
            raise FleetRefusal(503, "node_unavailable",
                               f"Node {node.nodeId} did not answer: {answer.error}",
                               node=node.nodeId, error=answer.error)
        return answer

    async def aclose(self) -> None:
        """Leave the fleet at once (revoke the registration) and close the peers' client."""
        with trio.CancelScope(shield=True):
            if self.registry is not None:
                with trio.move_on_after(2):
                    await self.registry.release()
            await self.peers.aclose()


def _why(answer: PeerAnswer) -> str:
    if answer.status is None:
        return answer.error or "no answer"
    try:
        body = msgspec.json.decode(answer.content)
        return f"HTTP {answer.status} {body['error']['code']}"
    except (msgspec.DecodeError, KeyError, TypeError):
        return f"HTTP {answer.status}"
