"""Shared helpers of the codexd benchmarks: processes, directories, statistics, machine facts.

Every benchmark runs on loopback only, is bounded in count and time, and stops everything it
started: the scripted model runs in the benchmark's own Trio run; codexd runs as a subprocess in
its own process group (its codex child in another), and both groups are killed on the way out.
Working directories live under ``<repo>/var/bench/`` (git-ignored) and are removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from codexd_trio.base import codexbin
from codexd_trio.client import CodexdClient
from codexd_trio.testing.codexhome import scratch_root
from codexd_trio.testing.daemon import CodexdProcess, group_alive, running_codexd

__all__ = [
    "BENCH_ROOT",
    "CodexdProcess",
    "add_common_args",
    "bench_dir",
    "codex_binary",
    "cpu_seconds",
    "fmt_ms",
    "group_alive",
    "machine_facts",
    "now",
    "parse_iso_ms",
    "percentiles",
    "print_result",
    "rss_mb",
    "running_codexd",
]

# Override with BAA_BENCH_ROOT, e.g. a folder outside any git checkout: Codex does per-turn git
# work when its cwd is inside a repository (~5 ms per turn here), which both paths then pay.
BENCH_ROOT = Path(os.environ.get("BAA_BENCH_ROOT") or scratch_root() / "bench")


# --------------------------------------------------------------------------------------------
# Directories


@contextmanager
def bench_dir(name: str, *, keep: bool = False) -> Iterator[Path]:
    """A fresh working directory ``<repo>/var/bench/<name>-XXXX``, removed on exit.

    Args:
        name: A prefix naming the benchmark.
        keep: Leave the directory in place (for looking at codexd's logs afterwards).

    **Resource handling:** stop every process using the directory before the block exits.
    """
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=BENCH_ROOT))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def codex_binary() -> Path:
    """The pinned native codex binary (never the npm launcher)."""
    return codexbin.resolve_server_command()


# --------------------------------------------------------------------------------------------
# A codexd subprocess


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Summary of a sample: ``n``, ``min``, ``p50``, ``p90``, ``p99``, ``max``, ``mean``.

    Percentiles use the nearest-rank method on the sorted sample (with 50 values p99 is the
    maximum; say so when reading them). An empty sample gives ``n = 0`` and NaNs.
    """
    if not values:
        nan = float("nan")
        return {"n": 0, "min": nan, "p50": nan, "p90": nan, "p99": nan, "max": nan, "mean": nan}
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))
        return ordered[index]

    return {
        "n": len(ordered),
        "min": ordered[0],
        "p50": statistics.median(ordered),
        "p90": rank(90),
        "p99": rank(99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``); None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used so far (``/proc/<pid>/stat``); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 of proc(5) (utime, stime); the split above starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def codexd_child_pid(client: CodexdClient) -> int:
    """The pid of the Codex app-server codexd runs now (from its status)."""
    status = await client.status()
    return int(status["snapshot"]["daemon"]["child"]["pid"])


def parse_iso_ms(text: str) -> float:
    """Seconds since the epoch of an event's ``at`` (``2026-11-24T03:08:22.269Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_facts() -> dict[str, Any]:
    """Where the figures come from: CPUs, CPU model, memory, OS, Python, codex version."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    os_name = next(
        (
            line.split("=", 1)[1].strip().strip('"')
            for line in _read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        platform.system(),
    )
    try:
        codex = subprocess.run(
            [str(codex_binary()), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError, codexbin.CodexBinaryNotFound) as exc:
        codex = f"unknown ({exc})"
    return {
        "cpus": os.cpu_count(),
        "cpuModel": model,
        "memGiB": round(mem_kb / 1024 / 1024, 1),
        "os": f"{os_name}, kernel {platform.release()}",
        "python": platform.python_version(),
        "codex": codex,
        "loadavg": os.getloadavg(),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------
# Command line and output


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--quick`` (tiny sizes, for the smoke test), ``--json``, ``--keep``."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--json", action="store_true", help="also print one JSON result line")
    parser.add_argument("--keep", action="store_true", help="keep var/bench/<dir> afterwards")


def print_result(result: dict[str, Any], summary: Sequence[str], *, as_json: bool) -> None:
    """Print the human summary, then (with ``--json``) the result as the last stdout line."""
    for line in summary:
        print(line)
    if as_json:
        print(json.dumps(result, default=float))
    sys.stdout.flush()


def fmt_ms(stats: dict[str, float], *keys: str) -> str:
    """``p50 1.23 ms, p99 4.56 ms`` from a :func:`percentiles` result in milliseconds."""
    keys = keys or ("p50", "p90", "p99")
    return ", ".join(f"{k} {stats[k]:.2f} ms" for k in keys)


def now() -> float:
    """Wall clock in seconds (comparable with event ``at`` stamps written on this machine)."""
    return time.time()
