"""What one durable append of an event costs, by the way the log file is prepared and synced.

No daemon: a loop that appends one ~300-byte line (a ``turn.accepted``) and makes it durable,
as the event log's commit does, on the disk of ``var/bench/`` (or ``BAA_BENCH_ROOT``). The
strategies, interleaved (every round runs each once, in a rotating order):

* ``fsync``: the file grows at every append; ``os.fsync`` (the event log before issue 27);
* ``fdatasync``: the same growing file, ``os.fdatasync`` (the size still changes: on ext4 the
  inode must be journaled anyway);
* ``fallocate``: the segment reserved with ``os.posix_fallocate`` (on ext4: *unwritten*
  extents; the first write into each block converts it, which is metadata), ``os.fdatasync``;
* ``zeroed``: the segment written with zeros once and synced (the blocks are allocated and
  written; PostgreSQL's ``wal_init_zero``), then appends overwrite zeros; ``os.fdatasync``.

With ``--neighbour`` a second process meanwhile does what the Codex child does at the start of
a turn, on the same filesystem: append a few KiB to a file and ``fsync`` it, and commit a small
SQLite transaction, over and over. On ext4 a sync that needs a journal commit waits for the
neighbour's commits, and the other way round; a pure data sync does not.

    .venv/bin/python -m bench.bench_sync_strategies [--appends 300] [--neighbour] [--json]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.common import add_common_args, bench_dir, machine_facts, percentiles, print_result

# fdatasync and posix_fallocate are missing on macOS: those rows are left out there.
STRATEGIES = tuple(name for name, available in (
    ("fsync", True), ("fdatasync", hasattr(os, "fdatasync")),
    ("fallocate", hasattr(os, "posix_fallocate")), ("zeroed", hasattr(os, "fdatasync")),
) if available)
LINE = (b'{"seq":1,"at":"2026-12-01T00:00:00.000Z","type":"turn.accepted","sessionId":"session-'
        + b"x" * 36 + b'","turnId":"' + b"y" * 36 + b'","detail":{"input":"say ok"}}' + b" " * 120
        + b"\n")
ZERO_CHUNK = 1 << 20


class Target:
    """One file prepared the strategy's way, appended to at ``end``."""

    def __init__(self, path: Path, strategy: str, size: int) -> None:
        self.strategy = strategy
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.end = 0
        if strategy == "fallocate":
            os.posix_fallocate(self.fd, 0, size)
            os.fsync(self.fd)
        elif strategy == "zeroed":
            zeros = bytes(ZERO_CHUNK)
            for offset in range(0, size, ZERO_CHUNK):
                os.pwrite(self.fd, zeros[: min(ZERO_CHUNK, size - offset)], offset)
            os.fsync(self.fd)

    def append(self) -> float:
        started = time.perf_counter()
        os.pwrite(self.fd, LINE, self.end)
        if self.strategy == "fsync":
            os.fsync(self.fd)
        else:
            os.fdatasync(self.fd)
        self.end += len(LINE)
        return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        os.close(self.fd)


def neighbour(directory: str, stop: Any) -> None:
    """What Codex does on the same filesystem while a turn starts (a rollout and SQLite)."""
    rollout = os.open(os.path.join(directory, "rollout.jsonl"), os.O_WRONLY | os.O_CREAT
                      | os.O_APPEND, 0o644)
    db = sqlite3.connect(os.path.join(directory, "state.sqlite"))
    db.execute("pragma journal_mode=wal")
    db.execute("create table if not exists t (k integer primary key, v text)")
    n = 0
    while not stop.is_set():
        os.write(rollout, b"r" * 3000 + b"\n")
        os.fsync(rollout)
        with db:
            db.execute("insert into t (v) values (?)", ("v" * 200,))
        n += 1
        time.sleep(0.002)
    os.close(rollout)
    db.close()


def run(appends: int, segment_mb: int, with_neighbour: bool, keep: bool) -> dict[str, Any]:
    times: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    with bench_dir("sync", keep=keep) as work:
        targets = {name: Target(work / f"{name}.jsonl", name, segment_mb << 20)
                   for name in STRATEGIES}
        stop = multiprocessing.Event()
        helper = None
        if with_neighbour:
            helper = multiprocessing.Process(target=neighbour, args=(str(work), stop))
            helper.start()
        try:
            for i in range(appends):
                order = STRATEGIES[i % len(STRATEGIES):] + STRATEGIES[: i % len(STRATEGIES)]
                for name in order:
                    times[name].append(targets[name].append())
                    time.sleep(0.001)  # a turn or so apart, not back to back
        finally:
            stop.set()
            if helper is not None:
                helper.join(30)
            for target in targets.values():
                target.close()
    return {
        "benchmark": "sync_strategies",
        "appends": appends,
        "neighbour": with_neighbour,
        "ms": {name: percentiles(values) for name, values in times.items()},
    }


def summary(result: dict[str, Any]) -> list[str]:
    lines = [f"one ~{len(LINE)}-byte durable append, {result['appends']} per strategy, "
             f"interleaved{' (neighbour syncing meanwhile)' if result['neighbour'] else ''}"]
    for name, stats in result["ms"].items():
        lines.append(f"  {name:10s} p50 {stats['p50']:.3f}  p90 {stats['p90']:.3f}  "
                     f"p99 {stats['p99']:.3f}  max {stats['max']:.3f} ms")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--segment-mb", type=int, default=4,
                        help="preallocated size (enough for the appends)")
    parser.add_argument("--neighbour", action="store_true",
                        help="a second process syncing a rollout and SQLite meanwhile")
    add_common_args(parser)
    args = parser.parse_args()
    appends = 20 if args.quick else args.appends
    result = run(appends, args.segment_mb, args.neighbour, args.keep)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
