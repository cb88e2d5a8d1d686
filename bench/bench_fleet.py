"""The fleet's merged session list: ``GET /v1/fleet/sessions?limit=100`` across 3 nodes with
10 000 sessions each (issue 28's goal: p50 ≤ 50 ms on loopback).

Starts a one-member etcd, the scripted model and, per node, a real codexd (real codex child)
and a conductor with ``--fleet`` on the etcd (all on loopback). The sessions are synthesised:
each node's ``state/codexd/session-registry.json`` is written before its codexd starts with
``--sessions`` real :class:`~codexd_trio.base.contracts.Session` records (their threads do not
exist, which a list does not touch), their ``updatedAt`` spread over an hour and interleaved
across nodes, so every merged page takes sessions from every node. 30 000 creates through Codex
would take the machine many minutes and measure Codex, not the list.

Timed, one request at a time over a keep-alive connection to node 0's conductor, client wall
time: the first page, and a walk of consecutive pages with ``nextCursor`` (deep pages cost the
same as the first: each node pages from the key). For scale, one node's own page through its
conductor (``/v1/codex/sessions?order=activity&limit=100``).

    .venv/bin/python -m bench.bench_fleet [--nodes 3] [--sessions 10000] [--requests 300]
        [--quick] [--json]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from bench.bench_conductor_proxy import daemon
from bench.common import (
    add_common_args,
    bench_dir,
    codex_binary,
    machine_facts,
    percentiles,
    print_result,
)
from codexd_trio.base.contracts import Session, SessionRegistry
from codexd_trio.testing import codex_child_env, open_scripted_model, temporary_codex_home
from tests.etcd_fixture import etcd_binary, free_port, open_etcd

HANG_GUARD_S = 600.0
GOAL_P50_MS = 50.0
TOKEN = "bench-fleet-token"


def make_registry(path: Path, node: int, nodes: int, count: int, cwd: str) -> None:
    """``count`` sessions for node ``node`` of ``nodes``, ``updatedAt`` interleaved."""
    start = datetime(2026, 12, 1, tzinfo=UTC)
    sessions = []
    for index in range(count):
        at = (start + timedelta(milliseconds=(index * nodes + node) * 120)).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        sessions.append(Session(
            sessionId=f"session-{uuid.uuid4()}", threadId=str(uuid.uuid4()),
            status="closed" if index % 10 == 0 else "active", cwd=cwd, model="mock-model",
            approvalPolicy="never", sandbox="read-only", createdAt=at, updatedAt=at,
            lastTurnStatus="completed", lastTurnOutput=f"answer {index}", turnCount=1,
            threadPersisted=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(SessionRegistry(sessions=sessions)))


async def _timed(http: httpx.AsyncClient, path: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    answer = await http.get(path)
    elapsed = (time.perf_counter() - t0) * 1000
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text[:500]}")
    return elapsed, answer.json()["data"]


async def run(nodes: int, count: int, requests: int, keep: bool) -> dict[str, Any]:
    binary = codex_binary()
    with trio.fail_after(HANG_GUARD_S), bench_dir("fleet", keep=keep) as work:
        token = work / "token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        async with AsyncExitStack() as stack:
            model = await stack.enter_async_context(open_scripted_model())
            home = stack.enter_context(temporary_codex_home(model.base_url))
            etcd = await stack.enter_async_context(open_etcd(work))
            env = {k: v for k, v in codex_child_env(home, binary).items()
                   if not k.startswith("BAA_")}
            bases = []
            for node in range(nodes):
                root = work / f"n{node}"
                make_registry(root / "state" / "codexd" / "session-registry.json", node, nodes,
                              count, str(work))
                codexd = await stack.enter_async_context(daemon(
                    [sys.executable, "-m", "codexd_trio", "start",
                     "--local-api-base", "http://127.0.0.1:0", "--logs-dir", str(root / "logs"),
                     "--state-dir", str(root / "state"), "--server-command", str(binary),
                     "--server-cwd", str(work)], env, root / "codexd.log"))
                base = f"http://127.0.0.1:{free_port()}"
                await stack.enter_async_context(daemon(
                    [sys.executable, "-m", "conductor_trio", "start", "--local-api", base,
                     "--advertise-url", base, "--codexd-base", codexd["url"],
                     "--state-dir", str(root / "state"), "--node-id", f"n{node}",
                     "--lease-store", f"etcd://{etcd.endpoint}", "--lease-ttl", "5",
                     "--fleet", "--token-file", str(token)], env, root / "conductor.log"))
                bases.append(base)
            http = await stack.enter_async_context(httpx.AsyncClient(
                base_url=bases[0], timeout=30,
                headers={"Authorization": f"Bearer {TOKEN}"}))
            with trio.fail_after(60):
                while True:  # other processes registering: bounded polling
                    listed = (await http.get("/v1/fleet/nodes")).json()["data"]["nodes"]
                    if len(listed) == nodes:
                        break
                    await trio.sleep(0.1)
            for _ in range(max(5, requests // 20)):  # warm the connections and caches
                await _timed(http, "/v1/fleet/sessions?limit=100")
            first = [(await _timed(http, "/v1/fleet/sessions?limit=100"))[0]
                     for _ in range(requests)]
            walk: list[float] = []
            cursor: str | None = None
            seen: set[str] = set()
            for _ in range(requests):
                path = "/v1/fleet/sessions?limit=100" + (f"&cursor={cursor}" if cursor else "")
                elapsed, data = await _timed(http, path)
                walk.append(elapsed)
                ids = [s["sessionId"] for s in data["sessions"]]
                if seen.intersection(ids):
                    raise RuntimeError("a session was listed twice while paging")
                seen.update(ids)
                cursor = data["nextCursor"]
                if cursor is None:
                    break
            nodes_per_page = len({s["node"] for s in data["sessions"]})
            one_node = [(await _timed(http, "/v1/codex/sessions?order=activity&limit=100"))[0]
                        for _ in range(requests)]
            nodes_ms = [(await _timed(http, "/v1/fleet/nodes"))[0]
                        for _ in range(max(10, requests // 10))]
    first_p = percentiles(first)
    return {
        "benchmark": "fleet",
        "nodes": nodes,
        "sessions_per_node": count,
        "requests": requests,
        "first_page_ms": first_p,
        "walk_pages": len(walk),
        "walk_page_ms": percentiles(walk),
        "walk_sessions_seen": len(seen),
        "nodes_on_last_page": nodes_per_page,
        "one_node_page_ms": percentiles(one_node),
        "fleet_nodes_ms": percentiles(nodes_ms),
        "goal_p50_ms": GOAL_P50_MS,
        "goal_met": first_p["p50"] <= GOAL_P50_MS,
    }


def summary(result: dict[str, Any]) -> list[str]:
    def ms(stats: dict[str, float]) -> str:
        return f"p50 {stats['p50']:.1f} / p90 {stats['p90']:.1f} / p99 {stats['p99']:.1f} ms"

    return [
        f"GET /v1/fleet/sessions?limit=100 across {result['nodes']} nodes × "
        f"{result['sessions_per_node']} sessions, {result['requests']} requests",
        f"  first page:            {ms(result['first_page_ms'])}",
        f"  walking the cursor:    {ms(result['walk_page_ms'])} ({result['walk_pages']} pages, "
        f"{result['walk_sessions_seen']} sessions, none twice)",
        f"  one node's own page:   {ms(result['one_node_page_ms'])}",
        f"  GET /v1/fleet/nodes:   {ms(result['fleet_nodes_ms'])}",
        f"  goal p50 <= {result['goal_p50_ms']:.0f} ms: "
        f"{'met' if result['goal_met'] else 'NOT met'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions per node")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per series")
    add_common_args(parser)
    args = parser.parse_args()
    if etcd_binary() is None:
        sys.exit("bench_fleet: no etcd binary (apt-get install etcd-server)")
    nodes, count, requests = ((2, 300, 20) if args.quick
                              else (args.nodes, args.sessions, args.requests))
    result = trio.run(run, nodes, count, requests, args.keep)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
