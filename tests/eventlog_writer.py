"""A process that only appends to an event log, for the SIGKILL tests of
``tests/test_eventlog_crash.py``: it opens the log in ``DIR`` (continuing its seq), appends
bursts of events of varying size with the log's own group-commit writer, and after each burst
is durable prints the last durable seq on stdout. It runs until it is killed.

    python -m tests.eventlog_writer DIR SEGMENT_BYTES
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from codexd_trio.base.contracts import Event
from codexd_trio.store.eventlog import EventLog


def event_for(seq: int) -> Event:
    """The event with ``seq``: its content depends on ``seq`` only, so a reader can tell a
    stale or torn event from the one the writer made durable. Sizes vary from ~150 bytes to
    ~3 KiB, so commits straddle pages and segment boundaries at many places."""
    return Event(seq=seq, at="2026-12-01T00:00:00.000Z", type="test.crash",
                 sessionId=f"s-{seq % 5}", message=f"event {seq}",
                 detail={"pad": "x" * ((seq * 37) % 3000)})


async def main(directory: Path, segment_bytes: int) -> None:
    log = EventLog.open(directory / "events.jsonl", segment_bytes=segment_bytes,
                        retain_segments=10_000)
    seq = log.last_seq
    out = sys.stdout.buffer
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        burst = 0
        while True:
            burst += 1
            for _ in range(1 + burst % 7):
                seq += 1
                log.append(event_for(seq))
            await log.wait_durable(seq)
            out.write(b"%d\n" % seq)
            out.flush()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]))
