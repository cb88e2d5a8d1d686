"""Turn round trip: codexd's HTTP API versus a direct stdio connection to ``codex app-server``.

Same scripted model, same run, interleaved. Path A opens its own ``codex app-server`` child
with :func:`~codexd_trio.protocol.spawn.open_app_server`, starts one thread, and times
``turn/start`` → the ``turn/completed`` notification of that turn. Path B is a codexd
subprocess: one session, then ``POST /v1/codexd/turn`` with a string ``input``, as users send
it (202) → ``app-server.turn.completed`` for
that turn on one long-lived websocket subscription. Each path gets its own Codex home pointing
at the same scripted model. Rounds alternate which path goes first.

``--baseline DIR`` adds a third path, side by side in the same run: a second codexd whose
``codexd_trio`` is imported from ``DIR`` (another version, e.g.
``git archive main codexd_trio codex-version.txt | tar -x -C DIR``), so a change is measured
against what it replaces under the same load (rounds rotate the order of all three).
``--metrics`` adds each codexd's event-log commit histogram (``codexd_event_log_sync_seconds``)
to the result; ``--keyed`` sends every codexd turn with an ``Idempotency-Key``; ``--lean-client``
adds a path to the same codexd POSTing its turns on the client's h11 pool (``UpstreamPool``)
without httpx above it: what httpx's own models add.

Codex spends about as much CPU on a turn as the turn lasts (~45 ms for ``say ok``), so on a
machine with few cores whatever else runs during a turn — codexd, this client — slows Codex
itself. ``--model-process`` moves the scripted model out of this process (where it shares one
Trio loop with the client); ``--pin-codex`` (Linux) puts every Codex on a core of its own and
the rest on the others, which measures what codexd adds without that contention.

    .venv/bin/python -m bench.bench_turn_roundtrip [--turns 50] [--warmup 5] [--streamed]
        [--baseline DIR] [--model-process] [--pin-codex] [--lean-client] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import trio

from bench.bench_idle_and_status import make_registry
from bench.common import (
    add_common_args,
    bench_dir,
    codex_binary,
    codexd_child_pid,
    cpu_seconds,
    fmt_ms,
    machine_facts,
    percentiles,
    print_result,
    running_codexd,
)
from codexd_trio.base.process import follow_ready_line
from codexd_trio.client import CodexdClient, UpstreamPool
from codexd_trio.protocol.appserver import AppServerClient, Notification
from codexd_trio.protocol.child import ChildSpec
from codexd_trio.protocol.spawn import open_app_server
from codexd_trio.testing import (
    Plain,
    Scenario,
    Streamed,
    codex_child_env,
    open_scripted_model,
    temporary_codex_home,
)

# Generous bound for one turn (two shared cores; a turn normally takes ~100 ms).
TURN_TIMEOUT_S = 60.0
# What users send: codexd's path gets the plain string (codexd turns it into a text item, and
# that conversion is part of its cost); the direct path sends the item app-server expects.
PROMPT_TEXT = "say ok"
PROMPT_ITEMS = [{"type": "text", "text": PROMPT_TEXT}]


class TurnWaiter:
    """Remembers when each turn's end was seen; lets a caller wait for one turn id.

    The end may arrive before the caller knows the turn id (the answer to the request that
    started it), so ends are recorded by id and looked up afterwards.
    """

    def __init__(self) -> None:
        self.ended: dict[str, float] = {}
        self._changed = trio.Event()

    def end(self, turn_id: str) -> None:
        self.ended.setdefault(turn_id, time.perf_counter())
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, turn_id: str) -> float:
        while turn_id not in self.ended:
            await self._changed.wait()
        return self.ended[turn_id]


async def direct_turn(
    client: AppServerClient, thread_id: str, waiter: TurnWaiter
) -> dict[str, float]:
    t0 = time.perf_counter()
    result = await client.turn_start(thread_id, PROMPT_ITEMS)
    t_ack = time.perf_counter()
    ended = await waiter.wait(str(result["turn"]["id"]))
    return {"total": (ended - t0) * 1000, "ack": (t_ack - t0) * 1000}


async def codexd_turn(
    client: CodexdClient, session_id: str, waiter: TurnWaiter, *, keyed: bool = False
) -> dict[str, float]:
    t0 = time.perf_counter()
    accepted = await client.start_turn(session_id, PROMPT_TEXT,
                                       idempotency_key=uuid.uuid4().hex if keyed else None)
    t_ack = time.perf_counter()
    ended = await waiter.wait(str(accepted["turnId"]))
    return {"total": (ended - t0) * 1000, "ack": (t_ack - t0) * 1000}


async def lean_turn(pool: UpstreamPool, session_id: str, waiter: TurnWaiter) -> dict[str, float]:
    t0 = time.perf_counter()
    body = msgspec.json.encode({"sessionId": session_id, "input": PROMPT_TEXT})
    answer = await pool.request("POST", "/v1/codexd/turn",
                                headers=[("Content-Type", "application/json")], body=body)
    t_ack = time.perf_counter()
    if answer.status != 202:
        raise RuntimeError(f"POST /v1/codexd/turn answered {answer.status}: {answer.content!r}")
    ended = await waiter.wait(str(msgspec.json.decode(answer.content)["data"]["turnId"]))
    return {"total": (ended - t0) * 1000, "ack": (t_ack - t0) * 1000}


def baseline_env(directory: Path) -> dict[str, str]:
    """The environment of a codexd importing ``codexd_trio`` from ``directory``: first on the
    path, and the working directory (the checkout) off it."""
    return {"PYTHONPATH": str(directory), "PYTHONSAFEPATH": "1"}


def check_baseline(directory: Path) -> str:
    """Where a baseline codexd's ``codexd_trio`` really comes from (fails unless ``directory``)."""
    found = subprocess.run(
        [sys.executable, "-c", "import codexd_trio; print(codexd_trio.__file__)"],
        env={**os.environ, **baseline_env(directory)}, capture_output=True, text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(directory.resolve()):
        raise SystemExit(f"--baseline {directory}: codexd_trio comes from {found}")
    return found


@asynccontextmanager
async def codexd_path(work: Path, name: str, model_url: str, registry_sessions: int,
                      env: dict[str, str] | None
                      ) -> AsyncIterator[tuple[CodexdClient, str, TurnWaiter, int]]:
    """One codexd with its own Codex home, a session and a websocket following its turns."""
    async with AsyncExitStack() as stack:
        home = stack.enter_context(temporary_codex_home(model_url))
        if registry_sessions:
            registry = work / name / "state" / "codexd" / "session-registry.json"
            make_registry(registry, registry_sessions, str(work))
        # The binary named: a baseline's package may not sit next to the vendored Codex.
        codexd = await stack.enter_async_context(running_codexd(
            work / name, home, "--server-command", str(codex_binary()), env=env))
        client = await stack.enter_async_context(
            CodexdClient(codexd.url, timeout=TURN_TIMEOUT_S))
        session = await client.create_session(cwd=str(work))
        waiter = TurnWaiter()
        stream = await stack.enter_async_context(client.events(session_id=session.sessionId))
        nursery = await stack.enter_async_context(trio.open_nursery())

        async def follow() -> None:
            async for event in stream:
                if event.type == "app-server.turn.completed" and event.turnId:
                    waiter.end(event.turnId)

        nursery.start_soon(follow)
        yield client, session.sessionId, waiter, codexd.pid
        nursery.cancel_scope.cancel(reason="benchmark done")


@asynccontextmanager
async def model_in_process(scenario: Scenario) -> AsyncIterator[str]:
    """The scripted model in this (the client's) process, answering ``scenario``: its URL."""
    async with open_scripted_model() as model:
        model.default = scenario
        yield model.base_url


@asynccontextmanager
async def model_process() -> AsyncIterator[str]:
    """The scripted model in a process of its own (``python -m codexd_trio.testing``, which
    echoes the prompt): its URL. In this process it would share one Trio loop with the
    client, whose websocket work on the codexd paths would then delay the model's answers to
    Codex, which is not codexd's cost. Stopped with SIGTERM (then killed) on the way out."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "codexd_trio.testing"], stdout=subprocess.PIPE
    )
    try:
        async with trio.open_nursery() as nursery:
            ready = await nursery.start(follow_ready_line, proc)
            yield str(ready["url"])
            nursery.cancel_scope.cancel(reason="benchmark done")
    finally:
        with trio.CancelScope(shield=True):
            proc.terminate()
            with trio.move_on_after(5):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


async def sync_histogram(client: CodexdClient) -> dict[str, float]:
    """The event log's commit histogram from codexd's ``/metrics``: count, mean and the upper
    bound of the bucket holding the median (seconds)."""
    text = (await client.request("GET", "/metrics")).text
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("codexd_event_log_sync_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
        elif line.startswith("codexd_event_log_sync_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("codexd_event_log_sync_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    median_bucket = next((bound for bound, n in buckets if n >= count / 2), float("nan"))
    return {"count": count, "mean_s": total / count if count else float("nan"),
            "p50_bucket_le_s": median_bucket}


async def run(
    turns: int, warmup: int, scenario: Scenario, registry_sessions: int, keep: bool,
    baseline: Path | None = None, metrics: bool = False, keyed: bool = False,
    separate_model: bool = False, pin_codex: bool = False, lean_client: bool = False,
) -> dict[str, Any]:
    binary = codex_binary()
    paths = (["direct", "codexd"] + (["baseline"] if baseline is not None else [])
             + (["lean"] if lean_client else []))
    samples: dict[str, dict[str, list[float]]] = {p: {"total": [], "ack": []} for p in paths}
    histograms: dict[str, dict[str, float]] = {}
    codex_cpu: set[int] = set()
    if pin_codex:
        # Codex on a core of its own, everything else (this client, the model, codexd) on the
        # others: what codexd adds without taking CPU from Codex (see docs/benchmarks.md).
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin-codex needs at least two CPUs")
        codex_cpu = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))
    model = model_process() if separate_model else model_in_process(scenario)
    async with model as model_url:
        with (
            bench_dir("roundtrip", keep=keep) as work,
            temporary_codex_home(model_url) as home_a,
        ):
            direct_waiter = TurnWaiter()

            def on_notification(note: Notification) -> None:
                if note.method == "turn/completed":
                    direct_waiter.end(str(note.params["turn"]["id"]))

            spec = ChildSpec(
                argv=[str(binary), "app-server"],
                cwd=work,
                env=codex_child_env(home_a, binary),
                stderr_log=work / "direct-stderr.log",
            )
            async with AsyncExitStack() as stack:
                direct = await stack.enter_async_context(
                    open_app_server(spec, on_notification=on_notification))
                thread = await direct.thread_start(cwd=str(work))
                thread_id = str(thread["thread"]["id"])
                daemons = {"codexd": await stack.enter_async_context(
                    codexd_path(work, "codexd", model_url, registry_sessions, None))}
                if baseline is not None:
                    daemons["baseline"] = await stack.enter_async_context(
                        codexd_path(work, "baseline", model_url, registry_sessions,
                                    baseline_env(baseline)))
                pool = UpstreamPool(daemons["codexd"][0].base_url, timeout=TURN_TIMEOUT_S)
                stack.push_async_callback(pool.aclose)
                if codex_cpu:
                    assert direct.pid is not None
                    for pid in [direct.pid] + [await codexd_child_pid(d[0])
                                               for d in daemons.values()]:
                        pin(pid, codex_cpu)
                cpu_before: dict[str, float | None] = {}
                for index in range(warmup + turns):
                    if index == warmup:
                        cpu_before = {n: cpu_seconds(d[3]) for n, d in daemons.items()}
                    shift = index % len(paths)
                    for path in paths[shift:] + paths[:shift]:
                        with trio.fail_after(TURN_TIMEOUT_S):
                            if path == "direct":
                                got = await direct_turn(direct, thread_id, direct_waiter)
                            elif path == "lean":  # the same codexd and session as "codexd"
                                got = await lean_turn(pool, *daemons["codexd"][1:3])
                            else:
                                got = await codexd_turn(*daemons[path][:3], keyed=keyed)
                        if index >= warmup:
                            for key, value in got.items():
                                samples[path][key].append(value)
                cpu_ms = {n: (1000 * (after - before) / turns
                              / (2 if lean_client and n == "codexd" else 1)
                              if (after := cpu_seconds(d[3])) is not None
                              and (before := cpu_before.get(n)) is not None else None)
                          for n, d in daemons.items()}
                if metrics:
                    for name, (client, _, _, _) in daemons.items():
                        histograms[name] = await sync_histogram(client)
    direct_total = percentiles(samples["direct"]["total"])
    codexd_total = percentiles(samples["codexd"]["total"])
    ratio = codexd_total["p50"] / direct_total["p50"]
    added = codexd_total["p50"] - direct_total["p50"]
    result: dict[str, Any] = {
        "benchmark": "turn_roundtrip",
        "turns": turns,
        "warmup": warmup,
        "scenario": "Echo (model process)" if separate_model else repr(scenario),
        "model": "own process" if separate_model else "the client's process",
        "codex_pinned_to_cpu": sorted(codex_cpu) or None,
        "registry_sessions": registry_sessions,
        "keyed": keyed,
        "direct_ms": direct_total,
        "codexd_ms": codexd_total,
        "direct_ack_ms": percentiles(samples["direct"]["ack"]),
        "codexd_ack_ms": percentiles(samples["codexd"]["ack"]),
        "ratio_p50": ratio,
        "added_p50_ms": added,
        "goal_met": ratio <= 1.05 or added <= 3.0,
        # codexd's own CPU per measured turn (the websocket follower and the turn itself).
        "cpu_ms_per_turn": cpu_ms,
    }
    # Paired: each round measured every path back to back, so its differences share that
    # moment's load; on a shared machine their median is steadier than a difference of medians.
    for name in paths[1:]:
        result[f"{name}_paired_added_ms"] = percentiles(
            [c - d for c, d in zip(samples[name]["total"], samples["direct"]["total"],
                                   strict=True)])
    if baseline is not None:
        base_total = percentiles(samples["baseline"]["total"])
        result["baseline"] = str(baseline)
        result["baseline_ms"] = base_total
        result["baseline_ack_ms"] = percentiles(samples["baseline"]["ack"])
        result["baseline_ratio_p50"] = base_total["p50"] / direct_total["p50"]
        result["baseline_added_p50_ms"] = base_total["p50"] - direct_total["p50"]
    if lean_client:
        result["lean_ms"] = percentiles(samples["lean"]["total"])
        result["lean_ack_ms"] = percentiles(samples["lean"]["ack"])
    if histograms:
        result["event_log_commits"] = histograms
    return result


def summary(result: dict[str, Any]) -> list[str]:
    lines = [
        f"turn round trip, {result['turns']} turns per path after {result['warmup']} warm-up "
        f"({result['scenario']}; {result['registry_sessions']} other sessions in the registry"
        + (f"; Codex pinned to CPU {result['codex_pinned_to_cpu']}"
           if result["codex_pinned_to_cpu"] else "") + ")",
        f"  A direct stdio  : {fmt_ms(result['direct_ms'])}  "
        f"(turn/start answer {fmt_ms(result['direct_ack_ms'], 'p50')})",
        f"  B codexd HTTP+WS: {fmt_ms(result['codexd_ms'])}  "
        f"(202 answer {fmt_ms(result['codexd_ack_ms'], 'p50')})",
        f"  ratio of medians B/A {result['ratio_p50']:.3f}, added {result['added_p50_ms']:.2f} ms "
        f"(goal <= 1.05 or <= 3 ms: {'met' if result['goal_met'] else 'NOT met'})",
    ]
    if "baseline_ms" in result:
        lines += [
            f"  C baseline codexd ({result['baseline']}): {fmt_ms(result['baseline_ms'])}  "
            f"(202 answer {fmt_ms(result['baseline_ack_ms'], 'p50')})",
            f"  ratio of medians C/A {result['baseline_ratio_p50']:.3f}, added "
            f"{result['baseline_added_p50_ms']:.2f} ms",
        ]
    if "lean_ms" in result:
        lines.append(f"  D codexd, h11 pool without httpx: {fmt_ms(result['lean_ms'])}  "
                     f"(202 answer {fmt_ms(result['lean_ack_ms'], 'p50')})")
    for name in ("codexd", "baseline", "lean"):
        if f"{name}_paired_added_ms" in result:
            paired = result[f"{name}_paired_added_ms"]
            lines.append(f"  paired, {name} minus direct in the same round: p50 "
                         f"{paired['p50']:.2f}, p90 {paired['p90']:.2f} ms")
    lines.append("  codexd CPU per turn (ms): "
                 + ", ".join(f"{n} {v:.2f}" for n, v in result["cpu_ms_per_turn"].items()
                             if v is not None))
    for name, h in result.get("event_log_commits", {}).items():
        lines.append(f"  {name} event-log commits: {h['count']:.0f}, mean "
                     f"{h['mean_s'] * 1000:.2f} ms, median <= {h['p50_bucket_le_s'] * 1000:g} ms")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50, help="measured turns per path")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured turns per path first")
    parser.add_argument(
        "--streamed", action="store_true", help="a short Streamed answer instead of Plain('ok')"
    )
    parser.add_argument(
        "--registry-sessions",
        type=int,
        default=0,
        help="pre-write this many (idle) sessions into codexd's registry first",
    )
    parser.add_argument(
        "--baseline", type=Path, default=None,
        help="a directory holding another codexd_trio: a third path, side by side",
    )
    parser.add_argument("--metrics", action="store_true",
                        help="add each codexd's event-log commit histogram")
    parser.add_argument("--keyed", action="store_true",
                        help="every codexd turn carries an Idempotency-Key (its journal's "
                             "append is then part of the 202)")
    parser.add_argument("--model-process", action="store_true",
                        help="run the scripted model in its own process (it echoes the prompt) "
                             "instead of in the client's")
    parser.add_argument("--pin-codex", action="store_true",
                        help="Linux: every Codex app-server on the last CPU, the rest on the "
                             "others (what codexd adds when it does not share Codex's core)")
    parser.add_argument("--lean-client", action="store_true",
                        help="a fourth path: codexd's turns POSTed on the client's h11 pool "
                             "without httpx above it (what httpx's own models add)")
    add_common_args(parser)
    args = parser.parse_args()
    turns, warmup = (3, 1) if args.quick else (args.turns, args.warmup)
    scenario: Scenario = Streamed(["o", "k", " ", "fine"]) if args.streamed else Plain("ok")
    if args.baseline is not None:
        check_baseline(args.baseline)
    result = trio.run(run, turns, warmup, scenario, args.registry_sessions, args.keep,
                      args.baseline, args.metrics, args.keyed, args.model_process,
                      args.pin_codex, args.lean_client)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
