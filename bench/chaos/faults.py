"""The faults: one table (:data:`FAULTS`), played by lanes that run side by side.

Each lane owns some kinds and plays them in a shuffled round-robin (so every kind gets its
share), paced by the run's fault interval. A fault's correctness never rests on a sleep: a
SIGSTOP is held for a random time (pacing) and always followed by SIGCONT, and whatever comes
next waits on a condition (the daemon's ready line again, a new child pid, ``/readyz``), each
bounded; not recovering in time is itself a violation (``recovers``).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import trio

from bench.chaos.clients import Client
from bench.chaos.context import Context, Fault
from bench.chaos.disk import Disk
from bench.chaos.node import Managed, child_pid_from_state, is_run_process
from bench.chaos.streams import Subscriber
from bench.chaos.world import Endpoints, World

RECOVER_S = 60.0
# A Codex child whose codexd was killed reads EOF on its stdin and must go by itself.
ORPHAN_GRACE_S = 20.0


@dataclass
class Targets:
    codexd: Managed
    conductors: list[Managed]
    etcd: Managed | None
    disk: Disk
    subscribers: list[Subscriber]
    ep: Endpoints
    world: World
    state_dir: Path
    watchers: trio.Nursery
    http: httpx.AsyncClient


async def _codexd_status(t: Targets) -> dict[str, object] | None:
    try:
        response = await t.http.get(f"{t.ep.codexd}/v1/codexd/status",
                                    headers=t.ep.headers("codexd"), timeout=2)
        child = msgspec.json.decode(response.content)["data"]["snapshot"]["daemon"]["child"]
    except (httpx.HTTPError, msgspec.DecodeError, KeyError, TypeError):
        return None
    return child if isinstance(child, dict) else None


async def running_child(ctx: Context, t: Targets, other_than: int | None = None) -> int | None:
    """The pid of a running Codex child (from codexd's status ``child.pid``), waiting for one
    (bounded; asking another process is the only way to know)."""
    with trio.move_on_after(RECOVER_S):
        while True:
            if t.codexd.pid is not None:
                child = await _codexd_status(t)
                pid = child.get("pid") if child else None
                if (child and child.get("status") == "running" and isinstance(pid, int)
                        and pid != other_than and is_run_process(pid, ctx.run_id, "codex")):
                    return pid
            await trio.sleep(0.1)
    ctx.violation("recovers", f"no running Codex child within {RECOVER_S:.0f}s"
                  + (f" after pid {other_than} was killed" if other_than else ""))
    return None


async def _hold_stopped(ctx: Context, kind: str, target: str, pid: int, held: float) -> None:
    """SIGSTOP ``pid`` for ``held`` seconds; SIGCONT always follows."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    ctx.fault(Fault(kind, ctx.now(), target, pid, held))
    try:
        await trio.sleep(held)  # the fault's length: pacing, not waiting for a condition
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def _watch_orphan(ctx: Context, pid: int, parent: str) -> None:
    """A Codex child whose codexd died must exit by itself within ORPHAN_GRACE_S."""
    ctx.check("no_orphans")
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.move_on_after(ORPHAN_GRACE_S):
            await trio.lowlevel.wait_readable(fd)
            return
    finally:
        os.close(fd)
    if is_run_process(pid, ctx.run_id, "codex"):
        ctx.violation("no_orphans", f"Codex child {pid} outlived its killed {parent} by "
                      f"{ORPHAN_GRACE_S:.0f}s", pid=pid)
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# The faults


async def kill_child(ctx: Context, t: Targets, rng: random.Random) -> None:
    pid = await running_child(ctx, t)
    if pid is None:
        return
    os.kill(pid, signal.SIGKILL)
    ctx.fault(Fault("kill_child", ctx.now(), "codex child", pid))
    await running_child(ctx, t, other_than=pid)


async def stop_child(ctx: Context, t: Targets, rng: random.Random) -> None:
    pid = await running_child(ctx, t)
    if pid is not None:
        await _hold_stopped(ctx, "stop_child", "codex child", pid, rng.uniform(0.1, 1.0))


async def kill_codexd(ctx: Context, t: Targets, rng: random.Random) -> None:
    if not await t.codexd.wait_up():
        return
    pid = t.codexd.pid
    if pid is None:
        return
    child = child_pid_from_state(t.state_dir)
    t.codexd.expect_death(pid)
    os.kill(pid, signal.SIGKILL)
    ctx.fault(Fault("kill_codexd", ctx.now(), "codexd", pid))
    if child is not None and is_run_process(child, ctx.run_id, "codex"):
        t.watchers.start_soon(_watch_orphan, ctx, child, f"codexd {pid}")
    await t.codexd.wait_up()


async def stop_codexd(ctx: Context, t: Targets, rng: random.Random) -> None:
    if await t.codexd.wait_up() and (pid := t.codexd.pid) is not None:
        await _hold_stopped(ctx, "stop_codexd", "codexd", pid, rng.uniform(0.1, 1.0))


async def kill_conductor(ctx: Context, t: Targets, rng: random.Random) -> None:
    daemon = rng.choice(t.conductors)
    if not await daemon.wait_up() or (pid := daemon.pid) is None:
        return
    daemon.expect_death(pid)
    os.kill(pid, signal.SIGKILL)
    ctx.fault(Fault("kill_conductor", ctx.now(), daemon.name, pid))
    await daemon.wait_up()


async def stop_conductor(ctx: Context, t: Targets, rng: random.Random) -> None:
    daemon = rng.choice(t.conductors)
    if await daemon.wait_up() and (pid := daemon.pid) is not None:
        # Sometimes past the lease TTL: the other conductor takes over meanwhile.
        held = rng.uniform(0.1, 1.0 if t.etcd is None else ctx.settings.lease_ttl * 1.3)
        await _hold_stopped(ctx, "stop_conductor", daemon.name, pid, held)


async def kill_etcd(ctx: Context, t: Targets, rng: random.Random) -> None:
    assert t.etcd is not None
    if not await t.etcd.wait_up() or (pid := t.etcd.pid) is None:
        return
    t.etcd.expect_death(pid)
    os.kill(pid, signal.SIGKILL)
    ctx.fault(Fault("kill_etcd", ctx.now(), "etcd", pid))
    await t.etcd.wait_up()


async def stop_etcd(ctx: Context, t: Targets, rng: random.Random) -> None:
    assert t.etcd is not None
    if await t.etcd.wait_up() and (pid := t.etcd.pid) is not None:
        held = rng.uniform(0.2, ctx.settings.lease_ttl * 1.3)
        await _hold_stopped(ctx, "stop_etcd", "etcd", pid, held)


async def cut_request(ctx: Context, t: Targets, rng: random.Random) -> None:
    """A client that goes away mid-request: a keyed POST cancelled after a few ms (then, most
    of the time, retried with the same key), or a raw request cut halfway through its body."""
    client = Client(ctx, t.world, t.ep, t.http, rng, "cutter")
    active = t.world.active()
    if active and rng.random() < 0.7:
        session = rng.choice(active)
        body = {"sessionId": session.session_id,
                "input": f"SLOW 30 6: cut {t.world.next_id()}"}
        path = "/v1/codexd/turn"
    else:
        body = {"cwd": t.ep.session_cwd, "approvalPolicy": "untrusted",
                "sandbox": "workspace-write", "approvals": "clients"}
        path = "/v1/codexd/sessions"
    key = f"chaos-{ctx.run_id[:8]}-cut-{t.world.next_id()}"
    via = client.via()
    if rng.random() < 0.3:
        await _raw_cut(ctx, t, via, path, body, key, rng)
    else:
        after = rng.uniform(0.0, 0.03)
        with trio.move_on_after(after) as scope:
            await client.keyed("cut_request", path, body, key, via=via)
        ctx.fault(Fault("cut_request", ctx.now(), f"{via} POST {path}", None,
                        note=f"cancelled after {after * 1000:.0f} ms"
                        + ("" if scope.cancelled_caught else " (answered first)")))
    if rng.random() < 0.7:
        answer = await client.keyed("cut_retry", path, body, key)
        if answer is not None and answer.status == 202:
            t.world.turns.setdefault(answer.data()["turnId"], (body["sessionId"], ctx.now()))


async def _raw_cut(ctx: Context, t: Targets, via: str, path: str, body: object, key: str,
                   rng: random.Random) -> None:
    base = t.ep.codexd if via == "codexd" else rng.choice(t.ep.conductors)
    if via == "conductor":
        path = path.replace("/v1/codexd/", "/v1/codex/", 1)
    host, port = base.removeprefix("http://").rsplit(":", 1)
    data = msgspec.json.encode(body)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: {t.ep.headers(via)['Authorization']}\r\nIdempotency-Key: {key}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    cut_at = rng.randint(1, len(head) + len(data) - 1)
    try:
        with trio.fail_after(3):
            stream = await trio.open_tcp_stream(host, int(port))
            try:
                await stream.send_all((head + data)[:cut_at])
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack("ii", 1, 0))
            finally:
                await stream.aclose()
    except (OSError, trio.TooSlowError):
        return
    ctx.fault(Fault("cut_request", ctx.now(), f"{via} POST {path}", None,
                    note=f"raw, cut after {cut_at} of {len(head) + len(data)} bytes"))


