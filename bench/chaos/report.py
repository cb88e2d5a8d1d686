"""The run's report: one JSON document with every figure and violation (each with the seed and
the history around it), and the resource-growth judgement."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from bench.chaos.context import Context
from bench.common import percentiles

# Judged: the node's own daemons. Reported only: what the node does not own (etcd, the model)
# and the Codex child (restarted by every child fault; its memory is Codex's).
JUDGED_PREFIXES = ("codexd", "conductor", "status-api")
GROWTH_LIMIT = 0.10


def _window_p90(values: list[tuple[float, float]], start: float, end: float) -> float | None:
    inside = sorted(v for t, v in values if start <= t <= end)
    if not inside:
        return None
    return inside[min(len(inside) - 1, int(0.9 * len(inside)))]


def resource_growth(ctx: Context, chaos_start: float, chaos_end: float) -> dict[str, Any]:
    """RSS and fds of each daemon: the 90th percentile in a window after warm-up against the
    same in the last window of the run (each daemon is restarted by the faults, so a window
    holds many incarnations at many ages; growth across windows is what the node keeps)."""
    length = chaos_end - chaos_start
    warm = chaos_start + max(60.0, 0.10 * length)
    window = max(60.0, 0.15 * length)
    judged = length >= ctx.settings.judge_resources_after_s
    out: dict[str, Any] = {"judged": judged, "limit": GROWTH_LIMIT,
                           "baselineWindow": [warm, warm + window],
                           "finalWindow": [chaos_end - window, chaos_end], "daemons": {}}
    for name, samples in sorted(ctx.samples.items()):
        figures: dict[str, Any] = {"samples": len(samples),
                                   "rssMiB": percentiles([s[2] for s in samples]),
                                   "fds": percentiles([float(s[3]) for s in samples])}
        for label, index in (("rss", 2), ("fds", 3)):
            series = [(s[0], float(s[index])) for s in samples]
            base = _window_p90(series, warm, warm + window)
            last = _window_p90(series, chaos_end - window, chaos_end)
            growth = (last / base - 1.0) if base and last is not None else None
            figures[f"{label}Baseline"], figures[f"{label}Final"] = base, last
            figures[f"{label}Growth"] = growth
            if judged and name.startswith(JUDGED_PREFIXES) and growth is not None:
                ctx.check("resources_bounded")
                if growth > GROWTH_LIMIT:
                    ctx.violation("resources_bounded",
                                  f"{name} {label} grew {growth * 100:.1f}% after warm-up "
                                  f"({base:.1f} -> {last:.1f})", daemon=name)
        out["daemons"][name] = figures
    return out


def latency_table(ctx: Context) -> dict[str, Any]:
    by_op: dict[str, list[float]] = collections.defaultdict(list)
    outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for _, op, via, seconds, outcome in ctx.requests:
        by_op[f"{op} via {via}"].append(seconds * 1000)
        outcomes[f"{op} via {via}"][outcome] += 1
    return {op: {"ms": percentiles(values), "outcomes": dict(outcomes[op])}
            for op, values in sorted(by_op.items())}


def build(ctx: Context, *, extra: dict[str, Any]) -> dict[str, Any]:
    faults = collections.Counter(f.kind for f in ctx.faults)
    violations = [{
        "invariant": v.invariant, "message": v.message, "atS": round(v.t, 3),
        "seed": ctx.settings.seed, "details": v.details,
        "history": ctx.history_around(v),
    } for v in ctx.violations]
    return {
        "seed": ctx.settings.seed,
        "replay": f"python -m bench.chaos --seed {ctx.settings.seed}"
                  + (" --quick" if ctx.settings.quick else
                     f" --minutes {ctx.settings.chaos_s / 60:g}")
                  + (" --etcd" if ctx.settings.etcd else ""),
        "runId": ctx.run_id,
        "settings": {k: (str(v) if isinstance(v, Path) else v)
                     for k, v in vars(ctx.settings).items()},
        "violationCount": len(violations),
        "violations": violations,
        "faultCounts": dict(sorted(faults.items())),
        "faults": [{"kind": f.kind, "atS": round(f.t, 3), "target": f.target, "pid": f.pid,
                    "heldS": None if f.held_s is None else round(f.held_s, 3), "note": f.note}
                   for f in ctx.faults],
        "invariantsChecked": dict(sorted(ctx.checked.items())),
        "counters": dict(sorted(ctx.counters.items())),
        "requests": latency_table(ctx),
        "eventsSeen": len(ctx.seen),
        "maxSeenSeq": ctx.max_seen_seq,
        "leaderSamples": {"samples": ctx.leader_samples,
                          "inconclusive": ctx.leader_inconclusive},
        "notes": ctx.notes,
        **extra,
    }


def write(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=1, default=float) + "\n")
