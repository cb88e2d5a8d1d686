"""Idempotency-Key store: the append-only journal versus the whole-file document it replaced.

No daemon and no HTTP: the store itself, as the API calls it for every keyed POST
(``IdempotencyStore.run(key, route, body, handler)`` with a handler that answers a ~250-byte
``202``), on the disk of ``var/bench/``. Every request returns only once its record is durable.

Journal (today): ``--keys`` distinct keys one at a time (each waits for its own append and
``fsync``), then ``--keys`` more with ``--concurrency`` requests in flight (they share appends:
group commit). Then the journal is reopened (start-up cost), and a compaction that drops half
the records runs while requests go on (their latency shows whether it is off the request path).

Whole file (before, reimplemented here as it was): every recorded answer re-encoded all records
into ``idempotency.json`` (base64 bodies), rewrote and fsynced it, and pruning scanned every
record. The cost per request grows with the number of records, so running 10 000 keys through it
takes minutes: it is measured on the first ``--old-keys`` requests from empty, and on the last
``--old-tail`` requests of a ``--keys`` run (the file prefilled, untimed, with
``keys - old_tail`` records). The total for ``--keys`` keys is *extrapolated* from these two
points (cost linear in the number of records) and labelled so; ``--old-keys 10000`` runs all
of them through it instead (about a minute and a half here).

    .venv/bin/python -m bench.bench_idempotency [--keys 10000] [--concurrency 16]
        [--old-keys 1000] [--old-tail 200] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
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
)
from codexd_trio.base.errors import IdempotencyMismatch
from codexd_trio.store.documents import JsonDocument
from codexd_trio.store.idempotency import (
    RETENTION_S,
    Answer,
    IdempotencyBook,
    IdempotencyRecord,
    IdempotencyStore,
)

ROUTE = "POST /v1/codexd/turn"
HANG_GUARD_S = 1800.0


def request_body(i: int) -> bytes:
    return msgspec.json.encode({"sessionId": f"session-{i % 97}", "input": f"request {i}"})


def answer_body() -> bytes:
    """A realistic 202 answer (~250 bytes): what a turn's record stores."""
    return msgspec.json.encode(
        {
            "ok": True,
            "data": {
                "sessionId": f"session-{uuid.uuid4()}",
                "threadId": str(uuid.uuid4()),
                "turnId": str(uuid.uuid4()),
                "status": "accepted",
                "acceptedAt": "2026-11-30T12:00:00.000Z",
            },
        }
    )


async def handler() -> Answer:
    await trio.lowlevel.checkpoint()
    return Answer(202, answer_body())


Runner = Callable[[str, str, bytes, Callable[[], Awaitable[Answer]]], Awaitable[Answer]]


