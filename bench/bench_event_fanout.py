"""Event fan-out: 10 websocket subscribers on one turn of 5 000 deltas.

A codexd subprocess runs one turn whose scripted answer is streamed as ``--deltas`` small
``response.output_text.delta`` events with no delay. ``--subscribers`` websocket clients (each its
own connection, ``after`` = the last seq before the turn, no session filter) record the arrival
time of every frame; frames are decoded only after the turn, so the clients spend as little CPU
as possible while it runs (they share two cores with codexd and codex).

Reported:

* events/s through the durable log: the turn's events in ``events.jsonl`` (read after codexd's
  graceful stop, which flushes it) divided by the span of their ``at`` stamps, first to last
  delta;
* delivery lag = arrival time − the event's ``at`` (same machine clock; ``at`` has millisecond
  resolution and is truncated, so a lag reads up to 1 ms high), p50/p99 over all deliveries;
* whether every subscriber got every seq exactly once, and how many overflows (close 1013,
  reconnect with ``after=``) happened.

    .venv/bin/python -m bench.bench_event_fanout [--subscribers 10] [--deltas 5000] [--quick]
        [--json]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio_websocket

from bench.common import (
    add_common_args,
    bench_dir,
    cpu_seconds,
    fmt_ms,
    machine_facts,
    parse_iso_ms,
    percentiles,
    print_result,
    running_codexd,
)
from codexd_trio.client import CodexdClient, open_websocket
from codexd_trio.contracts import Event
from codexd_trio.testing import Streamed, open_scripted_model, temporary_codex_home

HANG_GUARD_S = 180.0
TURN_END = b'"type":"app-server.turn.completed"'
DELTA_TYPE = "app-server.item.agentMessage.delta"


@dataclass
class Subscriber:
    """What one websocket subscriber received: (arrival wall time, raw frame) pairs."""

    index: int
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    overflows: int = 0
    connections: int = 0


def _as_bytes(message: str | bytes) -> bytes:
    return message.encode() if isinstance(message, str) else message


async def subscribe(
    url: str,
    after: int,
    sub: Subscriber,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Follow the stream until the turn's ``app-server.turn.completed``; reconnect on overflow."""
    started = False
    last_seq = after
    while True:
        async with open_websocket(f"{url}?after={last_seq}") as ws:
            sub.connections += 1
            await ws.get_message()  # hello
            if not started:
                started = True
                task_status.started()
            try:
                while True:
                    raw = _as_bytes(await ws.get_message())
                    sub.frames.append((time.time(), raw))
                    if b'"type":"overflow"' in raw:
                        continue
                    if TURN_END in raw:
                        return
            except trio_websocket.ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else None
                if code != 1013:
                    raise
                sub.overflows += 1
                seqs = [_seq(raw) for _, raw in sub.frames]
                last_seq = max([s for s in seqs if s is not None], default=last_seq)


def _seq(raw: bytes) -> int | None:
    if b'"seq"' not in raw:
        return None
    return msgspec.json.decode(raw, type=Event).seq


def read_log(path: Path, after: int) -> list[Event]:
    """Events with ``seq > after`` from an ``events.jsonl``."""
    events: list[Event] = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                event = msgspec.json.decode(line, type=Event)
                if event.seq > after:
                    events.append(event)
    return events


