"""Leader failover on etcd: SIGKILL of the leading conductor → the other answers ``leader``.

Per TTL (default 10 s and 3 s), ``--runs`` fresh pairs of conductors share one real etcd on
loopback (a one-member cluster started here, stopped afterwards). Each run waits for one leader,
then a sampler asks both conductors' ``/rolez`` at the same moment every 50 ms; the leader's
process group is SIGKILLed and the benchmark asks the survivor back to back (every 20 ms) until
it answers ``leader``. Reported: failover time (kill → first ``leader`` answer) and the number
of sampling rounds in which both answered ``leader`` (must be 0). The goal of issue 13 is a
median failover ≤ TTL + 1 s: etcd expires the dead leader's lease after its TTL (checked every
500 ms), and the survivor's watch sees the key go at once.

    .venv/bin/python -m bench.bench_failover [--runs 10] [--ttl 10 --ttl 3] [--quick] [--json]

Needs an etcd binary (see tests/etcd_fixture.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.common import add_common_args, machine_facts, percentiles, print_result
from tests.etcd_fixture import Etcd, etcd_binary, free_port, open_etcd
from tests.fake_codexd import Daemon, spawn_daemon

CONDUCTOR = [sys.executable, "-m", "conductor_trio"]


async def _role(http: httpx.AsyncClient) -> str:
    try:
        return (await http.get("/rolez")).text.strip()
    except httpx.HTTPError:
        return "down"


async def one_run(etcd: Etcd, ttl: int, tmp: Path, index: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAA_")}
    dead_codexd = f"http://127.0.0.1:{free_port()}"  # the lease does not need codexd

    def argv(name: str) -> list[str]:
        return [*CONDUCTOR, "start", "--local-api", "http://127.0.0.1:0",
                "--codexd-base", dead_codexd, "--state-dir", str(tmp / f"{index}-{name}"),
                "--node-id", f"{name}{index}", "--lease-store", f"etcd://{etcd.endpoint}",
                "--lease-ttl", str(ttl)]

    async with (
        spawn_daemon(argv("a"), env=env) as a, spawn_daemon(argv("b"), env=env) as b,
        httpx.AsyncClient(base_url=a.url, timeout=2) as ha,
        httpx.AsyncClient(base_url=b.url, timeout=2) as hb,
    ):
        daemons: dict[str, tuple[Daemon, httpx.AsyncClient]] = {"a": (a, ha), "b": (b, hb)}
        with trio.fail_after(ttl + 10):
            while True:
                roles = {n: await _role(h) for n, (_, h) in daemons.items()}
                if list(roles.values()).count("leader") == 1:
                    break
                await trio.sleep(0.05)
        leader = next(n for n, r in roles.items() if r == "leader")
        other = "b" if leader == "a" else "a"
        samples = two_leaders = 0

        async def sampler() -> None:
            nonlocal samples, two_leaders
            while True:
                answers: list[str] = []
                async with trio.open_nursery() as nursery:
                    for _, h in daemons.values():
                        nursery.start_soon(_append, answers, h)
                samples += 1
                if answers.count("leader") > 1:
                    two_leaders += 1
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler)
            await trio.sleep(0.5)
            killed_at = time.monotonic()
            os.killpg(daemons[leader][0].process.pid, signal.SIGKILL)
            with trio.fail_after(ttl + 15):
                # Another process: asking is the only way to know (bounded above).
                while await _role(daemons[other][1]) != "leader":  # noqa: ASYNC110
                    await trio.sleep(0.02)
            failover_s = time.monotonic() - killed_at
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    return {"failover_s": failover_s, "samples": samples, "two_leader_samples": two_leaders}


async def _append(answers: list[str], http: httpx.AsyncClient) -> None:
    answers.append(await _role(http))


async def series(ttl: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp_name:
        tmp = Path(tmp_name)
        async with open_etcd(tmp) as etcd:
            results = [await one_run(etcd, ttl, tmp, i) for i in range(runs)]
    failovers = [r["failover_s"] for r in results]
    return {
        "ttl_s": ttl,
        "runs": runs,
        "failover_s": percentiles(failovers),
        "failover_each_s": [round(f, 3) for f in failovers],
        "samples": sum(r["samples"] for r in results),
        "two_leader_samples": sum(r["two_leader_samples"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ttl", type=int, action="append",
                        help="lease TTL in whole seconds (repeatable; default 10 and 3)")
    args = parser.parse_args()
    if etcd_binary() is None:
        sys.exit("bench_failover: no etcd binary (apt-get install etcd-server)")
    ttls = args.ttl or ([2] if args.quick else [10, 3])
    runs = 1 if args.quick else args.runs
    all_series = [trio.run(series, t, runs) for t in ttls]
    out = {"machine": machine_facts(), "series": all_series}
    summary = []
    for s in all_series:
        f = s["failover_s"]
        summary.append(
            f"TTL {s['ttl_s']} s, {s['runs']} runs: failover p50 {f['p50']:.2f} s, "
            f"min {f['min']:.2f} s, max {f['max']:.2f} s; two-leader samples "
            f"{s['two_leader_samples']} of {s['samples']}")
    print_result(out, summary, as_json=args.json)


if __name__ == "__main__":
    main()