class WholeFileStore:
    """The store as it was before the journal: one JsonDocument rewritten per recorded answer."""

    def __init__(self, doc: JsonDocument[IdempotencyBook]) -> None:
        self._doc = doc
        self._locks: dict[str, trio.Lock] = {}
        self._records = {r.key: r for r in doc.value.records}

    def _prune(self) -> None:
        horizon = time.time() - RETENTION_S
        for key in [k for k, r in self._records.items() if r.createdAt < horizon]:
            del self._records[key]
        while len(self._records) > 20_000:
            del self._records[next(iter(self._records))]

    async def run(
        self, key: str, route: str, body: bytes, handler: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        digest = hashlib.sha256(route.encode() + b"\0" + body).hexdigest()
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                self._prune()
                record = self._records.get(key)
                if record is not None:
                    if record.bodyHash != digest:
                        raise IdempotencyMismatch("mismatch", key=key)
                    return Answer(record.status, record.response, replayed=True)
                response = await handler()
                data = response.body
                self._records[key] = IdempotencyRecord(
                    key=key,
                    route=route,
                    bodyHash=digest,
                    status=response.status,
                    response=data,
                    contentType=response.content_type or "application/json",
                    createdAt=time.time(),
                )
                self._doc.set(IdempotencyBook(records=list(self._records.values())))
                await self._doc.flush()
                return response
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(key, None)


async def timed_sequential(run: Runner, keys: list[str], offset: int = 0) -> list[float]:
    """Milliseconds per request, one request at a time."""
    samples: list[float] = []
    for i, key in enumerate(keys):
        t0 = time.perf_counter()
        await run(key, ROUTE, request_body(offset + i), handler)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def timed_concurrent(run: Runner, keys: list[str], concurrency: int) -> list[float]:
    """Milliseconds per request with ``concurrency`` requests in flight."""
    samples: list[float] = []
    todo = iter(enumerate(keys))

    async def worker() -> None:
        for i, key in todo:
            t0 = time.perf_counter()
            await run(key, ROUTE, request_body(i), handler)
            samples.append((time.perf_counter() - t0) * 1000)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return samples


def make_record(key: str, created_at: float) -> IdempotencyRecord:
    body = request_body(0)
    return IdempotencyRecord(
        key=key,
        route=ROUTE,
        bodyHash=hashlib.sha256(ROUTE.encode() + b"\0" + body).hexdigest(),
        status=202,
        response=answer_body(),
        contentType="application/json",
        createdAt=created_at,
    )


async def journal_part(work: Path, keys: int, concurrency: int) -> dict[str, Any]:
    path = work / "journal" / "idempotency.jsonl"
    clock_offset = 0.0

    def clock() -> float:
        return time.time() + clock_offset

    store = IdempotencyStore.open(path, clock=clock)
    try:
        t0 = time.perf_counter()
        sequential = await timed_sequential(store.run, [f"seq-{i}" for i in range(keys)])
        sequential_total = time.perf_counter() - t0
        boundary = time.time()
        t0 = time.perf_counter()
        concurrent = await timed_concurrent(
            store.run, [f"con-{i}" for i in range(keys)], concurrency
        )
        concurrent_total = time.perf_counter() - t0
        replay_t0 = time.perf_counter()
        replayed = await store.run("seq-0", ROUTE, request_body(0), handler)
        replay_ms = (time.perf_counter() - replay_t0) * 1000
        assert replayed.replayed
        file_bytes = path.stat().st_size
        lines = store.journal.lines
    finally:
        store.journal.close()

    t0 = time.perf_counter()
    store = IdempotencyStore.open(path, clock=clock)
    reopen_ms = (time.perf_counter() - t0) * 1000
    try:
        assert len(store.journal) == 2 * keys
        # Expire the sequential half (recorded before ``boundary``), then compact while
        # requests go on.
        clock_offset = RETENTION_S - (time.time() - boundary)
        store.journal.prune()
        live_before = len(store.journal)
        during: list[float] = []
        compaction_s = 0.0
        async with trio.open_nursery() as nursery:

            async def compact() -> None:
                nonlocal compaction_s
                c0 = time.perf_counter()
                await store.journal.compact()
                compaction_s = time.perf_counter() - c0

            nursery.start_soon(compact)
            while store.journal.compactions == 0:
                during += await timed_sequential(
                    store.run, [f"during-{len(during)}"], offset=len(during)
                )
        compacted_bytes = path.stat().st_size
    finally:
        store.journal.close()
    return {
        "sequential_ms": percentiles(sequential),
        "sequential_total_s": sequential_total,
        "concurrency": concurrency,
        "concurrent_ms": percentiles(concurrent),
        "concurrent_total_s": concurrent_total,
        "replay_ms": replay_ms,
        "file_bytes": file_bytes,
        "lines": lines,
        "reopen_ms": reopen_ms,
        "compaction": {
            "live_records": live_before,
            "seconds": compaction_s,
            "bytes_before": file_bytes,
            "bytes_after": compacted_bytes,
            "requests_during": len(during),
            "during_ms": percentiles(during),
        },
    }


async def whole_file_part(work: Path, keys: int, old_keys: int, old_tail: int) -> dict[str, Any]:
    path = work / "old-first" / "idempotency.json"
    doc = JsonDocument(path, IdempotencyBook, IdempotencyBook(), pretty=False)
    store = WholeFileStore(doc)
    old_keys = min(old_keys, keys)
    t0 = time.perf_counter()
    first = await timed_sequential(store.run, [f"first-{i}" for i in range(old_keys)])
    first_total = time.perf_counter() - t0
    if old_keys == keys:
        # Measured all the way: nothing to extrapolate.
        return {
            "first": {"keys": old_keys, "ms": percentiles(first), "total_s": first_total},
            "last": {"keys": min(old_tail, keys), "ms": percentiles(first[-old_tail:])},
            "file_bytes": path.stat().st_size,
            "measured_total_s": first_total,
        }

    prefill = max(0, keys - old_tail)
    path = work / "old-tail" / "idempotency.json"
    now = time.time()
    book = IdempotencyBook(records=[make_record(f"pre-{i}", now) for i in range(prefill)])
    doc = JsonDocument(path, IdempotencyBook, book, pretty=False)
    doc.write_now()
    store = WholeFileStore(doc)
    t0 = time.perf_counter()
    tail = await timed_sequential(store.run, [f"tail-{i}" for i in range(old_tail)])
    tail_total = time.perf_counter() - t0
    file_bytes = path.stat().st_size

    # Cost linear in the number of records n: fit a + b*n through the two measured means
    # (at n ~ old_keys/2 and n ~ prefill + old_tail/2), then sum over n = 0 .. keys-1.
    n1, c1 = (old_keys - 1) / 2, first_total / old_keys
    n2, c2 = prefill + (old_tail - 1) / 2, tail_total / old_tail
    slope = (c2 - c1) / (n2 - n1) if n2 != n1 else 0.0
    base = c1 - slope * n1
    extrapolated = keys * base + slope * keys * (keys - 1) / 2
    return {
        "first": {"keys": old_keys, "ms": percentiles(first), "total_s": first_total},
        "tail": {
            "records_before": prefill,
            "keys": old_tail,
            "ms": percentiles(tail),
            "total_s": tail_total,
        },
        "file_bytes": file_bytes,
        "extrapolated_total_s": extrapolated,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with bench_dir("idempotency", keep=args.keep) as work, trio.fail_after(HANG_GUARD_S):
        journal = await journal_part(work, args.keys, args.concurrency)
        old = await whole_file_part(work, args.keys, args.old_keys, args.old_tail)
    return {"benchmark": "idempotency", "keys": args.keys, "journal": journal, "whole_file": old}


def summary(result: dict[str, Any]) -> list[str]:
    j, o, keys = result["journal"], result["whole_file"], result["keys"]
    c = j["compaction"]
    if "measured_total_s" in o:
        old = [
            f"whole file, all {keys} keys: {fmt_ms(o['first']['ms'], 'p50', 'p99')}; "
            f"total {o['measured_total_s']:.1f} s (measured)",
            f"whole file, last {o['last']['keys']} keys: {fmt_ms(o['last']['ms'], 'p50', 'p99')}; "
            f"file {o['file_bytes'] / 1e6:.2f} MB",
        ]
    else:
        old = [
            f"whole file, first {o['first']['keys']} keys: "
            f"{fmt_ms(o['first']['ms'], 'p50', 'p99')}; total {o['first']['total_s']:.2f} s",
            f"whole file, keys {o['tail']['records_before'] + 1}..{keys}: "
            f"{fmt_ms(o['tail']['ms'], 'p50', 'p99')}; file {o['file_bytes'] / 1e6:.2f} MB",
            f"whole file, {keys} keys: ~{o['extrapolated_total_s']:.1f} s "
            "(EXTRAPOLATED, not run; --old-keys N>=keys measures it)",
        ]
    return [
        f"idempotency store, {keys} distinct keys, every answer durable before it returns",
        f"journal, one at a time:     {fmt_ms(j['sequential_ms'], 'p50', 'p99', 'max')}; "
        f"total {j['sequential_total_s']:.2f} s",
        f"journal, {j['concurrency']} in flight:      {fmt_ms(j['concurrent_ms'], 'p50', 'p99')}; "
        f"total {j['concurrent_total_s']:.2f} s",
        f"journal file with {j['lines']} records: {j['file_bytes'] / 1e6:.2f} MB; "
        f"reopen {j['reopen_ms']:.0f} ms; a replay {j['replay_ms']:.2f} ms",
        f"compaction to {c['live_records']} live records: {c['seconds'] * 1000:.0f} ms, "
        f"{c['bytes_before'] / 1e6:.2f} -> {c['bytes_after'] / 1e6:.2f} MB; "
        f"{c['requests_during']} requests meanwhile: {fmt_ms(c['during_ms'], 'p50', 'max')}",
        *old,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--old-keys", type=int, default=1000)
    parser.add_argument("--old-tail", type=int, default=200)
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.keys, args.old_keys, args.old_tail = 300, 100, 30
    result = trio.run(run, args)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
