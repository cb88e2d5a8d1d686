"""The conductor process: its state and its nursery tree.

```
Conductor.run(http)
└── nursery
    ├── HTTP/WS server   Hypercorn (trio worker) serving the Quart-Trio app
    ├── lease loop       LeaseKeeper (file: acquire / renew every renew_s) or EtcdLeaseKeeper.run
    │                    (etcd: campaign, keep-alive every TTL/3, watch the key)
    ├── heartbeat loop   probe codexd's status every heartbeat_s (cached for the views); with
    │                    etcd a leader-only job, fenced: it runs only while this node leads
    └── hold sync        codexd's turn-queue hold follows the mode (HoldSync.run, issue 23)
```

The server starts first so that the etcd lease value names the address it really listens on.

A graceful stop (``begin_stop``) closes relayed event streams with 1001, lets Hypercorn finish
in-flight requests, cancels the loops and releases the lease so a standby can take over at once.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Awaitable, Callable

import msgspec
import trio
from msgspec import UNSET

from codexd_trio.base.contracts import CodexdStatus, now_iso
from codexd_trio.client import CodexdClient, CodexdError, CodexdUnavailable, UpstreamPool
from conductor_trio import __version__
from conductor_trio.auth.node import NodeAuth
from conductor_trio.config import ConductorConfig
from conductor_trio.contracts import (
    CodexdChildStatus,
    CodexdMetrics,
    CodexdStatusView,
    LoopView,
    MetricsStatus,
    ModeState,
    NodeStatus,
    OwnMetrics,
    QueueHoldView,
    Runtime,
    RuntimePaths,
    SessionCountsView,
    StatusSnapshot,
    lease_view,
)
from conductor_trio.fleet.fleet import Fleet
from conductor_trio.health import (
    METRICS_CHECK_EVERY_S,
    CodexdProbe,
    LoopInfo,
    MetricsHealth,
    active_turns,
    after_first,
    check_metrics,
    count_families,
)
from conductor_trio.hold import HoldSync
from conductor_trio.lease.etcd import EtcdLeaseKeeper
from conductor_trio.lease.etcd_gateway import EtcdGateway
from conductor_trio.lease.file import (
    FileLeaseStore,
    LeaseHolder,
    LeaseKeeper,
    LeaseStore,
    iso_from_clock,
)
from conductor_trio.metrics import ConductorMetrics
from conductor_trio.mode import ModeStore
from conductor_trio.notify.notifier import Notifier


class Conductor:
    """One conductor: config, codexd client, lease keeper, mode store and the views' data.

    Args:
        config: the resolved configuration.
        lease_store: where the lease lives (default: ``lease.json`` in the conductor state dir).
        clock: the lease clock (``time.time``; tests pass ``trio.current_time``).

    **Resource handling:** :meth:`run` owns the codexd client and every task; nothing outlives
    it.
    """

    def __init__(
        self,
        config: ConductorConfig,
        *,
        lease_store: LeaseStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.client = CodexdClient(
            config.codexd_base, timeout=config.codexd_timeout_s, token=config.codexd_token
        )
        # What /v1/codex/* is proxied through: a lean HTTP/1.1 client (an UpstreamPool) to a
        # plain-HTTP codexd (the usual loopback one), else the client's httpx. The client
        # sends through a pool of its own: proxied answers are observed apart from its own.
        self.upstream: UpstreamPool | None = None
        if config.codexd_base.startswith("http://"):
            self.upstream = UpstreamPool(config.codexd_base, timeout=config.codexd_timeout_s,
                                         headers=self.client.auth_headers)
        self.lease_path = config.conductor_state / "lease.json"
        self.mode_path = config.conductor_state / "mode.json"
        self.lease: LeaseKeeper | EtcdLeaseKeeper
        if config.lease_endpoints and lease_store is None:
            gateway = EtcdGateway(
                config.lease_endpoints,
                # Several tries fit in one keep-alive period, so one dead member of a cluster
                # does not cost the lease.
                request_timeout_s=min(2.0, max(0.3, config.lease_ttl_s / 6)),
            )
            self.lease = EtcdLeaseKeeper(
                gateway, key=config.lease_key, holder=self._lease_holder,
                ttl_s=int(config.lease_ttl_s), configured_role=config.role,
            )
        else:
            self.lease = LeaseKeeper(
                lease_store or FileLeaseStore(self.lease_path),
                holder_id=config.holder_id,
                holder_host=config.host,
                holder_node=config.node_id,
                holder_api=lambda: self._lease_holder().localApiBase,
                role=config.role,
                ttl_s=config.lease_ttl_s,
                renew_s=config.lease_renew_s,
                clock=clock,
            )
        self.modes = ModeStore(self.mode_path)
        # The mode holds codexd's turn queues (issue 23).
        self.hold = HoldSync(self.client, self.modes, timeout_s=config.codexd_timeout_s)
        self.pid = os.getpid()
        self.started_at = now_iso()
        self._started_monotonic = time.monotonic()
        self.url: str | None = None
        self.probe = CodexdProbe()
        self.codexd_metrics = MetricsHealth()
        self.loops = {
            "lease": LoopInfo(config.lease_renew_s),
            "heartbeat": LoopInfo(config.heartbeat_s),
        }
        self.relays: set[trio.CancelScope] = set()
        self.stopping = trio.Event()
        # Device tokens, pairing codes, action links (issue 25), and the notifier.
        self.auth = NodeAuth(config.conductor_state, action_ttl_s=config.action_ttl_s)
        self.notifier = Notifier(config, self.client, self.auth.actions, base=self.link_base,
                                 role=lambda: (self.lease.role, self.lease.last_error))
        # The fleet (issue 28): with etcd, this node's registration; the fleet's reads.
        self.fleet = Fleet.for_node(config, self.lease, own_base=lambda: self.url,
                                    probe=self.probe_codexd, started_at=self.started_at,
                                    mode=lambda: self.modes.current.mode)
        # Last: its collectors read the parts above.
        self.metrics = ConductorMetrics(self)

    def _lease_holder(self) -> LeaseHolder:
        """What this node writes into the etcd key: enough for a client to come here."""
        cfg = self.config
        return LeaseHolder(nodeId=cfg.node_id, host=cfg.host,
                           localApiBase=cfg.public_api_base or self.url or cfg.local_api)

    def link_base(self) -> str:
        """The address links in notifications and pairing URLs point at."""
        return self.config.public_api_base or self.url or self.config.local_api

    @property
    def writes_refused(self) -> bool:
        """Whether ``POST /v1/codex/*`` must be refused here: this node does not lead, the
        configuration does not let a standby forward writes, and it is not a fleet node (in a
        fleet every node works on its own sessions; only leader-only jobs need the lease)."""
        return (self.config.standby_writes == "refuse" and self.lease.role != "leader"
                and not self.config.fleet)

    @property
    def uptime_s(self) -> float:
        return round(time.monotonic() - self._started_monotonic, 3)

    # ----------------------------------------------------------------------------------------
    # codexd

    async def probe_codexd(self, *, timeout_s: float = 3.0) -> CodexdProbe:
        """Read codexd's status now and cache it; never raises for an unreachable codexd."""
        try:
            with trio.fail_after(timeout_s):
                status = msgspec.convert(await self.client.status(), CodexdStatus)
        except (CodexdUnavailable, CodexdError, trio.TooSlowError, msgspec.ValidationError) as exc:
            self.probe = CodexdProbe(
                reachable=isinstance(exc, CodexdError), checked_at=now_iso(),
                error=str(exc) or "codexd did not answer in time",
            )
        else:
            self.probe = CodexdProbe(reachable=True, checked_at=now_iso(), status=status)
            self.hold.observe(status)
        return self.probe

    async def probe_codexd_metrics(self, *, timeout_s: float = 3.0) -> MetricsHealth:
        """Check codexd's ``GET /metrics`` now (for the status page); never raises."""
        self.codexd_metrics = await check_metrics(self.client, timeout_s=timeout_s)
        return self.codexd_metrics

    def metrics_health(self) -> MetricsStatus:
        """``metrics`` of ``/v1/status``: this conductor's and codexd's ``/metrics``."""
        own = count_families(self.metrics.http.render().decode(), "conductor")
        return MetricsStatus(
            conductor=OwnMetrics(path="/metrics", ok=own > 0, families=own),
            codexd=CodexdMetrics(url=f"{self.config.codexd_base}/metrics",
                                 **dataclasses.asdict(self.codexd_metrics)),
        )

    def warnings(self) -> list[str]:
        out: list[str] = []
        if self.config.shared_token is None and self.config.codexd_token is not None:
            # The conductor lends codexd's token to no caller, and has no credential to ask for.
            out.append("codexd has a token but no shared token is configured: every "
                       "/v1/codex/* call is refused (401); set BAA_SHARED_TOKEN_FILE")
        elif self.config.shared_token is None:
            out.append("no shared token configured: /v1/system/* accept loopback callers only")
        if not self.probe.reachable:
            out.append(f"codexd unreachable at {self.config.codexd_base}")
        if self.lease.role == "degraded":
            out.append(f"lease not renewed in time or store failing: {self.lease.last_error}")
        if (registry := self.fleet.registry) is not None and registry.last_error:
            out.append(f"fleet registration failing: {registry.last_error}")
        mode = self.modes.current.mode
        if mode != "running":
            out.append(f"automation {mode}: new work is refused")
        if not self.hold.in_sync and (mode != "running" or self.hold.last_error):
            out.append("codexd has not confirmed the queue hold of this mode"
                       + (f": {self.hold.last_error}" if self.hold.last_error else ""))
        return out

    def hold_view(self) -> QueueHoldView:
        held, reason = self.hold.wanted()
        confirmed = self.hold.confirmed
        return QueueHoldView(held=held, reason=reason, confirmed=self.hold.in_sync,
                             codexd_held=confirmed.held if confirmed else None,
                             error=self.hold.last_error)

    # ----------------------------------------------------------------------------------------
    # Views

    def runtime(self) -> Runtime:
        """``GET /v1/runtime``."""
        cfg = self.config
        return Runtime(
            node_id=cfg.node_id,
            host=cfg.host,
            role=self.lease.role,
            configured_role=cfg.role,
            lease=lease_view(self.lease.snapshot()),
            mode=self.modes.current.mode,
            loops=self._loops_view(),
            paths=RuntimePaths(
                state_dir=str(cfg.conductor_state),
                lease_file=str(self.lease_path) if cfg.lease_store == "file" else None,
                mode_file=str(self.mode_path),
            ),
            codexd_base=cfg.codexd_base,
            local_api=self.url or cfg.local_api,
            public_api_base=cfg.public_api_base,
            pid=self.pid,
            started_at=self.started_at,
            startedAt=self.started_at,
            uptime_s=self.uptime_s,
            version=__version__,
            warnings=self.warnings(),
        )

    def _loops_view(self) -> dict[str, LoopView]:
        loops = {name: info.as_json() for name, info in self.loops.items()}
        if isinstance(self.lease, EtcdLeaseKeeper):
            # With etcd the lease "loop" is the keeper's keep-alive: show its runs.
            loops["lease"].update(runs=self.lease.keepalives,
                                  last_run_at=iso_from_clock(self.lease.renewed_at))
        return {name: msgspec.convert(loop, LoopView) for name, loop in loops.items()}

    def mode_state(self, probe: CodexdProbe) -> ModeState:
        """``GET /v1/system/state``: the mode, the lease and the turns still running."""
        record = self.modes.current
        turns = active_turns(probe)
        return ModeState(
            mode=record.mode,
            reason=record.reason,
            requested_by=record.requested_by,
            updated_at=record.updated_at,
            role=self.lease.role,
            lease=lease_view(self.lease.snapshot()),
            codexd_reachable=probe.reachable and probe.status is not None,
            active_turns=turns,
            active_turn_count=None if turns is None else len(turns),
            drained=record.mode == "draining" and turns == [],
            queue_hold=self.hold_view(),
        )

    def status_snapshot(self, probe: CodexdProbe) -> StatusSnapshot:
        """``GET /v1/status``: everything a person watching the node wants on one screen."""
        snap = probe.status.snapshot if probe.status is not None else None
        child = snap.daemon.child if snap else None
        return StatusSnapshot(
            observed_at=now_iso(),
            node=NodeStatus(
                node_id=self.config.node_id,
                host=self.config.host,
                pid=self.pid,
                started_at=self.started_at,
                uptime_s=self.uptime_s,
                local_api=self.url or self.config.local_api,
                version=__version__,
            ),
            role=self.lease.role,
            lease=lease_view(self.lease.snapshot()),
            mode=self.modes.current,
            codexd=CodexdStatusView(
                base_url=self.config.codexd_base,
                reachable=probe.status is not None,
                checked_at=probe.checked_at,
                error=probe.error,
                daemon_id=snap.identity.daemonId if snap and snap.identity else None,
                started_at=snap.daemon.startedAt if snap else None,
                pid=snap.daemon.pid if snap else None,
                child=CodexdChildStatus(status=child.status, pid=child.pid,
                                        restarts=child.restarts) if child else None,
            ),
            sessions=SessionCountsView(
                count=snap.sessions.count if snap else None,
                active_count=snap.sessions.activeCount if snap else None,
            ),
            active_turns=active_turns(probe) or [],
            last_event_seq=snap.recentEvents.lastSeq if snap else None,
            metrics=self.metrics_health(),
            warnings=self.warnings(),
            notifications=self.notifier.view() if self.config.notify_sinks else UNSET,
        )

    # ----------------------------------------------------------------------------------------
    # Loops and lifetime

    async def _lease_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
        if isinstance(self.lease, EtcdLeaseKeeper):
            self.loops["lease"].interval_s = self.lease.renew_s
            await self.lease.run(task_status=after_first(task_status, self.loops["lease"]))
            return
        await self.lease.step()
        self.loops["lease"].tick()
        task_status.started()
        while True:
            await trio.sleep(self.config.lease_renew_s)
            await self.lease.step()
            self.loops["lease"].tick()

    async def _heartbeat_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.probe_codexd()
        await self.probe_codexd_metrics()
        self.loops["heartbeat"].tick()
        task_status.started()
        if isinstance(self.lease, EtcdLeaseKeeper):
            # A leader-only job: it runs inside the lease's fence, which is cancelled the moment
            # the lease is lost and at the latest when it could have expired.
            self.loops["heartbeat"].fenced = True
            await self.lease.run_fenced(self._heartbeats)
        else:
            await self._heartbeats()

    async def _heartbeats(self) -> None:
        info = self.loops["heartbeat"]
        metrics_checked = trio.current_time()
        while True:
            await trio.sleep(self.config.heartbeat_s)
            await self.probe_codexd()
            # Less often than the status: each check is a request (and a log line) on codexd.
            if trio.current_time() - metrics_checked >= METRICS_CHECK_EVERY_S:
                await self.probe_codexd_metrics()
                metrics_checked = trio.current_time()
            info.tick()
            if isinstance(self.lease, EtcdLeaseKeeper):
                info.fence_token = self.lease.term

    def begin_stop(self) -> None:
        """Start a graceful stop: relayed event streams close with 1001, the server drains."""
        for scope in list(self.relays):
            scope.cancel(reason="conductor stopping")
        self.stopping.set()

    async def run(self, http: Callable[..., Awaitable[None]], *,
                  task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the conductor until :meth:`begin_stop` (graceful) or cancel.

        ``http(task_status=...)`` is the HTTP server (``conductor_trio.web.app.serve_conductor``
        passes Hypercorn serving the app): it reports the bound base URL and returns once
        :attr:`stopping` is set and its connections are closed. So this module never imports the
        web layer that imports it.

        Calls ``task_status.started(url)`` with the bound base URL once the lease has been tried,
        codexd probed and the HTTP socket listens.

        Raises:
            conductor_trio.mode.ModeStoreError: the persisted mode file is unreadable.

        **Cancellation:** a cancel stops the server and loops at once; the lease is still
        released (shielded, bounded) and the codexd client closed.
        """
        self.modes.load()
        self.auth.load()
        self.notifier.load()
        try:
            async with trio.open_nursery() as nursery:
                async def server(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                                 ) -> None:
                    await http(task_status=task_status)
                    nursery.cancel_scope.cancel(reason="HTTP server stopped")

                self.url = await nursery.start(server)
                await nursery.start(self._lease_loop)
                await nursery.start(self._heartbeat_loop)
                await nursery.start(self.hold.run)
                await nursery.start(self.notifier.run)
                await nursery.start(self.fleet.run)
                task_status.started(self.url)
        finally:
            # Shielded: under a cancel, httpx's close would otherwise leave pooled sockets open.
            # Each step its own deadline: an unreachable etcd must not use up the time the
            # clients need to close.
            with trio.CancelScope(shield=True):
                await self.fleet.aclose()
                with trio.move_on_after(5):
                    await self.lease.release()
                with trio.move_on_after(2):
                    await self.client.aclose()
                if self.upstream is not None:
                    await self.upstream.aclose()
                if isinstance(self.lease, EtcdLeaseKeeper):
                    with trio.move_on_after(2):
                        await self.lease.gateway.aclose()

