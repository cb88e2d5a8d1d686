"""``python -m bench.chaos [--quick | --minutes N] [--seed S] [--out DIR] [--etcd] ...``

Exit status: 0 when no invariant was violated, 1 otherwise, 2 for bad arguments (one line on
stderr). The seed is printed first; ``--seed`` replays a run's choices.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import trio

from bench.chaos.context import Settings
from bench.chaos.run import run
from codexd_trio.testing.codexhome import scratch_root

QUICK_CHAOS_S = 25.0


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def parse(argv: Sequence[str]) -> Settings:
    p = _Parser(prog="python -m bench.chaos",
                description="Chaos and soak run of a real node; see bench/chaos/__init__.py.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help=f"≤ 60 s in all ({QUICK_CHAOS_S:.0f} s of faults): CI")
    size.add_argument("--minutes", type=float, help="minutes of faults and load (a soak)")
    p.add_argument("--seed", type=int, help="replay this seed (default: a new one, printed)")
    p.add_argument("--out", type=Path, help="report directory (default var/chaos/report-SEED)")
    p.add_argument("--etcd", action="store_true",
                   help="two conductors sharing a real etcd lease (faults on etcd too)")
    p.add_argument("--no-status-api", action="store_true", help="do not start the status-api")
    p.add_argument("--rate", type=float, default=4.0, help="client actions per second (4)")
    p.add_argument("--workers", type=int, default=3, help="concurrent clients (3)")
    p.add_argument("--subscribers", type=int, default=8, help="event-stream subscribers (8)")
    p.add_argument("--fault-interval", type=float,
                   help="mean seconds between two faults of one kind (5; quick: 5)")
    p.add_argument("--max-sessions", type=int, default=12, help="open sessions at most (12)")
    p.add_argument("--lease-ttl", type=int, default=2, help="etcd lease TTL in seconds (2)")
    p.add_argument("--disk", choices=("auto", "tmpfs", "rlimit"), default="auto",
                   help="how the disk fills: a tmpfs with a ballast file, or RLIMIT_FSIZE")
    p.add_argument("--disk-mb", type=int, default=512, help="tmpfs size in MiB (512)")
    p.add_argument("--keep", action="store_true", help="keep the node's files in --out")
    args = p.parse_args(list(argv))
    if args.minutes is not None and args.minutes <= 0:
        raise _UsageError("--minutes must be positive")
    if args.rate <= 0 or args.workers < 1 or args.subscribers < 0:
        raise _UsageError("--rate, --workers and --subscribers must be positive")
    if args.lease_ttl < 2:
        raise _UsageError("--lease-ttl must be at least 2 (etcd's floor)")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    chaos_s = QUICK_CHAOS_S if args.quick else (args.minutes or 5.0) * 60
    out = args.out or scratch_root() / "chaos" / f"report-{seed}"
    return Settings(
        seed=seed, chaos_s=chaos_s, out=out.absolute(), etcd=args.etcd,
        status_api=not args.no_status_api, rate=args.rate, workers=args.workers,
        subscribers=args.subscribers, fault_interval_s=args.fault_interval or 5.0,
        max_sessions=args.max_sessions, lease_ttl=args.lease_ttl, disk=args.disk,
        disk_mb=args.disk_mb, keep=args.keep, quick=args.quick)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse(sys.argv[1:] if argv is None else argv)
    except _UsageError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    return trio.run(_until_signal, settings)


async def _until_signal(settings: Settings) -> int:
    """Run; SIGINT or SIGTERM cancels the run, whose cleanup kills every process group it
    started and unmounts its disk (no report then)."""
    code = 130
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def interrupted() -> None:
                async for signum in signals:
                    print(f"chaos: {signal.Signals(signum).name}: stopping", file=sys.stderr,
                          flush=True)
                    nursery.cancel_scope.cancel(reason="signal")
                    return

            async def main_run() -> None:
                nonlocal code
                code = await run(settings)
                nursery.cancel_scope.cancel(reason="run over")

            nursery.start_soon(interrupted)
            nursery.start_soon(main_run)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
