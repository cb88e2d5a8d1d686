"""SIGKILL of a process writing the event log, at many points (issue 27): inside a commit's
write, between its write and its sync, during a rotation (cut, rename, new reserved segment).
After each kill the log opens with every event the writer reported durable, byte for byte, no
seq reused or skipped, and nothing but zeros after the data; the next writer continues from
there. No Codex needed: the writer is the event log alone (``tests/eventlog_writer.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.store.eventlog import EventLog
from tests.eventlog_writer import event_for

# Small segments: the writer seals one every ~15 events, so kills land in rotations too.
SEGMENT = 16 * 1024
# Kill once the writer has reported this many more durable commits (the kill itself lands
# wherever the writer is by then: the report and the kill race on purpose).
KILL_AFTER = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 1, 89, 0, 144, 2)


async def _run_writer_until(directory: Path, reports: int) -> int:
    """Start a writer, let it report ``reports`` durable commits, SIGKILL it; the last seq it
    reported durable (0 if none)."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.eventlog_writer", str(directory), str(SEGMENT)],
        stdout=subprocess.PIPE, cwd=str(REPO_ROOT),
    )
    assert process.stdout is not None
    durable = 0
    try:
        buffer = b""
        seen = 0
        while seen < reports:
            chunk = await process.stdout.receive_some(4096)
            assert chunk, "the writer exited by itself"
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                durable = int(line)
                seen += 1
    finally:
        process.kill()
        await process.wait()
        await process.stdout.aclose()
    return durable


async def _check(directory: Path, reported: int, previous_last: int) -> int:
    """Open the crashed log and check it; returns its last seq."""
    path = directory / "events.jsonl"
    log = EventLog.open(path, segment_bytes=SEGMENT, retain_segments=10_000)
    try:
        last = log.last_seq
        # Everything reported durable is there, and numbering never went backwards.
        assert last >= max(reported, previous_last)
        events = await log.read_after(0)
        assert [e.seq for e in events] == list(range(1, last + 1))
        assert all(event == event_for(event.seq) for event in events)
        # Opening cut the active file back to its data: only zeros after it.
        raw = path.read_bytes()
        data = raw.partition(b"\0")[0]
        assert raw[len(data):].strip(b"\0") == b""
        assert data == b"" or data.endswith(b"\n")
        # Sealed segments hold whole lines only.
        for sealed in directory.glob("events-*.jsonl"):
            assert b"\0" not in sealed.read_bytes()
            assert sealed.read_bytes().endswith(b"\n")
    finally:
        log.close()
    return last


async def test_sigkill_at_many_points_keeps_every_durable_event_and_reuses_no_seq(
    tmp_path: Path,
) -> None:
    last = 0
    with trio.fail_after(120):
        for reports in KILL_AFTER:
            reported = await _run_writer_until(tmp_path, reports)
            last = await _check(tmp_path, reported, last)
    assert last > 100
    assert len(list(tmp_path.glob("events-*.jsonl"))) > 5  # kills landed around rotations
