"""What every part of a chaos run shares: settings, the clock, the seeded generators, the
history, the violations, the faults and the figures sampled over time."""

from __future__ import annotations

import collections
import hashlib
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import trio

# Every process of a run carries this variable (with the run's id): the last check finds any
# process of the run that survived, in whatever process group it ended up.
RUN_MARKER = "BAA_CHAOS_RUN"

# How many history entries a violation carries (before and after it).
HISTORY_BEFORE = 60
HISTORY_AFTER = 20


@dataclass(frozen=True)
class Settings:
    """One run's parameters (see ``python -m bench.chaos --help``)."""

    seed: int
    chaos_s: float
    out: Path
    etcd: bool
    status_api: bool
    rate: float
    workers: int
    subscribers: int
    # Mean seconds between two faults of the same kind.
    fault_interval_s: float
    max_sessions: int
    lease_ttl: int
    disk: str
    disk_mb: int
    keep: bool
    quick: bool
    # RSS / fd growth is judged only on runs at least this long (a short run has no "after
    # warm-up" worth the name).
    judge_resources_after_s: float = 120.0


def digest(obj: Any) -> bytes:
    """A short fingerprint of a decoded JSON value, independent of key order."""
    return hashlib.blake2b(msgspec.json.encode(obj, order="sorted"), digest_size=8).digest()


@dataclass
class Violation:
    invariant: str
    message: str
    t: float
    details: dict[str, Any] = field(default_factory=dict)
    history_index: int = 0


@dataclass
class Fault:
    kind: str
    t: float
    target: str
    pid: int | None = None
    held_s: float | None = None
    note: str = ""


@dataclass
class SeenEvent:
    digest: bytes
    t: float
    who: str


class Context:
    """The shared state of one run. Everything runs on one Trio thread: no locks needed."""

    def __init__(self, settings: Settings, run_id: str, workdir: Path) -> None:
        self.settings = settings
        self.run_id = run_id
        self.workdir = workdir
        self.t0 = trio.current_time()
        self.wall0 = time.time()
        self.history: collections.deque[tuple[int, float, str, str]] = collections.deque(
            maxlen=50_000)
        self._history_count = 0
        self.violations: list[Violation] = []
        self.faults: list[Fault] = []
        self.notes: list[str] = []
        # Invariant name -> how many times it was checked (a check that never ran proves
        # nothing; the report says so).
        self.checked: collections.Counter[str] = collections.Counter()
        self.counters: collections.Counter[str] = collections.Counter()
        # seq -> what a client saw first under it.
        self.seen: dict[int, SeenEvent] = {}
        self.max_seen_seq = 0
        # (t, op, via, seconds, outcome) of every client request.
        self.requests: list[tuple[float, str, str, float, str]] = []
        # role -> [(t, pid, rss MiB, open fds)]
        self.samples: dict[str, list[tuple[float, int, float, int]]] = collections.defaultdict(
            list)
        # (t, events seen so far) every second.
        self.seq_series: list[tuple[float, int]] = []
        # Codex children seen: pid (their process group) -> when they started.
        self.child_groups: dict[int, int | None] = {}
        self.leader_samples = 0
        self.leader_inconclusive = 0
        self.stop_clients = trio.Event()
        self.stop_faults = trio.Event()
        self.disk_full = False
        self.disk_healed = trio.Event()
        self.disk_healed.set()

    # ------------------------------------------------------------------------------ time, rng

    def now(self) -> float:
        """Seconds since the run started."""
        return trio.current_time() - self.t0

    def rng(self, name: str) -> random.Random:
        """A generator of its own for ``name``, derived from the run's seed: each actor's
        choices replay whatever the others do."""
        return random.Random(f"{self.settings.seed}:{name}")

    # ------------------------------------------------------------------------------ records

    def log(self, actor: str, what: str) -> None:
        """One line of history (kept for the violations' context)."""
        self._history_count += 1
        self.history.append((self._history_count, self.now(), actor, what))

    def violation(self, invariant: str, message: str, *, at: float | None = None,
                  **details: Any) -> None:
        """Record a violation; ``at`` (seconds since the start) places it in the history when
        it was found later than it happened (from the files, at the end)."""
        self.log("CHECK", f"VIOLATION {invariant}: {message}")
        self.violations.append(
            Violation(invariant, message, self.now() if at is None else at, details,
                      self._history_count if at is None else self._index_at(at)))
        print(f"chaos: VIOLATION {invariant} at {self.now():.1f}s: {message}", flush=True)

    def check(self, invariant: str, count: int = 1) -> None:
        self.checked[invariant] += count

    def fault(self, fault: Fault) -> None:
        self.faults.append(fault)
        held = f" held {fault.held_s:.2f}s" if fault.held_s is not None else ""
        self.log("FAULT", f"{fault.kind} {fault.target} pid={fault.pid}{held} {fault.note}")

    def request(self, op: str, via: str, seconds: float, outcome: str) -> None:
        self.requests.append((self.now(), op, via, seconds, outcome))
        self.counters[f"{op} {outcome}"] += 1

    def saw(self, seq: int, value: bytes, who: str) -> None:
        """A client saw event ``seq`` with fingerprint ``value``: it must be the one every other
        client saw under that seq, and the one on disk at the end."""
        self.check("one_event_per_seq")
        known = self.seen.get(seq)
        if known is None:
            self.seen[seq] = SeenEvent(value, self.now(), who)
            if seq > self.max_seen_seq:
                self.max_seen_seq = seq
        elif known.digest != value:
            self.violation(
                "one_event_per_seq",
                f"{who} saw another event under seq {seq} than {known.who} did "
                f"{self.now() - known.t:.1f}s earlier",
                seq=seq, first=known.who, second=who)

    def since_start(self, iso: str) -> float | None:
        """Seconds since the run started of an event's ``at`` (wall clock on this machine)."""
        try:
            stamp = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        except (ValueError, AttributeError):
            return None
        return stamp - self.wall0

    def _index_at(self, t: float) -> int:
        for index, when, _, _ in self.history:
            if when >= t:
                return index
        return self._history_count

    def history_around(self, violation: Violation) -> list[str]:
        """The history lines just before and after a violation."""
        lines = []
        for index, t, actor, what in self.history:
            if violation.history_index - HISTORY_BEFORE <= index <= (
                    violation.history_index + HISTORY_AFTER):
                lines.append(f"{t:9.3f} {actor:<12} {what}")
        return lines
