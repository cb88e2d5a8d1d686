"""Child recovery: time from SIGKILL of the codex child's process group to ``/readyz`` 200 again.

The child's pid comes from ``GET /v1/codexd/status`` (``snapshot.daemon.child.pid``; the child
leads its own process group). After ``os.killpg(pid, SIGKILL)`` the benchmark polls ``/readyz``
back to back until it answers 200 naming a *different* child pid (so a 200 that codexd gave
before it noticed the death does not count). It also notes when ``/readyz`` first turned 503
(detection) and the restart delay codexd chose (``child.restarting`` event, ``detail.delayS``).

Two series, both reported:

* ``consecutive``: ``--kills`` kills of one codexd, each as soon as it is ready again. codexd's
  restart backoff (none for the first failure, then 0.5 s × 0.8–1.2 jitter, doubling per
  consecutive failure up to 30 s, reset only after 60 s healthy) applies, so later kills wait
  longer — this series measures that.
* ``fresh``: ``--kills`` fresh codexd processes, one kill each: the single-crash figure.

    .venv/bin/python -m bench.bench_child_recovery [--kills 10] [--poll-interval 0]
        [--skip-consecutive] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from bench.common import (
    add_common_args,
    bench_dir,
    codexd_child_pid,
    machine_facts,
    percentiles,
    print_result,
    running_codexd,
)
from codexd_trio.client import CodexdClient
from codexd_trio.testing import open_scripted_model, temporary_codex_home

# One recovery can legitimately take the maximum backoff (30 s × 1.2) plus a child start.
RECOVERY_GUARD_S = 90.0


class _Envelope(msgspec.Struct):
    data: Any = None


async def kill_and_time(client: CodexdClient, poll_interval: float) -> dict[str, Any]:
    """Kill the child's group once; return the recovery figures (seconds) for that kill."""
    with trio.fail_after(RECOVERY_GUARD_S):
        await client.readyz()  # ready before the kill (raises if not)
        old_pid = await codexd_child_pid(client)
        last_seq = int((await client.status())["snapshot"]["recentEvents"]["lastSeq"])
        t0 = time.perf_counter()
        os.killpg(old_pid, signal.SIGKILL)
        first_503: float | None = None
        polls = 0
        while True:
            response = await client.request("GET", "/readyz")
            polls += 1
            if response.status_code == 200:
                data = msgspec.json.decode(response.content, type=_Envelope).data
                if data["child"]["pid"] != old_pid:
                    break
            elif first_503 is None:
                first_503 = time.perf_counter()
            if poll_interval > 0:
                await trio.sleep(poll_interval)
        t_ready = time.perf_counter()
        events = await client.events_page(after=last_seq, limit=1000)
    delays = [float(e.detail["delayS"]) for e in events if e.type == "child.restarting"]
    return {
        "ready_s": t_ready - t0,
        "detected_s": (first_503 - t0) if first_503 is not None else None,
        "backoff_s": delays[0] if delays else None,
        "polls": polls,
    }


async def consecutive(home: Path, work: Path, kills: int, poll: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with running_codexd(work, home) as codexd, CodexdClient(codexd.url) as client:
        for _ in range(kills):
            out.append(await kill_and_time(client, poll))
    return out


async def fresh(home: Path, work: Path, kills: int, poll: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index in range(kills):
        async with (
            running_codexd(work / f"fresh-{index}", home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            out.append(await kill_and_time(client, poll))
    return out


def _series(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ready = [s["ready_s"] for s in samples]
    overhead = [s["ready_s"] - s["backoff_s"] for s in samples if s["backoff_s"] is not None]
    detected = [s["detected_s"] for s in samples if s["detected_s"] is not None]
    return {
        "kills": samples,
        "ready_s": percentiles(ready),
        "ready_minus_backoff_s": percentiles(overhead),
        "detected_s": percentiles(detected),
    }


async def run(kills: int, poll: float, skip_consecutive: bool, keep: bool) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "child_recovery",
        "kills": kills,
        "poll_interval_s": poll,
    }
    async with open_scripted_model() as model:
        with (
            bench_dir("recovery", keep=keep) as work,
            temporary_codex_home(model.base_url) as home,
        ):
            result["fresh"] = _series(await fresh(home, work, kills, poll))
            if not skip_consecutive:
                result["consecutive"] = _series(
                    await consecutive(home, work / "consecutive", kills, poll)
                )
    # Issue 10: the first crash restarts at once, so a single crash costs a spawn + handshake.
    result["goal_met"] = result["fresh"]["ready_s"]["p50"] <= 0.3
    return result


def summary(result: dict[str, Any]) -> list[str]:
    lines = ["child recovery: SIGKILL of the codex child's group -> /readyz 200 with a new pid"]
    for name in ("fresh", "consecutive"):
        series = result.get(name)
        if series is None:
            continue
        ready = series["ready_s"]
        label = (
            f"one kill per fresh codexd (x{result['kills']})"
            if name == "fresh"
            else f"{result['kills']} kills in a row, one codexd"
        )
        lines.append(
            f"  {label}: median {ready['p50']:.3f} s (min {ready['min']:.3f}, "
            f"max {ready['max']:.3f}); minus the chosen backoff: median "
            f"{series['ready_minus_backoff_s']['p50']:.3f} s; 503 seen after median "
            f"{series['detected_s']['p50'] * 1000:.1f} ms"
        )
        lines.append(
            "    per kill (s): "
            + ", ".join(
                f"{k['ready_s']:.2f}"
                + (f" (backoff {k['backoff_s']:.2f})" if k["backoff_s"] is not None else "")
                for k in series["kills"]
            )
        )
    lines.append(
        f"  goal: single crash ready within 0.3 s (median, fresh): "
        f"{'met' if result['goal_met'] else 'NOT met'}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument(
        "--poll-interval", type=float, default=0.0, help="seconds between /readyz polls"
    )
    parser.add_argument("--skip-consecutive", action="store_true")
    add_common_args(parser)
    args = parser.parse_args()
    kills = 2 if args.quick else args.kills
    result = trio.run(run, kills, args.poll_interval, args.skip_consecutive, args.keep)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
