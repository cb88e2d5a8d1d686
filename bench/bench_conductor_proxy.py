"""Latency the conductor's proxy adds over calling codexd directly, and the conductor's RSS.

Starts the scripted model, a real codexd (with the real codex child) and a conductor, all on
port 0, then times ``GET /v1/codexd/sessions`` (direct) against ``GET /v1/codex/sessions``
(through the conductor), interleaved, over one keep-alive connection each.

    .venv/bin/python -m bench.bench_conductor_proxy [--requests 2000] [--quick] [--json]

Reports the percentiles (ms) of each path and of the **paired differences**: request i through
the conductor minus request i direct, taken back to back. A difference of two p99s says little
(the two tails need not come from the same moments); the distribution of paired differences is
what the proxy adds to one request. Also the conductor's RSS (MiB) when idle after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.common import add_common_args, fmt_ms, machine_facts, percentiles, print_result
from codexd_trio.base.codexbin import resolve_server_command
from codexd_trio.testing import codex_child_env, open_scripted_model, temporary_codex_home


@asynccontextmanager
async def daemon(argv: list[str], env: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
    proc = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, env=env, start_new_session=True
    )
    assert proc.stdout is not None
    try:
        buf = b""
        with trio.fail_after(60):
            while b"\n" not in buf:
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"{argv[2]} exited before its ready line")
                buf += chunk
        yield json.loads(buf.split(b"\n", 1)[0])
    finally:
        with trio.CancelScope(shield=True):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with trio.move_on_after(10):
                await proc.wait()
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            await proc.stdout.aclose()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(requests: int, warmup: int) -> dict[str, Any]:
    binary = resolve_server_command()
    work = Path(tempfile.mkdtemp(prefix="bench-conductor-"))
    try:
        return await _run(binary, work, requests, warmup)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _run(binary: Path, work: Path, requests: int, warmup: int) -> dict[str, Any]:
    async with open_scripted_model() as model:
        with temporary_codex_home(model.base_url) as home:
            env = {
                k: v for k, v in codex_child_env(home, binary).items() if not k.startswith("BAA_")
            }
            codexd_argv = [
                sys.executable,
                "-m",
                "codexd_trio",
                "start",
                "--local-api-base",
                "http://127.0.0.1:0",
                "--logs-dir",
                str(work / "logs"),
                "--state-dir",
                str(work / "state"),
                "--server-command",
                str(binary),
            ]
            async with daemon(codexd_argv, env) as codexd:
                conductor_argv = [
                    sys.executable,
                    "-m",
                    "conductor_trio",
                    "start",
                    "--local-api",
                    "http://127.0.0.1:0",
                    "--codexd-base",
                    codexd["url"],
                    "--state-dir",
                    str(work / "state"),
                ]
                async with (
                    daemon(conductor_argv, env) as conductor,
                    httpx.AsyncClient(base_url=codexd["url"]) as direct,
                    httpx.AsyncClient(base_url=conductor["url"]) as proxied,
                ):
                    for _ in range(3):
                        await direct.post("/v1/codexd/sessions", json={})
                    times: dict[str, list[float]] = {"direct": [], "proxied": []}
                    for i in range(requests + warmup):
                        for name, client, path in (
                            ("direct", direct, "/v1/codexd/sessions"),
                            ("proxied", proxied, "/v1/codex/sessions"),
                        ):
                            start = time.perf_counter()
                            response = await client.get(path)
                            elapsed = (time.perf_counter() - start) * 1000
                            assert response.status_code == 200
                            if i >= warmup:
                                times[name].append(elapsed)
                    await trio.sleep(2)  # let the conductor go idle before reading its RSS
                    rss = _rss_mib(conductor["pid"])
    # Pair i: the proxied request i right after the direct request i, on the same machine
    # state; the difference is what the conductor added to that one request.
    paired = [p - d for d, p in zip(times["direct"], times["proxied"], strict=True)]
    return {
        "benchmark": "conductor_proxy",
        "requests": requests,
        "direct_ms": percentiles(times["direct"]),
        "proxied_ms": percentiles(times["proxied"]),
        "added_ms": percentiles(paired),
        "conductor_idle_rss_mib": round(rss, 1),
    }


def summary(result: dict[str, Any]) -> list[str]:
    keys = ("p50", "p90", "p99", "max")
    return [
        f"conductor proxy, {result['requests']} GET /sessions per path, interleaved",
        f"  direct to codexd      : {fmt_ms(result['direct_ms'], *keys)}",
        f"  through the conductor : {fmt_ms(result['proxied_ms'], *keys)}",
        f"  added (paired, i - i) : {fmt_ms(result['added_ms'], *keys)}",
        f"  conductor idle RSS {result['conductor_idle_rss_mib']} MiB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    add_common_args(parser)
    args = parser.parse_args()
    requests, warmup = (30, 5) if args.quick else (args.requests, args.warmup)
    result = trio.run(measure, requests, warmup)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
