"""The chaos harness's judges catch what they are there to catch: fed a damaged event log, a
turn that ends twice, an approval settled twice or an event that changed on disk, each reports
a violation (a checker that cannot fail proves nothing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.chaos.checks import DiskLog, check_approvals, check_seen, check_turns
from bench.chaos.clients import World
from bench.chaos.context import Context, Settings, digest


def _ctx(tmp_path: Path) -> Context:
    settings = Settings(seed=1, chaos_s=1, out=tmp_path, etcd=False, status_api=False, rate=1,
                        workers=1, subscribers=0, fault_interval_s=1, max_sessions=1,
                        lease_ttl=2, disk="rlimit", disk_mb=1, keep=False, quick=True)
    return Context(settings, "run", tmp_path)


def _event(seq: int, type_: str = "x", **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "at": "2026-12-07T00:00:00.000Z", "type": type_, **fields}


def _write(path: Path, events: list[dict[str, Any]], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events) + tail)


def _invariants(ctx: Context) -> list[str]:
    return [v.invariant for v in ctx.violations]


async def test_a_clean_log_and_matching_sightings_pass(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    events = [_event(seq) for seq in range(1, 6)]
    _write(tmp_path / "events-000000000001.jsonl", events[:3])
    # A killed codexd's active file: its data, then the space it reserved (zeros).
    _write(tmp_path / "events.jsonl", events[3:], tail=bytes(4096))
    for event in events:
        ctx.saw(event["seq"], digest(event), "client")
    log = DiskLog(tmp_path)
    log.read_all(ctx)
    assert check_seen(ctx, log) == {"verified": 5, "beyondRetention": 0}
    assert ctx.violations == []


async def test_gaps_repeats_zero_holes_and_changed_events_are_violations(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    # A sealed segment, then an active file that repeats seq 3, skips 5 and has a hole of
    # zeros (what an abandoned commit landing in the next segment leaves).
    _write(tmp_path / "events-000000000001.jsonl", [_event(1), _event(2), _event(3)])
    _write(tmp_path / "events.jsonl", [_event(3), _event(4), _event(6)], tail=b"\0" * 16 + b"\n")
    ctx.saw(2, digest(_event(2, message="what the client saw")), "client")
    log = DiskLog(tmp_path)
    log.read_all(ctx)
    check_seen(ctx, log)
    messages = " | ".join(v.message for v in ctx.violations)
    assert _invariants(ctx).count("seq_contiguous") >= 3, messages
    assert "seen_on_disk" in _invariants(ctx), messages


async def test_a_turn_ending_twice_or_never_and_a_double_settlement_are_violations(
    tmp_path: Path,
) -> None:
    ctx = _ctx(tmp_path)
    approval = {"approvalId": "a-1", "kind": "commandExecution", "turnId": "t-1",
                "itemId": "call-1", "state": "expired", "decision": None}
    _write(tmp_path / "events.jsonl", [
        _event(1, "turn.accepted", turnId="t-1"),
        _event(2, "app-server.turn.completed", turnId="t-1",
               detail={"turn": {"id": "t-1", "status": "completed"}}),
        _event(3, "app-server.turn.completed.missing", turnId="t-1"),
        _event(4, "turn.accepted", turnId="t-2"),
        _event(5, "approval.resolved", detail={"approval": approval, "reason": "a"}),
        _event(6, "approval.resolved", detail={"approval": approval, "reason": "b"}),
    ])
    registry = tmp_path / "session-registry.json"
    registry.write_text(json.dumps({"lastSeq": 6, "sessions": [
        {"sessionId": "s-1", "lastTurnId": "t-1", "lastTurnStatus": "completed"},
        {"sessionId": "s-2", "currentTurnId": "t-2", "lastTurnId": "t-2",
         "lastTurnStatus": "inProgress"}]}))
    world = World()
    world.turns["t-3"] = ("s-3", 0.0)  # a 202 the journal does not know
    world.decisions["a-1"] = "accept"  # a 200 the journal does not agree with
    log = DiskLog(tmp_path)
    log.read_all(ctx)
    check_turns(ctx, log, world, registry)
    check_approvals(ctx, log, world, tmp_path / "approvals.json")
    messages = [v.message for v in ctx.violations]
    assert any("t-1 ended 2 times" in m for m in messages), messages
    assert any("t-2 ended 0 times" in m for m in messages), messages
    assert any("t-3 was accepted (202)" in m for m in messages), messages
    assert any("s-1: the registry says turn t-1 ended completed, the journal failed" in m
               for m in messages), messages
    assert any("s-2 still has turn t-2 running" in m for m in messages), messages
    assert any("a-1 was settled 2 times" in m for m in messages), messages
    assert any("answered 200 accept, the journal says expired" in m for m in messages), messages