async def cut_stream(ctx: Context, t: Targets, rng: random.Random) -> None:
    for _ in range(50):
        connected = [s for s in t.subscribers if s.connected]
        if connected:
            sub = rng.choice(connected)
            if sub.cut():
                ctx.fault(Fault("cut_stream", ctx.now(), sub.name, None))
                return
        await trio.sleep(0.1)  # pacing until a subscriber is connected again


async def disk_full(ctx: Context, t: Targets, rng: random.Random) -> None:
    held = rng.uniform(0.3, 2.0)
    ctx.disk_full = True
    ctx.disk_healed = trio.Event()
    try:
        note = await t.disk.fill(t.codexd.pid)
        ctx.fault(Fault("disk_full", ctx.now(), t.disk.mode, t.codexd.pid, held, note))
        await trio.sleep(held)  # the fault's length
    finally:
        with trio.CancelScope(shield=True):
            await t.disk.heal()
            ctx.disk_full = False
            ctx.disk_healed.set()
            ctx.log("FAULT", "disk healed")
    await _wait_ready(ctx, t, "after the disk healed")


async def _wait_ready(ctx: Context, t: Targets, why: str) -> None:
    """codexd's /readyz answers 200 again (bounded)."""
    with trio.move_on_after(RECOVER_S):
        while True:
            if t.codexd.pid is not None:
                with suppress(httpx.HTTPError):
                    response = await t.http.get(f"{t.ep.codexd}/readyz",
                                                headers=t.ep.headers("codexd"), timeout=2)
                    if response.status_code == 200:
                        ctx.check("recovers")
                        return
            await trio.sleep(0.1)  # another process: asking is the only way to know
    ctx.violation("recovers", f"codexd not ready within {RECOVER_S:.0f}s {why}")