async def run(subscribers: int, deltas: int, delay: float, keep: bool) -> dict[str, Any]:
    scenario = Streamed([f"d{i} " for i in range(deltas)], delay=delay)
    subs = [Subscriber(i) for i in range(subscribers)]
    with trio.fail_after(HANG_GUARD_S):
        async with open_scripted_model() as model:
            model.default = scenario
            with (
                bench_dir("fanout", keep=keep) as work,
                temporary_codex_home(model.base_url) as home,
            ):
                async with (
                    running_codexd(work / "codexd", home) as codexd,
                    CodexdClient(codexd.url, timeout=60) as client,
                ):
                    session = await client.create_session(cwd=str(work))
                    status = await client.status()
                    start_seq = int(status["snapshot"]["recentEvents"]["lastSeq"])
                    url = client.events_url()
                    async with trio.open_nursery() as nursery:
                        for sub in subs:
                            await nursery.start(subscribe, url, start_seq, sub)
                        child_pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
                        pids = {"bench": os.getpid(), "codexd": codexd.pid, "codex": child_pid}
                        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                        t_post = time.time()
                        accepted = await client.start_turn(session.sessionId, "stream a lot")
                        turn_id = str(accepted["turnId"])
                    t_all_done = time.time()
                    cpu = {
                        name: _delta(cpu_seconds(pid), cpu_before[name])
                        for name, pid in pids.items()
                    }
                # codexd has stopped gracefully: events.jsonl is flushed and complete.
                log = read_log(work / "codexd" / "logs" / "codexd" / "events.jsonl", start_seq)
    result = analyse(log, subs, turn_id, start_seq, t_post, t_all_done, deltas)
    result["delay_s"] = delay
    result["cpu_s"] = cpu
    return result


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def analyse(
    log: list[Event],
    subs: list[Subscriber],
    turn_id: str,
    start_seq: int,
    t_post: float,
    t_all_done: float,
    deltas: int,
) -> dict[str, Any]:
    end = next(e for e in log if e.type == "app-server.turn.completed" and e.turnId == turn_id)
    expected = [e.seq for e in log if e.seq <= end.seq]
    delta_events = [e for e in log if e.type == DELTA_TYPE and e.turnId == turn_id]
    first, last = delta_events[0], delta_events[-1]
    span_s = parse_iso_ms(last.at) - parse_iso_ms(first.at)
    in_span = [e for e in log if first.seq <= e.seq <= last.seq]
    turn_events = [e for e in log if e.seq <= end.seq]
    turn_span_s = parse_iso_ms(end.at) - parse_iso_ms(turn_events[0].at)

    lags: list[float] = []
    per_sub: list[dict[str, Any]] = []
    complete = True
    for sub in subs:
        seqs: list[int] = []
        sub_lags: list[float] = []
        for arrived, raw in sub.frames:
            if b'"seq"' not in raw:
                continue
            event = msgspec.json.decode(raw, type=Event)
            seqs.append(event.seq)
            sub_lags.append((arrived - parse_iso_ms(event.at)) * 1000)
        unique = sorted(set(seqs))
        duplicates = len(seqs) - len(unique)
        missing = sorted(set(expected) - set(unique))
        ok = duplicates == 0 and not missing and seqs == sorted(seqs)
        complete = complete and ok
        lags.extend(sub_lags)
        per_sub.append(
            {
                "received": len(seqs),
                "duplicates": duplicates,
                "missing": len(missing),
                "inOrder": seqs == sorted(seqs),
                "overflows": sub.overflows,
                "lag_ms": percentiles(sub_lags),
            }
        )
    lag = percentiles(lags)
    return {
        "benchmark": "event_fanout",
        "subscribers": len(subs),
        "deltas_scripted": deltas,
        "delta_events": len(delta_events),
        "turn_events": len(turn_events),
        "log_events_per_s": len(in_span) / span_s if span_s > 0 else float("inf"),
        "delta_span_s": span_s,
        "turn_span_s": turn_span_s,
        "post_to_all_done_s": t_all_done - t_post,
        "deliveries": len(lags),
        "lag_ms": lag,
        "every_seq_once": complete,
        "overflows": sum(s.overflows for s in subs),
        "per_subscriber": per_sub,
        "goal_met": complete and lag["p99"] <= 20.0,
        "start_seq": start_seq,
    }


def summary(result: dict[str, Any]) -> list[str]:
    return [
        f"event fan-out: {result['subscribers']} websocket subscribers, one turn of "
        f"{result['deltas_scripted']} scripted deltas, {result['delay_s'] * 1000:g} ms apart",
        f"  {result['delta_events']} delta events, {result['turn_events']} events in the turn; "
        f"durable log {result['log_events_per_s']:.0f} events/s "
        f"(first to last delta {result['delta_span_s']:.3f} s; whole turn "
        f"{result['turn_span_s']:.3f} s; POST to last subscriber done "
        f"{result['post_to_all_done_s']:.3f} s)",
        f"  delivery lag over {result['deliveries']} deliveries: "
        f"{fmt_ms(result['lag_ms'], 'p50', 'p90', 'p99', 'max')}",
        f"  every subscriber got every seq exactly once, in order: {result['every_seq_once']}; "
        f"overflows: {result['overflows']}",
        "  CPU seconds from POST to the last subscriber done: "
        + ", ".join(
            f"{name} {value:.2f}" for name, value in result["cpu_s"].items() if value is not None
        ),
        f"  goal p99 <= 20 ms: {'met' if result['goal_met'] else 'NOT met'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--deltas", type=int, default=5000)
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds the model pauses between deltas"
    )
    add_common_args(parser)
    args = parser.parse_args()
    subscribers, deltas = (2, 50) if args.quick else (args.subscribers, args.deltas)
    result = trio.run(run, subscribers, deltas, args.delay, args.keep)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
