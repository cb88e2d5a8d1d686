"""Transcripts: the last 20 turns of a 200-turn session with ~1 GB of event log on disk.

The state is synthesised rather than played through 200 real turns (a real turn streams a few
kB; reaching 1 GB that way takes hours): the event log is written through the store's own
:class:`~codexd_trio.store.eventlog.EventLog` (``append`` + ``flush``, so it rotates and keeps
its segments as codexd does), with for every turn of the session what a real turn leaves —
``turn.accepted`` with its input, ``item/completed`` for the user message, a command with ~2 kB
of output, a file change with its diff, the agent message, token usage, ``turn/completed`` —
plus ``--deltas-mb`` of agent-message deltas per turn (the bulk of a real log). The records are
then made the way codexd makes them: every event goes through the conversation fold
(:class:`~codexd_trio.core.transcripts.Transcripts`), which writes one record per turn to the
:class:`~codexd_trio.store.conversation.ConversationStore`. A registry snapshot and the store's
checkpoint stand at the log's end, so codexd starts without refolding anything.

Then a real codexd (and its codex child) starts on those files, and the benchmark times
``GET /v1/codexd/sessions/{id}/transcript?order=desc&limit=20`` (the goal: p50 <= 50 ms), the
first page oldest-first, and the item route, over HTTP on loopback.

    .venv/bin/python -m bench.bench_transcript [--turns 200] [--log-mb 1024] [--requests 200]
        [--quick] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import trio

from bench.common import (
    add_common_args,
    bench_dir,
    fmt_ms,
    machine_facts,
    percentiles,
    print_result,
    running_codexd,
)
from codexd_trio.base.contracts import Event, Session, SessionRegistry, now_iso
from codexd_trio.client import CodexdClient
from codexd_trio.core.transcripts import Transcripts
from codexd_trio.store.conversation import ConversationStore
from codexd_trio.store.eventlog import DEFAULT_RETAIN_SEGMENTS, DEFAULT_SEGMENT_BYTES, EventLog
from codexd_trio.testing import open_scripted_model, temporary_codex_home

HANG_GUARD_S = 3600.0
SESSION = "session-bench-transcript"
THREAD = str(uuid.UUID(int=0x01A24EEE_0000_7000_8000_000000000001))
DELTA_BYTES = 2048
FLUSH_EVERY = 4000


class Writer:
    """Numbers events, appends them to the log, folds them as codexd does once durable."""

    def __init__(self, log: EventLog, transcripts: Transcripts) -> None:
        self.log = log
        self.transcripts = transcripts
        self.pending: list[Event] = []

    async def emit(self, type_: str, *, tid: str | None = None, **detail: Any) -> None:
        event = Event(seq=self.log.last_seq + 1, at=now_iso(), type=type_, sessionId=SESSION,
                      threadId=THREAD, turnId=tid, detail=detail)
        self.log.append(event)
        self.pending.append(event)
        if len(self.pending) >= FLUSH_EVERY:
            await self.flush()

    async def flush(self) -> None:
        await self.log.flush()
        self.transcripts.on_durable(self.pending)
        self.pending = []


async def synthesise_turn(w: Writer, n: int, delta_count: int, work: str) -> None:
    turn = f"turn-{n:05d}"
    prompt = f"question {n}: please run the tests and fix what fails"
    await w.emit("turn.accepted", tid=turn, input=[{"type": "text", "text": prompt}])
    await w.emit("app-server.turn.started", tid=turn, turn={"id": turn, "status": "inProgress"})
    await w.emit("app-server.item.completed", tid=turn, item={
        "type": "userMessage", "id": f"u-{n}", "content": [{"type": "text", "text": prompt}]})
    output = "".join(f"test_{i} ... ok\n" for i in range(120))
    await w.emit("app-server.item.completed", tid=turn, item={
        "type": "commandExecution", "id": f"c-{n}", "command": "/bin/bash -lc 'pytest -q'",
        "cwd": work, "status": "completed", "exitCode": 0, "durationMs": 812,
        "aggregatedOutput": output})
    await w.emit("app-server.item.completed", tid=turn, item={
        "type": "fileChange", "id": f"f-{n}", "status": "completed", "changes": [{
            "path": f"{work}/module_{n}.py", "kind": {"type": "update", "move_path": None},
            "diff": "@@ -1,3 +1,3 @@\n import os\n-x = 1\n+x = 2\n print(x)\n"}]})
    delta = "d" * DELTA_BYTES
    for _ in range(delta_count):
        await w.emit("app-server.item.agentMessage.delta", tid=turn, itemId=f"m-{n}",
                     delta=delta)
    await w.emit("app-server.item.completed", tid=turn, item={
        "type": "agentMessage", "id": f"m-{n}", "text": f"answer {n}: fixed module_{n}.py"})
    await w.emit("app-server.thread.tokenUsage.updated", tid=turn, tokenUsage={
        "total": {"totalTokens": 1500 * n}, "last": {"totalTokens": 1500}})
    await w.emit("app-server.turn.completed", tid=turn, turn={"id": turn,
                                                               "status": "completed"})


async def synthesise(work: Path, turns: int, log_mb: int) -> dict[str, Any]:
    logs, state = work / "logs" / "codexd", work / "state" / "codexd"
    state.mkdir(parents=True, exist_ok=True)
    log = EventLog.open(logs / "events.jsonl", segment_bytes=DEFAULT_SEGMENT_BYTES,
                        retain_segments=DEFAULT_RETAIN_SEGMENTS)
    store = ConversationStore.open(logs / "conversation")
    transcripts = Transcripts(store, lambda: log.durable_seq)
    writer = Writer(log, transcripts)
    t0 = time.perf_counter()
    try:
        now = now_iso()
        session = Session(sessionId=SESSION, threadId=THREAD, cwd=str(work), createdAt=now,
                          updatedAt=now, threadPersisted=True, turnCount=turns,
                          title="the benchmark's session")
        await writer.emit("session.created", session=msgspec.to_builtins(session))
        per_turn = max(1, log_mb * 1024 * 1024 // turns // (DELTA_BYTES + 250))
        for n in range(1, turns + 1):
            await synthesise_turn(writer, n, per_turn, str(work))
        await writer.flush()
        await store.flush()
        last_seq = log.last_seq
    finally:
        log.close()
        store.close()
    # The registry snapshot at the log's end, as codexd leaves it: no journal replay at start.
    (state / "session-registry.json").write_bytes(msgspec.json.encode(
        SessionRegistry(lastSeq=last_seq, sessions=[session])))
    log_bytes = sum(p.stat().st_size for p in logs.glob("events*.jsonl"))
    records = sum(p.stat().st_size for p in (logs / "conversation").glob("*"))
    return {"events": last_seq, "log_bytes": log_bytes, "record_bytes": records,
            "segments": len(list(logs.glob("events-*.jsonl"))),
            "synthesis_s": time.perf_counter() - t0}


async def time_gets(client: CodexdClient, path: str, params: dict[str, str],
                    count: int) -> dict[str, float]:
    samples: list[float] = []
    for _ in range(count):
        t0 = time.perf_counter()
        response = await client.request("GET", path, params=params)
        samples.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text}")
    return percentiles(samples)


async def run(turns: int, log_mb: int, requests: int, keep: bool) -> dict[str, Any]:
    with trio.fail_after(HANG_GUARD_S):
        async with open_scripted_model() as model:
            with (
                bench_dir("transcript", keep=keep) as work,
                temporary_codex_home(model.base_url) as home,
            ):
                made = await synthesise(work, turns, log_mb)
                t0 = time.perf_counter()
                async with (
                    running_codexd(work, home) as codexd,
                    CodexdClient(codexd.url, timeout=60) as client,
                ):
                    ready_s = time.perf_counter() - t0
                    path = f"/v1/codexd/sessions/{SESSION}/transcript"
                    last = await client.transcript(SESSION, order="desc", limit=20)
                    if [t.turnId for t in last.turns] != [
                            f"turn-{n:05d}" for n in range(turns, max(0, turns - 20), -1)]:
                        raise RuntimeError("the last 20 turns are not the ones synthesised")
                    desc = await time_gets(client, path, {"order": "desc", "limit": "20"},
                                           requests)
                    asc = await time_gets(client, path, {"limit": "20"}, max(1, requests // 4))
                    item = await time_gets(
                        client, f"{path}/items/c-{turns}", {}, max(1, requests // 4))
                    body = len((await client.request(
                        "GET", path, params={"order": "desc", "limit": "20"})).content)
    return {
        "benchmark": "transcript",
        "turns": turns,
        **made,
        "startup_s": ready_s,
        "requests": requests,
        "last20_body_bytes": body,
        "last20_ms": desc,
        "first20_ms": asc,
        "item_ms": item,
        "goal_met": desc["p50"] <= 50.0,
    }


def summary(result: dict[str, Any]) -> list[str]:
    return [
        f"synthesised {result['turns']} turns, {result['events']} events: "
        f"{result['log_bytes'] / 2**20:.0f} MiB of event log in {result['segments']} sealed "
        f"segments + the active file, {result['record_bytes'] / 2**10:.0f} KiB of records "
        f"({result['synthesis_s']:.0f} s); codexd ready in {result['startup_s']:.2f} s",
        f"  last 20 turns (order=desc&limit=20) x{result['last20_ms']['n']}: "
        f"{fmt_ms(result['last20_ms'])} ({result['last20_body_bytes']} bytes) "
        f"(goal p50 <= 50 ms: {'met' if result['goal_met'] else 'NOT met'})",
        f"  first 20 turns (limit=20)           x{result['first20_ms']['n']}: "
        f"{fmt_ms(result['first20_ms'])}",
        f"  one item whole (items/{{id}})        x{result['item_ms']['n']}: "
        f"{fmt_ms(result['item_ms'])}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--log-mb", type=int, default=1024, help="event log to synthesise")
    parser.add_argument("--requests", type=int, default=200)
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        turns, log_mb, requests = 30, 8, 20
    else:
        turns, log_mb, requests = args.turns, args.log_mb, args.requests
    result = trio.run(run, turns, log_mb, requests, args.keep)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
