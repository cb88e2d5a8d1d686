"""What one request to codexd costs its Python client, by the way the client sends it.

One codexd (its Codex child answering a scripted model, which these requests never reach), and
three clients in this process, each request sent by all three in a rotating order per round:

* ``httpx``: an ``httpx.AsyncClient`` with httpx's own transport (what the ``CodexdClient``
  sent through before issue 27's client change, and still does over HTTPS);
* ``client``: the ``CodexdClient`` (httpx above the h11 pool, ``PoolTransport``);
* ``pool``: the ``UpstreamPool`` alone (the conductor's proxy; no httpx at all).

Two requests: ``GET /healthz`` (answered by Quart) and a turn for a session that does not
exist (``POST /v1/codexd/turn`` → 404, answered by the turn fast path without touching Codex):
what a turn's 202 costs the client, less codexd's work on a real turn. Reported per path:
latency (p50/p90 of each round's request, ms) and this process's CPU per request (the client's
own work: codexd runs in another process).

    .venv/bin/python -m bench.bench_client [--requests 2000] [--warmup 200] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import msgspec
import trio

from bench.common import (
    add_common_args,
    bench_dir,
    codex_binary,
    machine_facts,
    percentiles,
    print_result,
    running_codexd,
)
from codexd_trio.client import CodexdClient, UpstreamPool
from codexd_trio.testing import open_scripted_model, temporary_codex_home

PATHS = ("httpx", "client", "pool")
KINDS = ("get", "turn")
TURN_BODY = msgspec.json.encode({"sessionId": "no-such-session", "input": "say ok"})
JSON = {"content-type": "application/json"}
EXPECTED = {"get": 200, "turn": 404}

Send = Callable[[], Awaitable[int]]


def senders(plain: httpx.AsyncClient, client: CodexdClient, pool: UpstreamPool
            ) -> dict[str, dict[str, Send]]:
    """For each path and kind, a call that sends one request and returns the status."""

    async def httpx_get() -> int:
        return (await plain.get("/healthz")).status_code

    async def httpx_turn() -> int:
        return (await plain.post("/v1/codexd/turn", content=TURN_BODY, headers=JSON)).status_code

    async def client_get() -> int:
        return (await client.request("GET", "/healthz")).status_code

    async def client_turn() -> int:
        return (await client.request("POST", "/v1/codexd/turn", content=TURN_BODY)).status_code

    async def pool_get() -> int:
        return (await pool.request("GET", "/healthz")).status

    async def pool_turn() -> int:
        return (await pool.request("POST", "/v1/codexd/turn", headers=list(JSON.items()),
                                   body=TURN_BODY)).status

    return {"httpx": {"get": httpx_get, "turn": httpx_turn},
            "client": {"get": client_get, "turn": client_turn},
            "pool": {"get": pool_get, "turn": pool_turn}}


async def run(requests: int, warmup: int, keep: bool) -> dict[str, Any]:
    latency: dict[str, dict[str, list[float]]] = {k: {p: [] for p in PATHS} for k in KINDS}
    cpu = {p: 0.0 for p in PATHS}
    async with open_scripted_model() as model:
        with bench_dir("client", keep=keep) as work, temporary_codex_home(model.base_url) as home:
            async with AsyncExitStack() as stack:
                codexd = await stack.enter_async_context(running_codexd(
                    work, home, "--server-command", str(codex_binary())))
                plain = await stack.enter_async_context(httpx.AsyncClient(base_url=codexd.url))
                client = await stack.enter_async_context(CodexdClient(codexd.url))
                pool = UpstreamPool(codexd.url, timeout=10.0)
                stack.push_async_callback(pool.aclose)
                calls = senders(plain, client, pool)
                for index in range(warmup + requests):
                    shift = index % len(PATHS)
                    for kind in KINDS:
                        for path in PATHS[shift:] + PATHS[:shift]:
                            cpu_start, start = time.process_time(), time.perf_counter()
                            status = await calls[path][kind]()
                            elapsed = time.perf_counter() - start
                            if status != EXPECTED[kind]:
                                raise RuntimeError(f"{path} {kind}: codexd answered {status}")
                            if index >= warmup:
                                latency[kind][path].append(elapsed * 1000)
                                cpu[path] += time.process_time() - cpu_start
    result: dict[str, Any] = {"benchmark": "client", "requests": requests, "warmup": warmup}
    for kind in KINDS:
        result[kind] = {path: percentiles(latency[kind][path]) for path in PATHS}
    result["client_cpu_ms_per_request"] = {
        path: cpu[path] * 1000 / (requests * len(KINDS)) for path in PATHS}
    return result


def summary(result: dict[str, Any]) -> list[str]:
    lines = [f"one request to codexd by its Python client, {result['requests']} rounds "
             f"(after {result['warmup']}), every path each round; ms"]
    for kind, label in (("get", "GET /healthz"), ("turn", "POST /v1/codexd/turn (404)")):
        lines.append(f"  {label}: " + ", ".join(
            f"{path} p50 {result[kind][path]['p50']:.3f} p90 {result[kind][path]['p90']:.3f}"
            for path in PATHS))
    lines.append("  client CPU per request: " + ", ".join(
        f"{path} {value:.3f}" for path, value in result["client_cpu_ms_per_request"].items()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured rounds first")
    add_common_args(parser)
    args = parser.parse_args()
    requests, warmup = (5, 1) if args.quick else (args.requests, args.warmup)
    result = trio.run(run, requests, warmup, args.keep)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
