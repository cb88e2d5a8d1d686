"""The conductor's and the status-api's answers as msgspec types.

The views are built from these types, and ``GET /openapi.json`` describes them with the same
types (:mod:`conductor_trio.web.api_doc`), so the document cannot drift from the answers. Field
names are the wire names clients already read (snake_case, unlike codexd's camelCase); the
shapes that come from codexd reuse :mod:`codexd_trio.base.contracts` types.

A lease snapshot differs between the file store and etcd: the etcd-only fields are ``UNSET``
(left out of the answer) with the file store. Lease snapshots are dicts built by the keepers;
:func:`lease_view` turns one into :class:`LeaseSnapshot` and refuses a key this module does not
describe, so a new lease field cannot reach the wire undocumented.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from codexd_trio.base.contracts import ActiveTurn, ChildState
from conductor_trio.lease.file import LeaseHolder, LeaseRole
from conductor_trio.mode import Mode, ModeRecord

__all__ = [
    "CodexView",
    "ConductorDescribe",
    "ConductorHealth",
    "LeaseSnapshot",
    "LoopView",
    "ModeState",
    "NodeStatus",
    "NotificationsView",
    "Ready",
    "RouteInfo",
    "Runtime",
    "SinkView",
    "StatusApiDescribe",
    "StatusApiHealth",
    "StatusSnapshot",
    "UnreachableStatus",
    "lease_view",
]

ConfiguredRole = Literal["primary", "standby"]


# -- probes and describe -----------------------------------------------------------------------


class ConductorHealth(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /healthz`` of the conductor."""

    status: Literal["ok"] = "ok"
    pid: int
    uptime_s: float
    node_id: str


