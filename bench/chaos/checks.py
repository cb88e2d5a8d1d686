"""The invariants judged from codexd's files: the event log (read while the run goes, sealed
segment by sealed segment, and whole at the end), the session registry and the approvals.

* ``seq_contiguous`` — across every retained file, seqs go up by one: no gap, no repeat, no
  undecodable line (a hole of zeros is one), each sealed segment named after its first seq.
* ``seen_on_disk`` — every event a client saw is on disk, byte for byte the same JSON value.
* ``turn_settles_once`` — every accepted turn (a client's 202, or ``turn.accepted`` in the
  journal) ends exactly once: one ``app-server.turn.completed`` or
  ``app-server.turn.completed.missing``; the registry agrees with that ending and holds no turn
  still running once codexd has stopped.
* ``queued_once`` — every turn a client was told is queued is in the journal, and no queued
  turn starts twice.
* ``approval_decided_once`` / ``approval_delivered`` — each approval is settled at most once;
  the decision a client was answered 200 for is the one recorded; and when Codex reports the
  command item's end, it matches (``accept`` → the command ran: ``completed``/``failed``;
  ``decline``/``cancel`` → ``declined``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bench.chaos.clients import World
from bench.chaos.context import Context, digest
from codexd_trio.core.turns import turn_outcome

_SETTLING = ("app-server.turn.completed", "app-server.turn.completed.missing")


@dataclass
class FileRange:
    first: int
    last: int


@dataclass
class DiskLog:
    """What the harness has read of ``events*.jsonl``."""

    directory: Path
    digests: dict[int, bytes] = field(default_factory=dict)
    where: dict[int, str] = field(default_factory=dict)
    ranges: dict[str, FileRange] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    settlements: dict[str, list[tuple[int, str]]] = field(
        default_factory=lambda: defaultdict(list))
    approvals: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    items: dict[tuple[str, str], str] = field(default_factory=dict)
    # queue id -> the seq of its turn.queued; -> the seqs of its turn.dequeued (at most one).
    queued: dict[str, int] = field(default_factory=dict)
    dequeued: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    lines: int = 0

    def segments(self) -> list[Path]:
        """Sealed segments, oldest first (by the first seq in their name)."""
        found = []
        for path in self.directory.glob("events-*.jsonl"):
            stem = path.stem.removeprefix("events-")
            if stem.isdigit():
                found.append((int(stem), path))
        return [p for _, p in sorted(found)]

    def read_sealed(self, ctx: Context) -> None:
        """Read every sealed segment not read yet (they never change once sealed)."""
        listing = self.segments()
        for path in listing:
            if path.name not in self.ranges:
                self._read(ctx, path)
        self._check_neighbours(ctx, [p.name for p in listing])

    def read_all(self, ctx: Context) -> None:
        """At the end (codexd stopped): the sealed segments and the active file."""
        self.read_sealed(ctx)
        active = self.directory / "events.jsonl"
        self.ranges.pop(active.name, None)
        if active.exists():
            self._read(ctx, active)
        names = [p.name for p in self.segments()]
        if active.name in self.ranges:
            names.append(active.name)
        self._check_neighbours(ctx, names)

    def _check_neighbours(self, ctx: Context, names: list[str]) -> None:
        previous: tuple[str, FileRange] | None = None
        for name in names:
            here = self.ranges.get(name)
            if here is None:
                continue
            if previous is not None and here.first != previous[1].last + 1:
                ctx.violation("seq_contiguous",
                              f"{name} starts at seq {here.first} but {previous[0]} ends at "
                              f"{previous[1].last}")
            previous = (name, here)

    def _read(self, ctx: Context, path: Path) -> None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return  # removed by retention before the harness got to it
        data, zero, rest = raw.partition(b"\0")
        if zero and not rest.strip(b"\0"):
            # The active file's reserved space (zeros to the end) is not data; a hole of zeros
            # followed by anything else still is, and is reported below.
            raw = data
        first = last = None
        for number, line in enumerate(raw.splitlines(), 1):
            self.lines += 1
            try:
                event = msgspec.json.decode(line)
                seq = int(event["seq"])
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                ctx.violation("seq_contiguous", f"{path.name} line {number} is not an event: "
                              f"{line[:80]!r}", file=path.name, line=number)
                continue
            ctx.check("seq_contiguous")
            if last is not None and seq != last + 1:
                ctx.violation("seq_contiguous", f"{path.name} line {number}: seq {seq} after "
                              f"{last}", file=path.name, line=number)
            if seq in self.digests and self.where.get(seq) != path.name:
                ctx.violation("seq_contiguous",
                              f"seq {seq} is in {path.name} and in {self.where.get(seq)}")
            first = seq if first is None else first
            last = seq
            self.digests[seq] = digest(event)
            self.where[seq] = path.name
            self._note(event, seq)
        if first is not None and last is not None:
            self.ranges[path.name] = FileRange(first, last)
            stem = path.stem.removeprefix("events-")
            if stem.isdigit() and int(stem) != first:
                ctx.violation("seq_contiguous", f"{path.name} starts with seq {first}")

    def _note(self, event: dict[str, Any], seq: int) -> None:
        kind, turn_id = event.get("type"), event.get("turnId")
        detail = event.get("detail") or {}
        if kind == "turn.accepted" and turn_id:
            self.accepted[turn_id] = seq
        elif kind == "app-server.turn.completed" and turn_id:
            turn = detail.get("turn")
            status = turn_outcome(turn)[0] if isinstance(turn, dict) else "completed"
            self.settlements[turn_id].append((seq, status))
        elif kind == "app-server.turn.completed.missing" and turn_id:
            self.settlements[turn_id].append((seq, "failed"))
        elif kind in ("approval.requested", "approval.resolved"):
            approval = detail.get("approval")
            if isinstance(approval, dict):
                self.approvals[str(approval.get("approvalId"))].append(
                    {**approval, "seq": seq, "type": kind, "at": event.get("at"),
                     "why": detail.get("reason")})
        elif kind == "turn.queued" and isinstance(detail.get("queueId"), str):
            self.queued.setdefault(detail["queueId"], seq)
        elif kind == "turn.dequeued" and isinstance(detail.get("queueId"), str):
            self.dequeued[detail["queueId"]].append(seq)
        elif kind == "app-server.item.completed":
            item = detail.get("item")
            if isinstance(item, dict) and item.get("type") == "commandExecution" and turn_id:
                self.items[(turn_id, str(item.get("id")))] = str(item.get("status"))


def check_seen(ctx: Context, disk: DiskLog) -> dict[str, int]:
    """Every event a client saw is on disk unchanged."""
    first_on_disk = min(disk.digests) if disk.digests else 1
    verified = unverifiable = 0
    for seq, seen in sorted(ctx.seen.items()):
        on_disk = disk.digests.get(seq)
        if on_disk is None:
            if seq < first_on_disk:
                unverifiable += 1  # removed by retention before it could be read
                continue
            ctx.violation("seen_on_disk", f"seq {seq}, seen by {seen.who} at "
                          f"{seen.t:.1f}s, is not in the event log", seq=seq, at=seen.t)
        elif on_disk != seen.digest:
            ctx.violation("seen_on_disk", f"seq {seq} on disk differs from what {seen.who} saw "
                          f"at {seen.t:.1f}s", seq=seq, file=disk.where.get(seq), at=seen.t)
        else:
            verified += 1
        ctx.check("seen_on_disk")
    return {"verified": verified, "beyondRetention": unverifiable}


def check_turns(ctx: Context, disk: DiskLog, world: World, registry: Path) -> dict[str, int]:
    """Every accepted turn settles exactly once, and the registry agrees."""
    first_on_disk = min(disk.digests) if disk.digests else 1
    turns = set(disk.accepted) | set(world.turns)
    outcome: dict[str, tuple[int, str]] = {}
    by_status: dict[str, int] = defaultdict(int)
    for turn_id in sorted(turns):
        ctx.check("turn_settles_once")
        accepted_at = disk.accepted.get(turn_id)
        if accepted_at is None:
            ctx.violation("turn_settles_once", f"turn {turn_id} was accepted (202) but its "
                          "turn.accepted is not in the journal", turnId=turn_id,
                          at=world.turns[turn_id][1])
            continue
        if accepted_at < first_on_disk:
            continue
        endings = disk.settlements.get(turn_id, [])
        if len(endings) != 1:
            ctx.violation("turn_settles_once",
                          f"turn {turn_id} ended {len(endings)} times "
                          f"({', '.join(f'{s} at seq {q}' for q, s in endings) or 'never'})",
                          turnId=turn_id, at=world.turns.get(turn_id, ("", None))[1])
        if endings:
            outcome[turn_id] = endings[-1]
            by_status[endings[-1][1]] += 1
    try:
        snapshot = json.loads(registry.read_text())
    except (OSError, ValueError) as exc:
        ctx.violation("turn_settles_once", f"cannot read the registry: {exc}")
        return dict(by_status)
    for session in snapshot.get("sessions", []):
        ctx.check("registry_agrees")
        sid = session.get("sessionId")
        if session.get("currentTurnId") or session.get("lastTurnStatus") == "inProgress":
            ctx.violation("registry_agrees", f"session {sid} still has turn "
                          f"{session.get('currentTurnId') or session.get('lastTurnId')} running "
                          "after codexd stopped", sessionId=sid)
        last = session.get("lastTurnId")
        if (last in outcome and outcome[last][0] <= snapshot.get("lastSeq", 0)
                and session.get("lastTurnStatus") != outcome[last][1]):
            ctx.violation("registry_agrees",
                          f"session {sid}: the registry says turn {last} ended "
                          f"{session.get('lastTurnStatus')}, the journal {outcome[last][1]}",
                          sessionId=sid, turnId=last)
    return dict(by_status)


def check_approvals(ctx: Context, disk: DiskLog, world: World, book: Path) -> dict[str, int]:
    """Settled at most once; the 200 a client got is the record; Codex got the record."""
    figures: dict[str, int] = defaultdict(int)
    final: dict[str, dict[str, Any]] = {}
    for approval_id, events in disk.approvals.items():
        settled = [e for e in events if e["type"] == "approval.resolved"]
        ctx.check("approval_decided_once")
        if len(settled) > 1:
            ctx.violation("approval_decided_once",
                          f"approval {approval_id} was settled {len(settled)} times: "
                          + ", ".join(f"{e['state']}/{e.get('decision')} at seq {e['seq']}"
                                      f" ({e.get('why') or e.get('decidedBy')})"
                                      for e in settled), approvalId=approval_id,
                          at=ctx.since_start(str(settled[-1].get("at"))),
                          events=[{k: e.get(k) for k in ("seq", "at", "state", "decision",
                                                           "decidedBy", "why")}
                                  for e in events])
        if settled:
            final[approval_id] = settled[-1]
            figures[f"{settled[-1]['state']} {settled[-1].get('decidedBy')}"] += 1
        else:
            figures["never settled"] += 1
    for approval_id, decision in world.decisions.items():
        ctx.check("approval_decided_once")
        record = final.get(approval_id)
        if record is None and approval_id not in disk.approvals:
            figures["decided beyond retention"] += 1
        elif record is None:
            ctx.violation("approval_decided_once",
                          f"approval {approval_id}: a client was answered 200 {decision} "
                          "but no decision is in the journal", approvalId=approval_id)
        elif record["state"] != "resolved" or record.get("decision") != decision:
            ctx.violation("approval_decided_once",
                          f"approval {approval_id}: a client was answered 200 {decision}, the "
                          f"journal says {record['state']}/{record.get('decision')}",
                          approvalId=approval_id)
    for approval_id, record in final.items():
        if record["state"] != "resolved" or record.get("kind") != "commandExecution":
            continue
        status = disk.items.get((str(record.get("turnId")), str(record.get("itemId"))))
        if status is None:
            figures["delivery unconfirmed"] += 1  # the turn ended before Codex said
            continue
        ctx.check("approval_delivered")
        ran = record.get("decision") in ("accept", "acceptForSession")
        if (status in ("completed", "failed")) != ran:
            ctx.violation("approval_delivered",
                          f"approval {approval_id} recorded {record.get('decision')} "
                          f"({record.get('decidedBy')}) but Codex's command item ended {status}",
                          approvalId=approval_id, itemId=record.get("itemId"))
        figures[f"delivered {record.get('decision')} -> {status}"] += 1
    try:
        saved = json.loads(book.read_text()).get("approvals", [])
    except (OSError, ValueError):
        saved = []
    for approval in saved:
        record = final.get(approval.get("approvalId"))
        if record is not None and (approval.get("state"), approval.get("decision")) != (
                record["state"], record.get("decision")):
            ctx.violation("approval_decided_once",
                          f"approvals.json says {approval.get('state')}/"
                          f"{approval.get('decision')} for {approval.get('approvalId')}, the "
                          f"journal {record['state']}/{record.get('decision')}")
    return dict(figures)


def check_queue(ctx: Context, disk: DiskLog, world: World) -> dict[str, int]:
    """Every turn a client was told is queued is in the journal (durable before its 202), and
    no queued turn ever starts twice (a start interrupted by a crash stops the queue instead)."""
    first_on_disk = min(disk.digests) if disk.digests else 1
    started = removed_or_waiting = 0
    for queue_id, (_, at) in sorted(world.queued.items()):
        ctx.check("queued_once")
        if queue_id not in disk.queued and first_on_disk <= 1:
            ctx.violation("queued_once", f"turn {queue_id} was queued (202) but its turn.queued "
                          "is not in the journal", queueId=queue_id, at=at)
    for queue_id in sorted(set(disk.queued) | set(disk.dequeued)):
        ctx.check("queued_once")
        starts = disk.dequeued.get(queue_id, [])
        if len(starts) > 1:
            ctx.violation("queued_once", f"queued turn {queue_id} started {len(starts)} times "
                          f"(turn.dequeued at seqs {starts})", queueId=queue_id)
        if starts:
            started += 1
        else:
            removed_or_waiting += 1
    return {"queuedByClients": len(world.queued), "inJournal": len(disk.queued),
            "started": started, "notStarted": removed_or_waiting}


def check_log_files(ctx: Context, paths: list[Path], limit: int, keep: int) -> dict[str, int]:
    """Each daemon's log file rolls over at ``limit`` bytes with ``keep`` older files."""
    sizes: dict[str, int] = {}
    for path in paths:
        family = sorted(path.parent.glob(path.name + "*"))
        total = 0
        for member in family:
            size = member.stat().st_size
            sizes[str(member.name)] = size
            total += size
            ctx.check("log_files_bounded")
            # One record may straddle the limit; 1 MiB is far more than any record.
            if size > limit + 1024 * 1024:
                ctx.violation("log_files_bounded", f"{member} is {size} bytes (limit {limit})")
        if len(family) > keep + 1:
            ctx.violation("log_files_bounded", f"{len(family)} files for {path.name}")
    return sizes