@dataclass(frozen=True)
class FaultKind:
    lane: str
    inject: Callable[[Context, Targets, random.Random], Awaitable[None]]
    needs_etcd: bool = False


# The one table of faults. A lane plays its kinds one at a time; lanes run side by side.
FAULTS: dict[str, FaultKind] = {
    "kill_child": FaultKind("child", kill_child),
    "stop_child": FaultKind("child", stop_child),
    "kill_codexd": FaultKind("codexd", kill_codexd),
    "stop_codexd": FaultKind("codexd", stop_codexd),
    "kill_conductor": FaultKind("conductor", kill_conductor),
    "stop_conductor": FaultKind("conductor", stop_conductor),
    "kill_etcd": FaultKind("etcd", kill_etcd, needs_etcd=True),
    "stop_etcd": FaultKind("etcd", stop_etcd, needs_etcd=True),
    "cut_request": FaultKind("cuts", cut_request),
    "cut_stream": FaultKind("cuts", cut_stream),
    "disk_full": FaultKind("disk", disk_full),
}


def kinds(etcd: bool) -> list[str]:
    return [name for name, kind in FAULTS.items() if etcd or not kind.needs_etcd]


async def lane(ctx: Context, t: Targets, name: str, lane_kinds: list[str]) -> None:
    """Play ``lane_kinds`` round-robin (shuffled each round) until the faults stop."""
    rng = ctx.rng(f"lane:{name}")
    spacing = ctx.settings.fault_interval_s / len(lane_kinds)
    due = ctx.now() + rng.uniform(0.2, 1.0) * spacing
    cycle: list[str] = []
    while not ctx.stop_faults.is_set():
        with trio.move_on_after(max(0.0, due - ctx.now())):
            await ctx.stop_faults.wait()  # pacing the schedule; ends early at the stop
        if ctx.stop_faults.is_set():
            return
        if not cycle:
            cycle = list(lane_kinds)
            rng.shuffle(cycle)
        kind = cycle.pop()
        with trio.move_on_after(RECOVER_S * 2):
            await FAULTS[kind].inject(ctx, t, rng)
        due += rng.uniform(0.5, 1.5) * spacing
