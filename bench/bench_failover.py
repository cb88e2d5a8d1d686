"""Leader failover on etcd: the leading conductor is killed or frozen → the other leads.

Per TTL (default 10 s and 3 s) and per fault, ``--runs`` fresh pairs of conductors share one
real etcd on loopback (a one-member cluster started here, stopped afterwards). Each run waits
for one leader, then a sampler asks both conductors' ``/rolez`` at the same moment every 50 ms.
The fault hits the leader's process group:

- ``kill``: SIGKILL. Failover time only: a killed leader answers nothing, so it can never be
  sampled as a second leader (its "0 two-leader samples" could not be anything else).
- ``freeze``: SIGSTOP (a laptop lid, a VM pause), held until well past the TTL, then SIGCONT.
  The leader wakes believing it still leads until it learns etcd expired its lease: the case
  the two-leader count is about. Sampled for 2 × TTL after the wake.

The benchmark asks the survivor back to back (every 20 ms) until it answers ``leader``.
Reported: failover time (fault → first ``leader`` answer) and the sampling rounds in which
both answered ``leader`` (must be 0), with those after the frozen leader woke counted apart.
The goal of issue 13 is a median failover ≤ TTL + 1 s: etcd expires the lost leader's lease
after its TTL (checked every 500 ms), and the survivor's watch sees the key go at once.

    .venv/bin/python -m bench.bench_failover [--runs 10] [--ttl 10 --ttl 3]
        [--fault kill --fault freeze] [--quick] [--json]

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


# A frozen conductor answers nothing; the sampler must not wait seconds for it (a round would
# then straddle the moment it wakes).
SAMPLE_TIMEOUT_S = 0.3


async def _role(http: httpx.AsyncClient, wait_s: float | None = None) -> str:
    try:
        if wait_s is None:
            return (await http.get("/rolez")).text.strip()
        return (await http.get("/rolez", timeout=wait_s)).text.strip()
    except httpx.HTTPError:
        return "down"


async def one_run(etcd: Etcd, ttl: int, tmp: Path, index: int, fault: str) -> dict[str, Any]:
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
        woken = False
        after_wake = {"samples": 0, "two_leader_samples": 0, "old_leader_answered": 0}

        async def sampler() -> None:
            nonlocal samples, two_leaders
            while True:
                answers: dict[str, str] = {}
                async with trio.open_nursery() as nursery:
                    for name, (_, h) in daemons.items():
                        nursery.start_soon(_ask, answers, name, h)
                samples += 1
                both = list(answers.values()).count("leader") > 1
                two_leaders += both
                if woken:
                    after_wake["samples"] += 1
                    after_wake["two_leader_samples"] += both
                    after_wake["old_leader_answered"] += answers[leader] != "down"
                await trio.sleep(0.05)

        group = daemons[leader][0].process.pid
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler)
            await trio.sleep(0.5)
            hit_at = time.monotonic()
            os.killpg(group, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
            try:
                with trio.fail_after(ttl + 15):
                    # Another process: asking is the only way to know (bounded above).
                    while await _role(daemons[other][1]) != "leader":  # noqa: ASYNC110
                        await trio.sleep(0.02)
                failover_s = time.monotonic() - hit_at
                if fault == "freeze":
                    # Frozen well past its TTL, so it wakes with a lease etcd has expired.
                    await trio.sleep(max(0.0, ttl + 1.0 - (time.monotonic() - hit_at)))
            finally:
                if fault == "freeze":
                    os.killpg(group, signal.SIGCONT)
                    woken = True
            await trio.sleep(2 * ttl if fault == "freeze" else 0.5)
            nursery.cancel_scope.cancel()
    return {"failover_s": failover_s, "samples": samples, "two_leader_samples": two_leaders,
            "after_wake": after_wake}


async def _ask(answers: dict[str, str], name: str, http: httpx.AsyncClient) -> None:
    answers[name] = await _role(http, SAMPLE_TIMEOUT_S)


async def series(ttl: int, runs: int, fault: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp_name:
        tmp = Path(tmp_name)
        async with open_etcd(tmp) as etcd:
            results = [await one_run(etcd, ttl, tmp, i, fault) for i in range(runs)]
    failovers = [r["failover_s"] for r in results]
    return {
        "ttl_s": ttl,
        "fault": fault,
        "runs": runs,
        "failover_s": percentiles(failovers),
        "failover_each_s": [round(f, 3) for f in failovers],
        "samples": sum(r["samples"] for r in results),
        "two_leader_samples": sum(r["two_leader_samples"] for r in results),
        "after_wake": {key: sum(r["after_wake"][key] for r in results)
                       for key in ("samples", "two_leader_samples", "old_leader_answered")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ttl", type=int, action="append",
                        help="lease TTL in whole seconds (repeatable; default 10 and 3)")
    parser.add_argument("--fault", choices=("kill", "freeze"), action="append",
                        help="what happens to the leader (repeatable; default both)")
    args = parser.parse_args()
    if etcd_binary() is None:
        sys.exit("bench_failover: no etcd binary (apt-get install etcd-server)")
    ttls = args.ttl or ([2] if args.quick else [10, 3])
    runs = 1 if args.quick else args.runs
    faults = args.fault or ["kill", "freeze"]
    all_series = [trio.run(series, t, runs, fault) for t in ttls for fault in faults]
    out = {"benchmark": "failover", "machine": machine_facts(), "series": all_series}
    summary = []
    for s in all_series:
        f = s["failover_s"]
        line = (f"TTL {s['ttl_s']} s, {s['fault']}, {s['runs']} runs: failover p50 "
                f"{f['p50']:.2f} s, min {f['min']:.2f} s, max {f['max']:.2f} s; two-leader "
                f"samples {s['two_leader_samples']} of {s['samples']}")
        if s["fault"] == "freeze":
            w = s["after_wake"]
            line += (f" ({w['two_leader_samples']} of {w['samples']} after the wake, the old "
                     f"leader answering in {w['old_leader_answered']})")
        summary.append(line)
    print_result(out, summary, as_json=args.json)


if __name__ == "__main__":
    main()
