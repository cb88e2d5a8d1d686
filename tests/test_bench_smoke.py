"""Smoke of the benchmark code: every ``bench/bench_*.py`` script runs at its ``--quick`` size
and prints a JSON result with the expected shape (a script added without a smoke run here
fails the test). This checks the benchmarks work, not how fast codexd is: no figure is compared
with a goal here (that is ``docs/benchmarks.md``'s job). The chaos harness (``bench/chaos/``)
has its own quick run, ``tests/test_chaos_quick.py``."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import pytest
import trio

from bench.common import BENCH_ROOT
from codexd_trio.base.codexbin import REPO_ROOT
from tests.etcd_fixture import require_etcd

pytestmark = pytest.mark.real_codex

# Each quick run takes a few seconds; two shared cores and other test runs make it slower.
SCRIPT_GUARD_S = 180


async def _interrupt_then_kill(process: trio.Process) -> None:
    # SIGINT is KeyboardInterrupt inside trio.run, so the script's finally blocks stop the
    # codexd and codex process groups it started; SIGKILL only if it does not exit.
    process.send_signal(signal.SIGINT)
    with trio.move_on_after(30):
        await process.wait()
        return
    process.kill()


async def run_quick(module: str, *extra: str) -> dict[str, Any]:
    with trio.fail_after(SCRIPT_GUARD_S):
        done = await trio.run_process(
            [sys.executable, "-m", module, "--quick", "--json", *extra],
            cwd=str(REPO_ROOT),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            deliver_cancel=_interrupt_then_kill,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    lines = done.stdout.decode().strip().splitlines()
    assert len(lines) >= 2, "expected a human summary before the JSON line"
    result: dict[str, Any] = json.loads(lines[-1])
    assert {"cpus", "cpuModel", "python", "codex"} <= set(result["machine"])
    return result


BENCH_DIR = REPO_ROOT / "bench"
ran: set[str] = set()


async def run_quick_and_note(module: str, *extra: str) -> dict[str, Any]:
    ran.add(module)
    return await run_quick(module, *extra)


async def test_every_benchmark_runs_at_quick_size_and_prints_its_result() -> None:
    # bench_failover and bench_fleet need one; under BAA_REQUIRE=etcd its absence fails
    require_etcd()
    before = set(BENCH_ROOT.glob("*"))
    run_quick = run_quick_and_note

    roundtrip = await run_quick("bench.bench_turn_roundtrip")
    assert roundtrip["benchmark"] == "turn_roundtrip"
    for key in ("direct_ms", "codexd_ms", "direct_ack_ms", "codexd_ack_ms"):
        assert roundtrip[key]["n"] == 3
        assert roundtrip[key]["p50"] > 0
    assert {"ratio_p50", "added_p50_ms", "goal_met"} <= set(roundtrip)
    assert roundtrip["model"] == "the client's process"
    assert roundtrip["codex_pinned_to_cpu"] is None
    # The model in its own process, and (with two CPUs or more) every Codex on a core of its own.
    pinned = len(os.sched_getaffinity(0)) >= 2
    # And the same codexd's turns POSTed on the h11 pool without httpx too (--lean-client).
    apart = await run_quick("bench.bench_turn_roundtrip", "--model-process", "--lean-client",
                            *(["--pin-codex"] if pinned else []))
    assert apart["model"] == "own process"
    assert apart["codexd_ms"]["n"] == apart["direct_ms"]["n"] == apart["lean_ms"]["n"] == 3
    assert apart["lean_paired_added_ms"]["n"] == 3
    if pinned:
        assert apart["codex_pinned_to_cpu"] == [max(os.sched_getaffinity(0))]

    fanout = await run_quick("bench.bench_event_fanout")
    assert fanout["benchmark"] == "event_fanout"
    assert fanout["delta_events"] == fanout["deltas_scripted"] == 50
    # Correctness of the stream, not speed: every subscriber saw every seq exactly once.
    assert fanout["every_seq_once"] is True
    assert fanout["deliveries"] == fanout["subscribers"] * fanout["turn_events"]
    assert {"log_events_per_s", "lag_ms", "overflows", "goal_met"} <= set(fanout)

    idle = await run_quick("bench.bench_idle_and_status")
    assert idle["benchmark"] == "idle_and_status"
    assert idle["idle"]["codexd_rss_mb"] > 0
    assert idle["idle"]["codex_child_rss_mb"] > 0
    assert idle["many"]["sessions"] == 50
    for key in ("healthz_ms", "status_ms", "session_ms"):
        assert idle["many"][key]["n"] == 20

    recovery = await run_quick("bench.bench_child_recovery")
    assert recovery["benchmark"] == "child_recovery"
    for series in ("fresh", "consecutive"):
        kills = recovery[series]["kills"]
        assert len(kills) == 2
        assert all(k["ready_s"] > 0 and k["backoff_s"] is not None for k in kills)

    observe = await run_quick("bench.bench_observe_overhead")
    assert observe["benchmark"] == "observe_overhead"
    for key in ("with_ms", "without_ms"):
        assert observe[key]["n"] == 100
    assert {"p50_overhead_ms", "mean_overhead_ms"} <= set(observe)

    transcript = await run_quick("bench.bench_transcript")
    assert transcript["benchmark"] == "transcript"
    assert transcript["turns"] == 30
    assert transcript["log_bytes"] > 8_000_000
    for key in ("last20_ms", "first20_ms", "item_ms"):
        assert transcript[key]["n"] >= 5
        assert transcript[key]["p50"] > 0
    assert "goal_met" in transcript

    proxy = await run_quick("bench.bench_conductor_proxy")
    assert proxy["benchmark"] == "conductor_proxy"
    for kind in ("get", "post"):
        for key in ("direct", "conductor", "conductor_added"):
            assert proxy[kind][key]["n"] == 20
    assert {"cpu_ms_per_request", "conductor_idle_rss_mib", "goal_met"} <= set(proxy)

    client = await run_quick("bench.bench_client")
    assert client["benchmark"] == "client"
    for kind in ("get", "turn"):
        assert {path: stats["n"] for path, stats in client[kind].items()} == {
            "httpx": 5, "client": 5, "pool": 5}
    assert all(cpu > 0 for cpu in client["client_cpu_ms_per_request"].values())

    syncs = await run_quick("bench.bench_sync_strategies")
    assert syncs["benchmark"] == "sync_strategies"
    assert set(syncs["ms"]) == {"fsync", "fdatasync", "fallocate", "zeroed"}
    assert all(stats["n"] == 20 for stats in syncs["ms"].values())

    failover = await run_quick("bench.bench_failover")
    assert failover["benchmark"] == "failover"
    faults = {s["fault"]: s for s in failover["series"]}
    assert set(faults) == {"kill", "freeze"}
    # The frozen leader was sampled after it woke, and it answered: the two-leader count
    # measured something.
    assert faults["freeze"]["after_wake"]["old_leader_answered"] > 0
    assert faults["freeze"]["two_leader_samples"] == 0

    idem = await run_quick("bench.bench_idempotency")
    assert idem["benchmark"] == "idempotency"
    assert {"sequential_ms", "concurrent_ms", "replay_ms"} <= set(idem["journal"])

    markdown = await run_quick("bench.bench_console_markdown")
    assert markdown["benchmark"] == "console_markdown"
    assert markdown["turns"] == 10
    assert markdown["weight"]["vendored"]["files"] == 2
    assert markdown["markdown_ms_median"] > 0

    frames = await run_quick("bench.bench_ws_frame_cost")
    assert frames["benchmark"] == "ws_frame_cost"
    assert frames["frames"] == 200

    fleet = await run_quick("bench.bench_fleet")
    assert fleet["benchmark"] == "fleet"
    # The cursor walk listed every session of every node once.
    assert fleet["walk_sessions_seen"] == fleet["nodes"] * fleet["sessions_per_node"]
    assert fleet["first_page_ms"]["n"] == fleet["requests"]

    # Every script removed its working directory under var/bench/.
    assert set(BENCH_ROOT.glob("*")) <= before
    scripts = {f"bench.{p.stem}" for p in BENCH_DIR.glob("bench_*.py")}
    assert ran == scripts, f"bench scripts without a quick run here: {sorted(scripts - ran)}"
