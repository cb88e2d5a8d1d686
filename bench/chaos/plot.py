"""The run at a glance: one PNG with RSS, open fds, request latency p50/p99, events/s and every
fault over time (matplotlib, headless)."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

from bench.chaos.context import Context

BUCKET_S = 5.0


def render(ctx: Context, path: Path, *, chaos: tuple[float, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(5, 1, figsize=(14, 15), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 3, 2, 2]})
    rss, fds, latency, rate, faults = axes
    for name, samples in sorted(ctx.samples.items()):
        times = [s[0] for s in samples]
        rss.plot(times, [s[2] for s in samples], ".", markersize=2, label=name)
        fds.plot(times, [s[3] for s in samples], ".", markersize=2, label=name)
    rss.set_ylabel("RSS (MiB)")
    rss.legend(loc="upper left", fontsize=7, ncol=4, markerscale=4)
    fds.set_ylabel("open fds")

    buckets: dict[int, list[float]] = collections.defaultdict(list)
    for t, _, _, seconds, _ in ctx.requests:
        buckets[int(t // BUCKET_S)].append(seconds * 1000)
    keys = sorted(buckets)
    centers = [(k + 0.5) * BUCKET_S for k in keys]
    for q, style in ((0.5, "-"), (0.99, "--")):
        values = []
        for k in keys:
            ordered = sorted(buckets[k])
            values.append(ordered[min(len(ordered) - 1, int(q * len(ordered)))])
        latency.plot(centers, values, style, label=f"p{int(q * 100)}")
    latency.set_yscale("log")
    latency.set_ylabel(f"request ms ({BUCKET_S:.0f} s buckets)")
    latency.legend(loc="upper left", fontsize=8)

    series = ctx.seq_series
    times = [t for t, _ in series[1:]]
    per_s = [(b - a) / max(1e-9, tb - ta) for (ta, a), (tb, b) in itertools.pairwise(series)]
    rate.plot(times, per_s, "-", linewidth=0.8)
    rate.set_ylabel("events/s (seen)")

    kinds = sorted({f.kind for f in ctx.faults})
    for row, kind in enumerate(kinds):
        at = [f.t for f in ctx.faults if f.kind == kind]
        faults.plot(at, [row] * len(at), "|", markersize=8)
    faults.set_yticks(range(len(kinds)), kinds, fontsize=7)
    faults.set_ylabel("faults")
    for v in ctx.violations:
        for axis in axes:
            axis.axvline(v.t, color="red", linewidth=0.8, alpha=0.6)
    for axis in axes:
        axis.axvspan(chaos[0], chaos[1], color="grey", alpha=0.06)
        axis.grid(alpha=0.3)
    faults.set_xlabel("seconds since start (shaded: faults running; red: violations)")
    fig.suptitle(f"chaos run seed {ctx.settings.seed}: {len(ctx.faults)} faults, "
                 f"{len(ctx.violations)} violations, {len(ctx.seen)} events seen")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
