"""Sampled over time: RSS and open fds of every process of the node, the events seen, and
(with etcd) both conductors' roles at the same moment."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from bench.chaos.context import Context
from bench.chaos.node import (
    Managed,
    child_pid_from_state,
    is_run_process,
    rss_and_fds,
    start_ticks,
)
from bench.chaos.world import Endpoints

SAMPLE_EVERY_S = 1.0
LEADER_EVERY_S = 0.2


async def resources(ctx: Context, daemons: list[Managed], state_dir: Path) -> None:
    """Every second until cancelled: RSS and fds of each daemon (and the Codex child)."""
    while True:
        t = ctx.now()
        for daemon in daemons:
            pid = daemon.pid
            if pid is not None and (found := rss_and_fds(pid)) is not None:
                ctx.samples[daemon.name].append((t, pid, *found))
        child = child_pid_from_state(state_dir)
        if (child is not None and is_run_process(child, ctx.run_id, "codex")
                and (found := rss_and_fds(child)) is not None):
            ctx.samples["codex-child"].append((t, child, *found))
            ctx.child_groups.setdefault(child, start_ticks(child))
        ctx.seq_series.append((t, ctx.max_seen_seq))
        await trio.sleep(SAMPLE_EVERY_S)


async def leaders(ctx: Context, ep: Endpoints) -> None:
    """Ask both conductors ``/rolez`` at once, five times a second: never two leaders.

    An answer is a claim about one instant inside its request's round trip. A conductor says
    ``leader`` only while its lease has at least ``margin`` left at etcd (docs/conductor.md),
    so two ``leader`` answers whose round trips all fit inside ``margin`` are two leaders at
    once; wider ones (a frozen conductor answering late) cannot prove it and are counted apart.
    """
    margin = max(0.2, ctx.settings.lease_ttl / 10)
    async with httpx.AsyncClient(timeout=1.0) as http:
        while True:
            answers: dict[str, tuple[str, float, float]] = {}

            async def ask(base: str, answers: dict[str, tuple[str, float, float]]) -> None:
                sent = trio.current_time()
                try:
                    role = (await http.get(base + "/rolez")).text.strip()
                except httpx.HTTPError:
                    role = "down"
                answers[base] = (role, sent, trio.current_time())

            async with trio.open_nursery() as nursery:
                for base in ep.conductors:
                    nursery.start_soon(ask, base, answers)
            leading = [(base, s, r) for base, (role, s, r) in answers.items() if role == "leader"]
            ctx.leader_samples += 1
            ctx.check("one_leader")
            if len(leading) == 1:
                ep.leader = leading[0][0]
            elif len(leading) > 1:
                spread = max(r for _, _, r in leading) - min(s for _, s, _ in leading)
                if spread < margin:
                    ctx.violation("one_leader",
                                  f"{len(leading)} conductors answered leader within "
                                  f"{spread * 1000:.0f} ms", answers=[b for b, _, _ in leading])
                else:
                    ctx.leader_inconclusive += 1
            await trio.sleep(LEADER_EVERY_S)
