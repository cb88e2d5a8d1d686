"""What the fleet keeps in etcd and answers about nodes (sans-IO): a node's registration, the
view of a node as one conductor sees it now, and placement.

The registration is written by its own node only (``<prefix>/nodes/<nodeId>`` on the node's
etcd lease, so it goes when the node dies, and ``<prefix>/members/<nodeId>`` without a lease,
the last known one, so a node that is gone is still listed with its last counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from codexd_trio.base.contracts import CodexdStatus, now_iso
from conductor_trio.config import ConductorConfig
from conductor_trio.health import CodexdProbe

__all__ = [
    "FleetNode",
    "NodeCounts",
    "NodeRecord",
    "counts_from",
    "labels_match",
    "place",
    "record_for",
]


class NodeCounts(msgspec.Struct, frozen=True, kw_only=True):
    """What a node's codexd last said it holds (``None``: codexd did not answer)."""

    sessions: int | None = None
    activeSessions: int | None = None
    activeTurns: int | None = None
    pendingApprovals: int | None = None
    queueLength: int | None = None


class NodeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One node's registration (``<prefix>/nodes/<nodeId>``)."""

    nodeId: str
    host: str
    # Where other conductors reach this one (--advertise-url); never guessed.
    apiBase: str | None
    version: str
    codexdVersion: str | None = None
    codexVersion: str | None = None
    mode: str
    role: str
    fleet: bool = False
    # codexd's child (Codex): running, starting, restarting, failed...; None: codexd silent.
    child: str | None = None
    codexdReachable: bool = False
    counts: NodeCounts = msgspec.field(default_factory=NodeCounts)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    startedAt: str | None = None
    updatedAt: str

    def same_state(self, other: NodeRecord | None) -> bool:
        """Whether ``other`` says the same as this one, its time aside."""
        return other is not None and msgspec.structs.replace(
            other, updatedAt=self.updatedAt) == self


class FleetNode(msgspec.Struct, frozen=True, kw_only=True):
    """A node as this conductor sees it now: registered (its lease is alive), reachable (it
    answered within the deadline just now), and its registration — the last known one when it
    is gone."""

    nodeId: str
    registered: bool
    reachable: bool
    self: bool = False
    error: str | None = None
    checkedAt: str | None = None
    registration: NodeRecord | None = None

    @property
    def api_base(self) -> str | None:
        return self.registration.apiBase if self.registration else None


def counts_from(status: CodexdStatus | None) -> NodeCounts:
    if status is None:
        return NodeCounts()
    snap = status.snapshot
    return NodeCounts(
        sessions=snap.sessions.count, activeSessions=snap.sessions.activeCount,
        activeTurns=len(snap.activeTurns), pendingApprovals=snap.approvals.pendingCount,
        queueLength=snap.queue.entries if snap.queue is not None else None,
    )


def record_for(config: ConductorConfig, probe: CodexdProbe, *, mode: str, role: str,
               version: str, started_at: str) -> NodeRecord:
    """This node's registration from its configuration and codexd's last status."""
    status = probe.status
    daemon = status.snapshot.daemon if status is not None else None
    codex = daemon.child.codexVersion if daemon is not None else None
    return NodeRecord(
        nodeId=config.node_id, host=config.host,
        apiBase=config.advertise_url or config.public_api_base, version=version,
        codexdVersion=daemon.version if daemon is not None else None,
        codexVersion=getattr(codex, "version", None), mode=mode, role=role,
        fleet=config.fleet, child=daemon.child.status if daemon is not None else None,
        codexdReachable=status is not None, counts=counts_from(status),
        labels=dict(config.labels), startedAt=started_at, updatedAt=now_iso(),
    )


def labels_match(have: Mapping[str, str], wanted: Iterable[str]) -> bool:
    """``gpu`` asks for the label whatever its value, ``repo=baa`` for that value."""
    for item in wanted:
        name, eq, value = item.partition("=")
        if name not in have or (eq and have[name] != value):
            return False
    return True


def place(nodes: Sequence[FleetNode], *, node: str | None = None,
          labels: Sequence[str] = ()) -> tuple[FleetNode | None, dict[str, str]]:
    """The node a new session goes to, and why each other node was not chosen.

    An explicit ``node`` must be that node and fit; else among the nodes with every label in
    ``labels``, the healthy ones (registered, answering, Codex running, mode ``running``)
    with the fewest active turns (then the fewest sessions, then the node id, so a tie always
    goes the same way).
    """
    why: dict[str, str] = {}
    fit: list[FleetNode] = []
    for candidate in nodes:
        reason = _unfit(candidate, node=node, labels=labels)
        if reason is None:
            fit.append(candidate)
        else:
            why[candidate.nodeId] = reason
    if node is not None and node not in {n.nodeId for n in nodes}:
        why[node] = "no such node in the fleet"
    if not fit:
        return None, why

    def load(n: FleetNode) -> tuple[int, int, str]:
        counts = n.registration.counts if n.registration else NodeCounts()
        return (counts.activeTurns or 0, counts.sessions or 0, n.nodeId)

    best = min(fit, key=load)
    for other in fit:
        if other is not best:
            why[other.nodeId] = "busier (more active turns or sessions)"
    return best, why


def _unfit(n: FleetNode, *, node: str | None, labels: Sequence[str]) -> str | None:
    record = n.registration
    if node is not None and n.nodeId != node:
        return "not the node asked for"
    if not n.registered or record is None:
        return "not registered (its lease expired: the node is down)"
    if not n.reachable:
        return f"does not answer: {n.error}" if n.error else "does not answer"
    if record.apiBase is None and not n.self:
        # This node calls itself at its bound address; others need the advertised one.
        return "no advertised API base (--advertise-url)"
    if not labels_match(record.labels, labels):
        return f"labels {sorted(record.labels)} do not match {list(labels)}"
    if record.mode != "running":
        return f"mode {record.mode}"
    if not record.codexdReachable:
        return "codexd does not answer"
    if record.child != "running":
        return f"Codex is {record.child}"
    return None
