"""What request ids, metrics and the access log cost: ``GET /v1/codexd/status`` with and without
the :class:`~codexd_trio.web.observe.Observe` middleware, side by side in one run.

One in-process codexd :class:`~codexd_trio.core.service.Daemon` (no child: ``status`` does not need
it) is served twice by Hypercorn in this process: once by the app as built (``Observe`` →
``CallerGuard`` → Quart) and once by the same app with ``Observe`` taken off (``CallerGuard`` →
Quart; no request id, no metrics, no access line). Requests alternate between the two, one at a
time over one keep-alive connection each, so both see the same machine load. Logging goes to a
JSON handler writing to /dev/null (the access line is formatted and written, as in production).
Times are client-side wall times (httpx in the same process, so they include the client).

    .venv/bin/python -m bench.bench_observe_overhead [--requests 2000] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

import httpx
import trio

from bench.common import (
    add_common_args,
    bench_dir,
    fmt_ms,
    machine_facts,
    percentiles,
    print_result,
)
from codexd_trio.base.logsetup import JsonFormatter
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.service import Daemon
from codexd_trio.web.app import serve_app
from codexd_trio.web.observe import Observe
from codexd_trio.web.routes import create_app

HANG_GUARD_S = 300.0


async def measure(requests: int) -> dict[str, Any]:
    with bench_dir("observe") as work, open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        daemon = Daemon(CodexdConfig(local_api_base="http://127.0.0.1:0",
                                     logs_dir=work / "logs", state_dir=work / "state"))
        try:
            with_observe = create_app(daemon)
            without = create_app(daemon)
            wrapped: Any = without
            assert isinstance(wrapped.asgi_app, Observe)
            wrapped.asgi_app = wrapped.asgi_app.app  # the CallerGuard underneath
            samples: dict[str, list[float]] = {"with": [], "without": []}
            async with trio.open_nursery() as nursery:
                urls = {
                    "with": await nursery.start(serve_app, with_observe, "127.0.0.1", 0),
                    "without": await nursery.start(serve_app, without, "127.0.0.1", 0),
                }
                async with httpx.AsyncClient(base_url=urls["with"]) as a, \
                        httpx.AsyncClient(base_url=urls["without"]) as b:
                    clients = {"with": a, "without": b}
                    for _ in range(max(20, requests // 10)):  # warm-up, not recorded
                        for client in clients.values():
                            await client.get("/v1/codexd/status")
                    for index in range(requests):
                        # Alternate which goes first, so neither always follows the other.
                        order = ("with", "without") if index % 2 else ("without", "with")
                        for name in order:
                            t0 = time.perf_counter()
                            response = await clients[name].get("/v1/codexd/status")
                            samples[name].append((time.perf_counter() - t0) * 1000)
                            if response.status_code != 200:
                                raise RuntimeError(f"{name}: HTTP {response.status_code}")
                    request_id = (await a.get("/healthz")).headers.get("x-request-id")
                    if not request_id or "x-request-id" in (await b.get("/healthz")).headers:
                        raise RuntimeError("the two apps do not differ by Observe")
                nursery.cancel_scope.cancel(reason="benchmark done")
        finally:
            daemon.close()
            root.removeHandler(handler)
    stats = {name: percentiles(values) for name, values in samples.items()}
    return {
        "benchmark": "observe_overhead",
        "requests": requests,
        "with_ms": stats["with"],
        "without_ms": stats["without"],
        "p50_overhead_ms": stats["with"]["p50"] - stats["without"]["p50"],
        "mean_overhead_ms": stats["with"]["mean"] - stats["without"]["mean"],
    }


async def main(args: argparse.Namespace) -> None:
    with trio.fail_after(HANG_GUARD_S):
        result = await measure(100 if args.quick else args.requests)
    result["machine"] = machine_facts()
    print_result(
        result,
        [
            f"GET /v1/codexd/status × {result['requests']} each, alternating:",
            f"  with Observe (request id, metrics, access log): {fmt_ms(result['with_ms'])}",
            f"  without:                                        {fmt_ms(result['without_ms'])}",
            f"  p50 overhead {result['p50_overhead_ms']:.3f} ms, "
            f"mean overhead {result['mean_overhead_ms']:.3f} ms",
        ],
        as_json=args.json,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    add_common_args(parser)
    trio.run(main, parser.parse_args())
