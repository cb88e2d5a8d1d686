"""Turn round trip: codexd's HTTP API versus a direct stdio connection to ``codex app-server``.

Same scripted model, same run, interleaved. Path A opens its own ``codex app-server`` child
with :func:`~codexd_trio.protocol.spawn.open_app_server`, starts one thread, and times
``turn/start`` → the ``turn/completed`` notification of that turn. Path B is a codexd
subprocess: one session, then ``POST /v1/codexd/turn`` with a string ``input``, as users send
it (202) → ``app-server.turn.completed`` for
that turn on one long-lived websocket subscription. Each path gets its own Codex home pointing
at the same scripted model. Rounds alternate which path goes first.

    .venv/bin/python -m bench.bench_turn_roundtrip [--turns 50] [--warmup 5] [--streamed]
        [--quick] [--json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import trio

from bench.bench_idle_and_status import make_registry
from bench.common import (
    add_common_args,
    bench_dir,
    codex_binary,
    fmt_ms,
    machine_facts,
    percentiles,
    print_result,
    running_codexd,
)
from codexd_trio.client import CodexdClient
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
    client: CodexdClient, session_id: str, waiter: TurnWaiter
) -> dict[str, float]:
    t0 = time.perf_counter()
    accepted = await client.start_turn(session_id, PROMPT_TEXT)
    t_ack = time.perf_counter()
    ended = await waiter.wait(str(accepted["turnId"]))
    return {"total": (ended - t0) * 1000, "ack": (t_ack - t0) * 1000}


async def run(
    turns: int, warmup: int, scenario: Scenario, registry_sessions: int, keep: bool
) -> dict[str, Any]:
    binary = codex_binary()
    samples: dict[str, dict[str, list[float]]] = {
        "direct": {"total": [], "ack": []},
        "codexd": {"total": [], "ack": []},
    }
    async with open_scripted_model() as model:
        model.default = scenario
        with (
            bench_dir("roundtrip", keep=keep) as work,
            temporary_codex_home(model.base_url) as home_a,
            temporary_codex_home(model.base_url) as home_b,
        ):
            if registry_sessions:
                registry = work / "codexd" / "state" / "codexd" / "session-registry.json"
                make_registry(registry, registry_sessions, str(work))
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
            async with (
                open_app_server(spec, on_notification=on_notification) as direct,
                running_codexd(work / "codexd", home_b) as codexd,
                CodexdClient(codexd.url, timeout=TURN_TIMEOUT_S) as client,
            ):
                thread = await direct.thread_start(cwd=str(work))
                thread_id = str(thread["thread"]["id"])
                session = await client.create_session(cwd=str(work))
                codexd_waiter = TurnWaiter()
                async with (
                    client.events(session_id=session.sessionId) as stream,
                    trio.open_nursery() as nursery,
                ):

                    async def follow() -> None:
                        async for event in stream:
                            if event.type == "app-server.turn.completed" and event.turnId:
                                codexd_waiter.end(event.turnId)

                    nursery.start_soon(follow)
                    for index in range(warmup + turns):
                        order = ("direct", "codexd") if index % 2 == 0 else ("codexd", "direct")
                        for path in order:
                            with trio.fail_after(TURN_TIMEOUT_S):
                                if path == "direct":
                                    got = await direct_turn(direct, thread_id, direct_waiter)
                                else:
                                    got = await codexd_turn(
                                        client, session.sessionId, codexd_waiter
                                    )
                            if index >= warmup:
                                for key, value in got.items():
                                    samples[path][key].append(value)
                    nursery.cancel_scope.cancel(reason="benchmark done")
    direct_total = percentiles(samples["direct"]["total"])
    codexd_total = percentiles(samples["codexd"]["total"])
    ratio = codexd_total["p50"] / direct_total["p50"]
    added = codexd_total["p50"] - direct_total["p50"]
    return {
        "benchmark": "turn_roundtrip",
        "turns": turns,
        "warmup": warmup,
        "scenario": repr(scenario),
        "registry_sessions": registry_sessions,
        "direct_ms": direct_total,
        "codexd_ms": codexd_total,
        "direct_ack_ms": percentiles(samples["direct"]["ack"]),
        "codexd_ack_ms": percentiles(samples["codexd"]["ack"]),
        "ratio_p50": ratio,
        "added_p50_ms": added,
        "goal_met": ratio <= 1.05 or added <= 3.0,
    }


def summary(result: dict[str, Any]) -> list[str]:
    return [
        f"turn round trip, {result['turns']} turns per path after {result['warmup']} warm-up "
        f"({result['scenario']}; {result['registry_sessions']} other sessions in the registry)",
        f"  A direct stdio  : {fmt_ms(result['direct_ms'])}  "
        f"(turn/start answer {fmt_ms(result['direct_ack_ms'], 'p50')})",
        f"  B codexd HTTP+WS: {fmt_ms(result['codexd_ms'])}  "
        f"(202 answer {fmt_ms(result['codexd_ack_ms'], 'p50')})",
        f"  ratio of medians B/A {result['ratio_p50']:.3f}, added {result['added_p50_ms']:.2f} ms "
        f"(goal <= 1.05 or <= 3 ms: {'met' if result['goal_met'] else 'NOT met'})",
    ]


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
    add_common_args(parser)
    args = parser.parse_args()
    turns, warmup = (3, 1) if args.quick else (args.turns, args.warmup)
    scenario: Scenario = Streamed(["o", "k", " ", "fine"]) if args.streamed else Plain("ok")
    result = trio.run(run, turns, warmup, scenario, args.registry_sessions, args.keep)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
