"""Event fan-out: 10 websocket subscribers on one turn of 5 000 deltas.

A codexd subprocess runs one turn whose scripted answer is streamed as ``--deltas`` small
``response.output_text.delta`` events, ``--delay`` seconds apart (0: a burst). The
``--subscribers`` websocket clients (each its own connection, ``after`` = the last seq before the
turn, no session filter) run in ``--client-procs`` separate processes, so the benchmark client is
not the codexd CPU it measures; they only record the arrival time of every frame while the turn
runs and decode the frames afterwards. ``--batch`` makes them ask for ``?batch=1`` (a frame holds
a JSON array of events) instead of the default one event per frame.

Reported:

* time to last event: for every subscriber, the arrival of the turn's
  ``app-server.turn.completed`` minus the POST, against the turn's own duration (the POST to that
  event's ``at`` stamp, i.e. when codexd emitted it): the ratio of the slowest subscriber;
* the rate Codex produced the deltas at: the turn's events in ``events.jsonl`` (read after
  codexd's graceful stop, which flushes it) between the first and the last delta divided by the
  span of their ``at`` stamps (when codexd emitted them);
* whether the durable log kept up: the same events divided by the span of their first arrival
  at any subscriber. Subscribers only ever see durable events, so this is a lower bound of the
  log's append rate during the burst;
* delivery lag = arrival time − the event's ``at`` (same machine clock; ``at`` has millisecond
  resolution and is truncated, so a lag reads up to 1 ms high), p50/p99 over all deliveries;
* CPU seconds (``/proc/<pid>/stat``) from the POST to the last subscriber done, of codexd, its
  codex child, this process (the scripted model) and the subscriber processes; codexd's CPU per
  delivered event;
* whether every subscriber got every seq exactly once, and how many overflows (close 1013,
  reconnect with ``after=``) happened.

    .venv/bin/python -m bench.bench_event_fanout [--subscribers 10] [--deltas 5000]
        [--delay 0] [--batch] [--client-procs 2] [--profile FILE] [--quick] [--json]

``--profile FILE`` records codexd with ``py-spy`` (if installed) from the POST to the end, as a
speedscope file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
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
from codexd_trio.base.contracts import Event
from codexd_trio.client import CodexdClient, open_websocket
from codexd_trio.testing import Streamed, open_scripted_model, temporary_codex_home

HANG_GUARD_S = 180.0
TURN_END = b'"type":"app-server.turn.completed"'
DELTA_TYPE = "app-server.item.agentMessage.delta"

_event_decoder = msgspec.json.Decoder(Event)
_batch_decoder = msgspec.json.Decoder(list[Event])


@dataclass
class Subscriber:
    """What one websocket subscriber received: (arrival wall time, raw frame) pairs."""

    index: int
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    overflows: int = 0
    connections: int = 0


class ClientReport(msgspec.Struct):
    """What one subscriber process hands back (msgpack file)."""

    frames: list[list[tuple[float, bytes]]]
    overflows: list[int]
    cpu_s: float


def _as_bytes(message: str | bytes) -> bytes:
    return message.encode() if isinstance(message, str) else message


def frame_events(raw: bytes) -> list[Event]:
    """The events of one frame: none (hello, overflow), one, or a ``?batch=1`` array."""
    if raw[:1] == b"[":
        return _batch_decoder.decode(raw)
    if b'"seq"' not in raw:
        return []
    return [_event_decoder.decode(raw)]


# --------------------------------------------------------------------------------------------
# The subscriber process


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
    sep = "&" if "?" in url else "?"
    while True:
        async with open_websocket(f"{url}{sep}after={last_seq}") as ws:
            sub.connections += 1
            await ws.get_message()  # hello
            if not started:
                started = True
                task_status.started()
            try:
                while True:
                    raw = _as_bytes(await ws.get_message())
                    sub.frames.append((time.time(), raw))
                    if TURN_END in raw:
                        return
            except trio_websocket.ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else None
                if code != 1013:
                    raise
                sub.overflows += 1
                seqs = [e.seq for _, raw in sub.frames for e in frame_events(raw)]
                last_seq = max(seqs, default=last_seq)


async def client_main(url: str, after: int, count: int, out: Path) -> None:
    """Open ``count`` subscribers, print ``ready``, follow the turn, write a report to ``out``."""
    subs = [Subscriber(i) for i in range(count)]
    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            for sub in subs:
                await nursery.start(subscribe, url, after, sub)
            cpu0 = time.process_time()
            sys.stdout.write("ready\n")
            sys.stdout.flush()
        cpu = time.process_time() - cpu0
    report = ClientReport([s.frames for s in subs], [s.overflows for s in subs], cpu)
    out.write_bytes(msgspec.msgpack.encode(report))


# --------------------------------------------------------------------------------------------
# The benchmark


async def _start_clients(
    nursery: trio.Nursery, url: str, after: int, counts: list[int], work: Path
) -> list[tuple[trio.Process, Path]]:
    procs: list[tuple[trio.Process, Path]] = []
    for i, count in enumerate(counts):
        out = work / f"client-{i}.msgpack"
        argv = [sys.executable, "-m", "bench.bench_event_fanout", "--client", url,
                "--client-after", str(after), "--client-count", str(count),
                "--client-out", str(out)]
        proc = await nursery.start(
            partial(trio.run_process, argv, stdout=subprocess.PIPE, check=True)
        )
        procs.append((proc, out))
    for proc, _ in procs:
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(64)
            if not chunk:
                raise RuntimeError("subscriber process ended before it was ready")
            line += chunk
    return procs


def _profiler(pid: int, path: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not installed: no profile", file=sys.stderr)
        return None
    return subprocess.Popen(
        [spy, "record", "-p", str(pid), "-r", "200", "-f", "speedscope", "-o", str(path),
         "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def run(subscribers: int, deltas: int, delay: float, keep: bool, *, batch: bool,
              client_procs: int, profile: Path | None) -> dict[str, Any]:
    scenario = Streamed([f"d{i} " for i in range(deltas)], delay=delay)
    procs_n = max(1, min(client_procs, subscribers))
    counts = [subscribers // procs_n + (1 if i < subscribers % procs_n else 0)
              for i in range(procs_n)]
    reports: list[ClientReport] = []
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
                    url = client.events_url() + ("?batch=1" if batch else "")
                    child_pid = (await client.status())["snapshot"]["daemon"]["child"]["pid"]
                    async with trio.open_nursery() as nursery:
                        procs = await _start_clients(nursery, url, start_seq, counts, work)
                        pids = {"codexd": codexd.pid, "codex": child_pid,
                                "bench+model": os.getpid()}
                        spy = _profiler(codexd.pid, profile) if profile else None
                        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                        t_post = time.time()
                        accepted = await client.start_turn(session.sessionId, "stream a lot")
                        turn_id = str(accepted["turnId"])
                        # The nursery waits for every subscriber process to exit.
                    t_all_done = time.time()
                    cpu = {
                        name: _delta(cpu_seconds(pid), cpu_before[name])
                        for name, pid in pids.items()
                    }
                    if spy is not None:
                        spy.send_signal(2)
                        spy.wait(timeout=60)
                    for _, out in procs:
                        reports.append(msgspec.msgpack.decode(out.read_bytes(),
                                                              type=ClientReport))
                # codexd has stopped gracefully: events.jsonl is flushed and complete.
                log = read_log(work / "codexd" / "logs" / "codexd" / "events.jsonl", start_seq)
    subs: list[Subscriber] = []
    for report in reports:
        for frames, overflows in zip(report.frames, report.overflows, strict=True):
            subs.append(Subscriber(len(subs), frames, overflows))
    cpu["clients"] = sum(r.cpu_s for r in reports)
    result = analyse(log, subs, turn_id, start_seq, t_post, t_all_done, deltas)
    result["delay_s"] = delay
    result["batch"] = batch
    result["client_procs"] = procs_n
    result["cpu_s"] = cpu
    codexd_cpu = cpu.get("codexd")
    per_delivery = (
        codexd_cpu / result["deliveries"] * 1e6 if codexd_cpu and result["deliveries"] else None
    )
    result["codexd_cpu_us_per_delivery"] = per_delivery
    ok = result["every_seq_once"] and result["overflows"] == 0
    if delay == 0:
        # Issue 16's burst goals: every subscriber has the last event within 1.5x the turn's
        # own duration, no overflow, <= 20 us of codexd CPU per delivered event.
        result["goal"] = "last event <= 1.5x turn, no overflow, codexd CPU <= 20 us/delivery"
        result["goal_met"] = bool(
            ok and result["last_event_ratio"] <= 1.5
            and per_delivery is not None and per_delivery <= 20.0
        )
    else:
        result["goal"] = "delivery lag p99 <= 20 ms, no overflow"
        result["goal_met"] = bool(ok and result["lag_ms"]["p99"] <= 20.0)
    return result


def read_log(path: Path, after: int) -> list[Event]:
    """Events with ``seq > after`` from an ``events.jsonl``."""
    events: list[Event] = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                event = _event_decoder.decode(line)
                if event.seq > after:
                    events.append(event)
    return events


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
    # The turn's own duration: from the POST until codexd emitted its last event.
    turn_duration_s = parse_iso_ms(end.at) - t_post

    # The earliest arrival of each seq at any subscriber: it was durable by then.
    first_seen: dict[int, float] = {}
    lags: list[float] = []
    per_sub: list[dict[str, Any]] = []
    last_event_s: list[float] = []
    complete = True
    frames_total = 0
    for sub in subs:
        seqs: list[int] = []
        sub_lags: list[float] = []
        got_end: float | None = None
        for arrived, raw in sub.frames:
            events = frame_events(raw)
            frames_total += 1 if events else 0
            for event in events:
                seqs.append(event.seq)
                if arrived < first_seen.get(event.seq, float("inf")):
                    first_seen[event.seq] = arrived
                sub_lags.append((arrived - parse_iso_ms(event.at)) * 1000)
                if event.seq == end.seq:
                    got_end = arrived
        unique = sorted(set(seqs))
        duplicates = len(seqs) - len(unique)
        missing = sorted(set(expected) - set(unique))
        ok = duplicates == 0 and not missing and seqs == sorted(seqs)
        complete = complete and ok
        lags.extend(sub_lags)
        to_last = (got_end - t_post) if got_end is not None else float("inf")
        last_event_s.append(to_last)
        per_sub.append(
            {
                "received": len(seqs),
                "duplicates": duplicates,
                "missing": len(missing),
                "inOrder": seqs == sorted(seqs),
                "overflows": sub.overflows,
                "last_event_s": to_last,
                "lag_ms": percentiles(sub_lags),
            }
        )
    lag = percentiles(lags)
    overflows = sum(s.overflows for s in subs)
    ratio = max(last_event_s) / turn_duration_s if turn_duration_s > 0 else float("inf")
    durable_span = first_seen.get(last.seq, float("inf")) - first_seen.get(first.seq, 0.0)
    durable_rate = len(in_span) / durable_span if durable_span > 0 else float("inf")
    return {
        "benchmark": "event_fanout",
        "subscribers": len(subs),
        "deltas_scripted": deltas,
        "delta_events": len(delta_events),
        "turn_events": len(turn_events),
        "log_events_per_s": len(in_span) / span_s if span_s > 0 else float("inf"),
        "durable_events_per_s_min": durable_rate,
        "delta_span_s": span_s,
        "turn_span_s": turn_span_s,
        "turn_duration_s": turn_duration_s,
        "last_event_s": percentiles(last_event_s),
        "last_event_ratio": ratio,
        "post_to_all_done_s": t_all_done - t_post,
        "deliveries": len(lags),
        "frames": frames_total,
        "lag_ms": lag,
        "every_seq_once": complete,
        "overflows": overflows,
        "per_subscriber": per_sub,
        "goal_met": None,  # set by run(): it depends on pacing and CPU
        "start_seq": start_seq,
    }


def summary(result: dict[str, Any]) -> list[str]:
    cpu = result["cpu_s"]
    per_event = result["codexd_cpu_us_per_delivery"]
    return [
        f"event fan-out: {result['subscribers']} websocket subscribers in "
        f"{result['client_procs']} process(es), framing "
        f"{'?batch=1' if result['batch'] else 'one event per frame'}; one turn of "
        f"{result['deltas_scripted']} scripted deltas, {result['delay_s'] * 1000:g} ms apart",
        f"  {result['delta_events']} delta events, {result['turn_events']} events in the turn; "
        f"produced at {result['log_events_per_s']:.0f} events/s "
        f"(first to last delta {result['delta_span_s']:.3f} s; whole turn "
        f"{result['turn_span_s']:.3f} s); durable log >= "
        f"{result['durable_events_per_s_min']:.0f} events/s (first arrivals)",
        f"  turn's own duration (POST to its last event emitted) {result['turn_duration_s']:.3f} s;"
        f" POST to last event at a subscriber: p50 {result['last_event_s']['p50']:.3f} s, "
        f"max {result['last_event_s']['max']:.3f} s = {result['last_event_ratio']:.2f}x",
        f"  delivery lag over {result['deliveries']} deliveries in {result['frames']} frames: "
        f"{fmt_ms(result['lag_ms'], 'p50', 'p90', 'p99', 'max')}",
        f"  every subscriber got every seq exactly once, in order: {result['every_seq_once']}; "
        f"overflows: {result['overflows']}",
        "  CPU seconds from POST to the last subscriber done: "
        + ", ".join(f"{name} {value:.2f}" for name, value in cpu.items() if value is not None),
        "  codexd CPU per delivered event: "
        + (f"{per_event:.1f} us" if per_event is not None else "n/a"),
        f"  goal ({result['goal']}): {'met' if result['goal_met'] else 'NOT met'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--deltas", type=int, default=5000)
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds the model pauses between deltas"
    )
    parser.add_argument("--batch", action="store_true", help="subscribe with ?batch=1")
    parser.add_argument("--client-procs", type=int, default=2,
                        help="subscriber processes (the subscribers are split among them)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record codexd with py-spy into this speedscope file")
    # Internal: the subscriber process.
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--client-after", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--client-count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--client-out", type=Path, default=None, help=argparse.SUPPRESS)
    add_common_args(parser)
    args = parser.parse_args()
    if args.client is not None:
        assert args.client_out is not None
        trio.run(client_main, args.client, args.client_after, args.client_count, args.client_out)
        return
    subscribers, deltas = (2, 50) if args.quick else (args.subscribers, args.deltas)
    result = trio.run(
        lambda: run(subscribers, deltas, args.delay, args.keep, batch=args.batch,
                    client_procs=args.client_procs, profile=args.profile)
    )
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
