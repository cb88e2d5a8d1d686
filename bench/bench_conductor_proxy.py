"""Latency the conductor's proxy adds over calling codexd directly, and the conductor's RSS.

Starts the scripted model, a real codexd (with the real codex child) and a conductor, all on
port 0, then times ``GET /v1/codexd/sessions`` (direct) against ``GET /v1/codex/sessions``
(through the conductor), interleaved, over one keep-alive connection each.

    .venv/bin/python bench/bench_conductor_proxy.py [--requests 2000]

Prints one JSON object: median and p99 (ms) of each, the added median/p99, and the conductor's
RSS (MiB) when idle after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
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


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(requests: int) -> dict[str, Any]:
    binary = resolve_server_command()
    work = Path(tempfile.mkdtemp(prefix="bench-conductor-"))
    try:
        return await _run(binary, work, requests)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _run(binary: Path, work: Path, requests: int) -> dict[str, Any]:
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
                    for i in range(requests + 100):
                        for name, client, path in (
                            ("direct", direct, "/v1/codexd/sessions"),
                            ("proxied", proxied, "/v1/codex/sessions"),
                        ):
                            start = time.perf_counter()
                            response = await client.get(path)
                            elapsed = (time.perf_counter() - start) * 1000
                            assert response.status_code == 200
                            if i >= 100:  # warm-up
                                times[name].append(elapsed)
                    await trio.sleep(2)  # let the conductor go idle before reading its RSS
                    rss = _rss_mib(conductor["pid"])
    out: dict[str, Any] = {"requests": requests}
    for name, values in times.items():
        out[name] = {
            "median_ms": round(statistics.median(values), 3),
            "p99_ms": round(_pct(values, 0.99), 3),
        }
    out["added_median_ms"] = round(out["proxied"]["median_ms"] - out["direct"]["median_ms"], 3)
    out["added_p99_ms"] = round(out["proxied"]["p99_ms"] - out["direct"]["p99_ms"], 3)
    out["conductor_idle_rss_mib"] = round(rss, 1)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    print(json.dumps(trio.run(main, parser.parse_args().requests), indent=2))
