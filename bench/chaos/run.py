"""One chaos run, start to end: the node up, load and faults for the set time, the node settled
and stopped, the files judged, the report written."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.chaos import checks, plot, report, sampler
from bench.chaos.clients import Endpoints, World, worker
from bench.chaos.context import Context, Settings
from bench.chaos.disk import Disk
from bench.chaos.faults import FAULTS, Targets, kinds, lane
from bench.chaos.node import Managed, groups_alive, run_processes
from bench.chaos.streams import follow, make_subscribers
from bench.common import machine_facts
from codexd_trio.base.logsetup import LOG_FILE_BACKUPS, LOG_FILE_MAX_BYTES
from codexd_trio.testing.codexhome import scratch_root, write_codex_home

PY = sys.executable
CODEXD_GRACE_S = 5
READ_SEALED_EVERY_S = 5.0
SETTLE_S = 30.0
# How long a handler may take to notice its client left (a disconnect is seen at once).
RELEASE_S = 8.0


def free_port() -> int:
    # Bind-and-release on loopback: every daemon keeps its port across restarts.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _token_file(path: Path) -> str:
    token = secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _clean_env() -> dict[str, str]:
    # The developer's own node settings are not this throw-away node's.
    return {k: v for k, v in os.environ.items() if not k.startswith("BAA_")} | {
        "PYTHONUNBUFFERED": "1"}


class Node:
    """The daemons of the run and where they live."""

    def __init__(self, ctx: Context, workdir: Path, disk: Disk) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.workdir = workdir
        self.state = disk.root / "state"
        self.logs = disk.root / "logs"
        self.own_logs = workdir / "logs"
        self.own_logs.mkdir(parents=True, exist_ok=True)
        self.session_cwd = workdir / "work"
        self.session_cwd.mkdir(parents=True, exist_ok=True)
        self.codex_home = workdir / "codex-home"
        self.codexd_token_file = workdir / "codexd.token"
        self.shared_token_file = workdir / "shared.token"
        self.codexd_token = _token_file(self.codexd_token_file)
        self.shared_token = _token_file(self.shared_token_file)
        env = _clean_env()
        model_port = free_port()
        self.model_url = f"http://127.0.0.1:{model_port}/v1"
        self.model = Managed(ctx, "model", "model",
                             [PY, "-m", "codexd_trio.testing", "--prompted", "--port",
                              str(model_port)], env, self.model_url,
                             self.own_logs / "model.stderr")
        self.etcd: Managed | None = None
        lease_args: list[str] = []
        if s.etcd:
            from tests.etcd_fixture import etcd_binary

            binary = etcd_binary()
            if binary is None:
                raise RuntimeError("--etcd needs an etcd binary (apt-get install etcd-server)")
            client, peer = free_port(), free_port()
            url = f"http://127.0.0.1:{client}"
            self.etcd = Managed(ctx, "etcd", "etcd", [
                binary, "--name", "chaos", "--data-dir", str(workdir / "etcd"),
                "--listen-client-urls", url, "--advertise-client-urls", url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"chaos=http://127.0.0.1:{peer}",
            ], env, url, self.own_logs / "etcd.log", ready=url + "/health")
            lease_args = ["--lease-store", f"etcd://127.0.0.1:{client}",
                          "--lease-ttl", str(s.lease_ttl)]
        codexd_port = free_port()
        self.codexd_url = f"http://127.0.0.1:{codexd_port}"
        codexd_env = env | {"CODEX_HOME": str(self.codex_home)}
        self.codexd_log = self.logs / "codexd" / "daemon.log"
        self.codexd = Managed(ctx, "codexd", "codexd", [
            PY, "-m", "codexd_trio", "start", "--local-api-base", self.codexd_url,
            "--logs-dir", str(self.logs), "--state-dir", str(self.state),
            "--server-cwd", str(self.session_cwd), "--token-file", str(self.codexd_token_file),
            "--log-file", str(self.codexd_log),
            "--event-log-segment-mb", "1", "--event-log-segments", "64",
            "--subscriber-queue", "128", "--approval-timeout", "20",
            "--shutdown-grace", str(CODEXD_GRACE_S), "--restart-backoff", "0.2",
            "--restart-backoff-max", "2",
        ], codexd_env, self.codexd_url, self.own_logs / "codexd.stderr")
        self.conductors: list[Managed] = []
        for name in ("a", "b") if s.etcd else ("a",):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            self.conductors.append(Managed(ctx, f"conductor-{name}", "conductor", [
                PY, "-m", "conductor_trio", "start", "--local-api", url,
                "--codexd-base", self.codexd_url, "--state-dir", str(workdir / f"c-{name}"),
                "--node-id", f"chaos-{name}", "--token-file", str(self.shared_token_file),
                "--codexd-token-file", str(self.codexd_token_file),
                "--log-file", str(self.own_logs / f"conductor-{name}.log"), *lease_args,
            ], env, url, self.own_logs / f"conductor-{name}.stderr"))
        self.status_api: Managed | None = None
        if s.status_api:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            self.status_api = Managed(ctx, "status-api", "status-api", [
                PY, "-m", "conductor_trio.status_api", "start", "--local-api", url,
                "--conductor-base", self.conductors[0].url,
                "--log-file", str(self.own_logs / "status-api.log"),
            ], env, url, self.own_logs / "status-api.stderr")

    def daemons(self) -> list[Managed]:
        out = [self.model]
        if self.etcd is not None:
            out.append(self.etcd)
        out += [self.codexd, *self.conductors]
        if self.status_api is not None:
            out.append(self.status_api)
        return out

    def log_files(self) -> list[Path]:
        paths = [self.codexd_log, *(self.own_logs / f"{c.name}.log" for c in self.conductors)]
        if self.status_api is not None:
            paths.append(self.own_logs / "status-api.log")
        return paths

    async def stop(self) -> None:
        """SIGTERM in dependency order: the readers of codexd first, then codexd, then what
        it needed (each step's daemons side by side)."""
        steps: list[list[Managed]] = [
            [*self.conductors, *([self.status_api] if self.status_api else [])],
            [self.codexd],
            [self.model, *([self.etcd] if self.etcd else [])],
        ]
        for step in steps:
            async with trio.open_nursery() as nursery:
                for daemon in step:
                    nursery.start_soon(daemon.stop,
                                       CODEXD_GRACE_S if daemon.role == "codexd" else 5)

    async def start(self, nursery: trio.Nursery) -> None:
        """Start every daemon; each is found through its ready line (etcd: its health)."""
        async with trio.open_nursery() as first:
            first.start_soon(nursery.start, self.model.run)
            if self.etcd is not None:
                first.start_soon(nursery.start, self.etcd.run)
        write_codex_home(self.codex_home, self.model_url)
        await nursery.start(self.codexd.run)
        async with trio.open_nursery() as rest:
            for conductor in self.conductors:
                rest.start_soon(nursery.start, conductor.run)
            if self.status_api is not None:
                rest.start_soon(nursery.start, self.status_api.run)


async def _get(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response | None:
    try:
        return await http.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=3)
    except httpx.HTTPError:
        return None


async def settle(ctx: Context, node: Node, ep: Endpoints, world: World) -> None:
    """After the faults: codexd ready, every queued turn taken back, every running turn
    interrupted and settled, every pending approval declined (bounded; polling another process
    is the only way to know)."""
    async with httpx.AsyncClient() as http:
        with trio.move_on_after(SETTLE_S):
            while True:
                ready = await _get(http, f"{ep.codexd}/readyz", ep.codexd_token)
                if ready is not None and ready.status_code == 200:
                    break
                await trio.sleep(0.2)
        headers = {"Authorization": f"Bearer {ep.codexd_token}",
                   "Content-Type": "application/json"}
        for queue_id, (session_id, _) in sorted(world.queued.items()):
            # Else each interrupt below would start the next queued turn. Gone or started
            # already: a 404 or 409, which is fine.
            with contextlib.suppress(httpx.HTTPError):
                await http.delete(f"{ep.codexd}/v1/codexd/sessions/{session_id}/queue/{queue_id}",
                                  headers=headers, timeout=5)
        with trio.move_on_after(SETTLE_S) as scope:
            while True:
                status = await _get(http, f"{ep.codexd}/v1/codexd/status", ep.codexd_token)
                pending = await _get(http, f"{ep.codexd}/v1/codexd/approvals?state=pending",
                                     ep.codexd_token)
                if status is None or status.status_code != 200 or pending is None:
                    await trio.sleep(0.2)
                    continue
                turns = status.json()["data"]["snapshot"]["activeTurns"]
                approvals = pending.json()["data"]["approvals"]
                if not turns and not approvals:
                    break
                for approval in approvals:
                    # decidedBy says who: the harness, settling, not a client under test.
                    await _post(http, f"{ep.codexd}/v1/codexd/approvals/{approval['approvalId']}",
                                {"decision": "decline", "decidedBy": "chaos-settle"}, headers)
                for turn in turns:
                    await _post(http, f"{ep.codexd}/v1/codexd/turn/interrupt",
                                {"sessionId": turn["sessionId"], "turnId": turn["turnId"]},
                                headers)
                await trio.sleep(0.3)
        if scope.cancelled_caught:
            ctx.notes.append(f"turns still running {SETTLE_S:.0f}s after the faults stopped; "
                             "codexd's graceful stop settles them")


async def _post(http: httpx.AsyncClient, url: str, body: dict[str, Any],
                headers: dict[str, str]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        await http.post(url, json=body, headers=headers, timeout=5)


async def subscribers_released(ctx: Context, ep: Endpoints) -> None:
    """Once every client has left, codexd holds no event-stream subscriber (a handler pinned
    by a client that is gone would stay counted)."""
    ctx.check("subscribers_released")
    count = None
    async with httpx.AsyncClient() as http:
        with trio.move_on_after(RELEASE_S):
            while True:
                metrics = await _get(http, f"{ep.codexd}/metrics", ep.codexd_token)
                if metrics is not None and metrics.status_code == 200:
                    for line in metrics.text.splitlines():
                        if line.startswith("codexd_websocket_subscribers "):
                            count = float(line.split()[1])
                    if count == 0:
                        return
                await trio.sleep(0.2)  # another process: asking is the only way to know
    ctx.violation("subscribers_released",
                  f"codexd still counts {count} event-stream subscribers {RELEASE_S:.0f} s "
                  "after every client left", count=count)


async def disk_reader(ctx: Context, log: checks.DiskLog) -> None:
    """Read each sealed segment soon after it appears (before retention can remove it).

    On the Trio thread on purpose: the checks record into the context, which is not
    thread-safe; a segment is 1 MiB, a few milliseconds of reading."""
    while True:
        await trio.sleep(READ_SEALED_EVERY_S)
        log.read_sealed(ctx)


async def orphans(ctx: Context, node: Node) -> list[str]:
    """No process of the run is left: neither by its marker nor in any group it used."""
    ctx.check("no_orphans")
    leaders = dict(ctx.child_groups)
    for daemon in node.daemons():
        leaders.update(daemon.leaders())
    with trio.move_on_after(10):
        # init reaps orphans asynchronously: a bounded poll is the only way to see it.
        while run_processes(ctx.run_id) or groups_alive(leaders):  # noqa: ASYNC110
            await trio.sleep(0.1)
    left = run_processes(ctx.run_id)
    groups = groups_alive(leaders)
    if left or groups:
        ctx.violation("no_orphans", f"{len(left)} process(es) of the run and {len(groups)} of "
                      "its process groups left after the stop",
                      processes=[f"{pid} {cmd}" for pid, cmd in left], groups=groups)
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    return [f"{pid} {cmd}" for pid, cmd in left]


async def run(settings: Settings) -> int:
    run_id = uuid.uuid4().hex
    root = scratch_root() / "chaos"
    root.mkdir(parents=True, exist_ok=True)
    workdir = root / f"run-{run_id[:8]}"
    workdir.mkdir()
    settings.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(settings, run_id, workdir)
    print(f"chaos: seed {settings.seed} (replay: --seed {settings.seed}); run {run_id[:8]} in "
          f"{workdir}", flush=True)
    wall = time.monotonic()
    disk = Disk(workdir / "disk", settings.disk, settings.disk_mb)
    disk.setup()
    print(f"chaos: disk faults on {disk.note}", flush=True)
    extra: dict[str, Any] = {"disk": {"mode": disk.mode, "note": disk.note},
                             "machine": machine_facts()}
    try:
        node = Node(ctx, workdir, disk)
        ep = Endpoints(node.codexd_url, node.codexd_token, [c.url for c in node.conductors],
                       node.shared_token, str(node.session_cwd))
        world = World()
        subs = make_subscribers(ctx)
        log = checks.DiskLog(node.logs / "codexd")
        chaos = (0.0, 0.0)
        async with trio.open_nursery() as daemons:
            await node.start(daemons)
            ctx.log("harness", "node up")
            print(f"chaos: node up in {ctx.now():.1f}s: codexd {node.codexd_url}, "
                  f"conductors {', '.join(ep.conductors)}", flush=True)
            async with trio.open_nursery() as background:
                background.start_soon(sampler.resources, ctx, node.daemons(), node.state)
                background.start_soon(disk_reader, ctx, log)
                if settings.etcd:
                    background.start_soon(sampler.leaders, ctx, ep)
                async with httpx.AsyncClient() as http:
                    async with trio.open_nursery() as load:
                        for index in range(settings.workers):
                            load.start_soon(worker, ctx, world, ep, index)
                        for sub in subs:
                            load.start_soon(follow, ctx, world, ep, sub)
                        async with trio.open_nursery() as watchers:
                            targets = Targets(node.codexd, node.conductors, node.etcd, disk,
                                              subs, ep, world, node.state, watchers, http)
                            chaos_start = ctx.now()
                            async with trio.open_nursery() as lanes:
                                by_lane: dict[str, list[str]] = {}
                                for kind in kinds(settings.etcd):
                                    by_lane.setdefault(FAULTS[kind].lane, []).append(kind)
                                for name, lane_kinds in by_lane.items():
                                    lanes.start_soon(lane, ctx, targets, name, lane_kinds)
                                await trio.sleep(settings.chaos_s)  # the run's length
                                ctx.stop_faults.set()
                                ctx.log("harness", "faults stop")
                            chaos = (chaos_start, ctx.now())
                            print(f"chaos: {len(ctx.faults)} faults in {chaos[1] - chaos[0]:.0f}s;"
                                  " settling", flush=True)
                            for daemon in node.daemons():
                                await daemon.wait_up()
                        ctx.stop_clients.set()
                    await settle(ctx, node, ep, world)
                    await subscribers_released(ctx, ep)
                background.cancel_scope.cancel(reason="run over")
            await node.stop()
        extra["orphans"] = await orphans(ctx, node)
        log.read_all(ctx)
        extra["eventLog"] = {"lines": log.lines, "files": len(log.ranges),
                             "firstSeq": min(log.digests, default=0),
                             "lastSeq": max(log.digests, default=0)}
        extra["seenOnDisk"] = checks.check_seen(ctx, log)
        extra["turns"] = checks.check_turns(ctx, log, world,
                                            node.state / "codexd" / "session-registry.json")
        extra["queue"] = checks.check_queue(ctx, log, world)
        extra["approvals"] = checks.check_approvals(ctx, log, world,
                                                    node.state / "codexd" / "approvals.json")
        extra["logFiles"] = checks.check_log_files(ctx, node.log_files(), LOG_FILE_MAX_BYTES,
                                                   LOG_FILE_BACKUPS)
        extra["resources"] = report.resource_growth(ctx, *chaos)
        extra["accepted"] = {"sessions": len(world.sessions), "turns": len(world.turns),
                             "keys": len(world.keyed), "decisions": len(world.decisions)}
        extra["subscribers"] = [{"name": s.name, "connections": s.connections,
                                 "events": s.events, "overflows": s.overflows, "cuts": s.cuts}
                                for s in subs]
        extra["daemons"] = {d.name: {"starts": len(d.incarnations)} for d in node.daemons()}
        extra["chaosWindowS"] = [round(chaos[0], 3), round(chaos[1], 3)]
        extra["wallS"] = round(time.monotonic() - wall, 1)
        if settings.keep:
            shutil.copytree(disk.root, settings.out / "files", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("ballast.bin"))
    finally:
        disk.teardown()
    if not settings.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    document = report.build(ctx, extra=extra)
    report.write(document, settings.out / "chaos-report.json")
    plot.render(ctx, settings.out / "chaos-report.png", chaos=chaos)
    counts = ", ".join(f"{k} {v}" for k, v in document["faultCounts"].items())
    print(f"chaos: faults: {counts}", flush=True)
    print(f"chaos: {len(ctx.seen)} events seen, {len(world.turns)} turns accepted, "
          f"{sum(ctx.checked.values())} checks, {len(ctx.violations)} violation(s); "
          f"report {settings.out / 'chaos-report.json'} ({time.monotonic() - wall:.0f}s)",
          flush=True)
    return 1 if ctx.violations else 0