class StatusApiHealth(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /healthz`` of the status-api."""

    status: Literal["ok"] = "ok"
    pid: int
    uptime_s: float


class Ready(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /readyz`` when this conductor is the ready leader, or a fleet node's standby (else 503
    ``not_ready``)."""

    ready: bool
    role: LeaseRole


class RouteInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    method: str
    path: str
    summary: str
    # Present (true) only on routes that need the shared token.
    auth: bool = False


class DescribeAuth(msgspec.Struct, frozen=True, kw_only=True):
    scheme: str
    header: str
    routes: list[str]
    token_configured: bool
    without_token: str


class CodexBackend(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    base_url: str


class ConductorDescribe(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /describe`` of the conductor."""

    name: str
    surface: str
    version: str
    node_id: str
    routes: list[RouteInfo]
    auth: DescribeAuth
    codex_backend: CodexBackend


class StatusApiDescribe(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /describe`` of the status-api."""

    name: str
    surface: str
    version: str
    conductor_base: str
    routes: list[RouteInfo]


# -- lease, loops, runtime ---------------------------------------------------------------------


class LeaseSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The lease as ``/v1/runtime``, ``/v1/system/state`` and ``/v1/status`` show it."""

    store: Literal["file", "etcd"]
    role: LeaseRole
    configured_role: ConfiguredRole
    holder_id: str | None
    holder_host: str | None
    term: int | None
    fencing_token: int | None
    acquired_at: str | None
    renewed_at: str | None
    expires_at: str | None
    is_holder: bool
    ttl_s: float
    renew_s: float
    consecutive_failures: int
    last_error: str | None
    # etcd only
    endpoints: list[str] | UnsetType = UNSET
    key: str | UnsetType = UNSET
    holder: LeaseHolder | UnsetType | None = UNSET
    revision: int | UnsetType | None = UNSET
    lease_id: str | UnsetType | None = UNSET
    valid_for_s: float | UnsetType | None = UNSET
    margin_s: float | UnsetType = UNSET
    keepalives: int | UnsetType = UNSET
    last_loss: str | UnsetType | None = UNSET


def lease_view(snapshot: dict[str, Any]) -> LeaseSnapshot:
    """A keeper's ``snapshot()`` as :class:`LeaseSnapshot`.

    Raises:
        msgspec.ValidationError: a key or a type this module does not describe (a bug).
    """
    return msgspec.convert(snapshot, LeaseSnapshot)


class LoopView(msgspec.Struct, frozen=True, kw_only=True):
    interval_s: float
    runs: int
    last_run_at: str | None
    # A leader-only loop runs inside the lease's fence (etcd): the token it last ran under.
    fenced: bool | UnsetType = UNSET
    fence_token: int | UnsetType | None = UNSET


class RuntimePaths(msgspec.Struct, frozen=True, kw_only=True):
    state_dir: str
    # None with an etcd lease.
    lease_file: str | None
    mode_file: str


class Runtime(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/runtime``."""

    node_id: str
    host: str
    role: LeaseRole
    configured_role: ConfiguredRole
    lease: LeaseSnapshot
    mode: Mode
    loops: dict[str, LoopView]
    paths: RuntimePaths
    codexd_base: str
    local_api: str
    public_api_base: str | None
    pid: int
    started_at: str
    # The same instant under codexd's spelling (CONTRACT uses both); both are kept.
    startedAt: str
    uptime_s: float
    version: str
    warnings: list[str]


# -- codex backend -----------------------------------------------------------------------------


class ProxyView(msgspec.Struct, frozen=True, kw_only=True):
    target_base_url: str
    reachable: bool
    error: str | None


class CodexChild(msgspec.Struct, frozen=True, kw_only=True):
    status: ChildState
    pid: int | None


class SessionCountsView(msgspec.Struct, frozen=True, kw_only=True):
    count: int | None
    active_count: int | None


class RecentEventsCount(msgspec.Struct, frozen=True, kw_only=True):
    count: int | None
    last_seq: int | None


class CodexView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/codex``: codexd as the conductor sees it (``None`` parts: codexd unknown)."""

    backend: str
    proxy: ProxyView
    child: CodexChild | None
    sessions: SessionCountsView
    recent_events: RecentEventsCount
    routes: list[RouteInfo]


# -- system mode -------------------------------------------------------------------------------


class QueueHoldView(msgspec.Struct, frozen=True, kw_only=True):
    """The hold of codexd's turn queues that the mode wants (held while paused or draining),
    and whether codexd confirmed it (issue 23)."""

    held: bool
    reason: str | None = None
    confirmed: bool
    # What codexd last said (None: not known yet).
    codexd_held: bool | None = None
    error: str | None = None


class ModeState(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/system/state`` and the answer of ``POST /v1/system/pause|resume|drain``."""

    mode: Mode
    reason: str | None
    requested_by: str | None
    updated_at: str | None
    role: LeaseRole
    lease: LeaseSnapshot
    codexd_reachable: bool
    # None while codexd's status is unknown.
    active_turns: list[ActiveTurn] | None
    active_turn_count: int | None
    drained: bool
    queue_hold: QueueHoldView | None = None


# -- status ------------------------------------------------------------------------------------


class NodeStatus(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    host: str
    pid: int
    started_at: str
    uptime_s: float
    local_api: str
    version: str


class CodexdChildStatus(msgspec.Struct, frozen=True, kw_only=True):
    status: ChildState
    pid: int | None
    restarts: int


class CodexdStatusView(msgspec.Struct, frozen=True, kw_only=True):
    base_url: str
    reachable: bool
    checked_at: str | None
    error: str | None
    daemon_id: str | None
    started_at: str | None
    pid: int | None
    child: CodexdChildStatus | None


class OwnMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a daemon's own ``GET /metrics`` declares its metric families."""

    path: str
    ok: bool
    families: int


class CodexdMetrics(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    ok: bool
    checked_at: str | None
    error: str | None
    families: int | None


class MetricsStatus(msgspec.Struct, frozen=True, kw_only=True):
    conductor: OwnMetrics
    codexd: CodexdMetrics


class StatusApiPart(msgspec.Struct, frozen=True, kw_only=True):
    """Added by the status-api to the conductor's snapshot it relays."""

    observed_at: str
    conductor_base: str
    metrics: OwnMetrics


class SinkView(msgspec.Struct, frozen=True, kw_only=True):
    """One notification sink (never its URL, which holds secrets)."""

    id: str
    scheme: str
    kinds: list[str]
    pending: int
    sent: int
    failed: int
    retried: int
    dropped: int
    last_error: str | None
    last_error_at: str | None
    last_sent_at: str | None


class NotificationsView(msgspec.Struct, frozen=True, kw_only=True):
    """``notifications`` of ``/v1/status``: the notifier and each sink (issue 25)."""

    # The notifier is reading codexd's event stream now.
    following: bool
    # The last codexd event seq decided (None before the first start with sinks).
    cursor: int | None
    pending: int
    sinks: list[SinkView]


class StatusSnapshot(msgspec.Struct, frozen=True, kw_only=True, tag_field="source",
                     tag="conductor"):
    """``GET /v1/status`` of the conductor (``source: "conductor"``); the status-api relays
    it with ``status_api`` added."""

    observed_at: str
    node: NodeStatus
    role: LeaseRole
    lease: LeaseSnapshot
    mode: ModeRecord
    codexd: CodexdStatusView
    sessions: SessionCountsView
    active_turns: list[ActiveTurn]
    last_event_seq: int | None
    metrics: MetricsStatus
    warnings: list[str]
    notifications: NotificationsView | UnsetType = UNSET
    status_api: StatusApiPart | UnsetType = UNSET


class ConductorUnreachable(msgspec.Struct, frozen=True, kw_only=True):
    base_url: str
    error: str


class UnreachableStatus(msgspec.Struct, frozen=True, kw_only=True, tag_field="source",
                        tag="unreachable"):
    """The status-api's ``GET /v1/status`` when the conductor cannot be read (still 200)."""

    observed_at: str
    conductor: ConductorUnreachable
    warnings: list[str]


# -- devices, pairing, action links (issue 25) ---------------------------------------------------


class PairingRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/system/pairings``: a code for a new device."""

    name: str = "phone"
    # "system": the device may also use /v1/system/* (pause, devices, pairing).
    grant: list[Literal["system"]] = msgspec.field(default_factory=list)


class PairingCode(msgspec.Struct, frozen=True, kw_only=True):
    """A pairing code: open ``url`` on the device (the code is in the fragment)."""

    code: str
    url: str
    expires_in_s: float
    name: str
    scopes: list[str]


class PairRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/pair``: a device exchanges its pairing code for its token."""

    code: str
    name: str | None = None


class DeviceInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    scopes: list[str]
    createdAt: str
    revokedAt: str | None = None
    revoked: bool = False


class PairedDevice(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``POST /v1/pair``: the device and its token (shown this once)."""

    device: DeviceInfo
    token: str


class OneDevice(msgspec.Struct, frozen=True, kw_only=True):
    device: DeviceInfo


class DeviceList(msgspec.Struct, frozen=True, kw_only=True):
    devices: list[DeviceInfo]


class ActionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/actions/{approval_id}/{decision}?t=…``: an empty object."""


class ActionDone(msgspec.Struct, frozen=True, kw_only=True):
    """A one-tap decision, delivered: codexd's approval record as it is now."""

    approvalId: str
    decision: str
    approval: dict[str, Any]
