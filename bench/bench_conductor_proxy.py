"""Latency the conductor's proxy adds over calling codexd directly, and the conductor's RSS.

Starts the scripted model, a real codexd (with the real codex child) and a conductor, all on
port 0. Each round sends the same request directly to codexd (``/v1/codexd/...``) and through
the conductor (``/v1/codex/...``), back to back in a rotating order, over one keep-alive
connection per path, for two kinds of request:

* ``get``: ``GET /v1/codexd/sessions/{id}`` (a small JSON answer, ~1 kB);
* ``post``: ``POST /v1/codexd/sessions/{id}/close`` of a closed session (a POST with a JSON
  body that codexd answers from memory: no child, no disk);
* ``page`` (with ``--page-sessions N``): ``GET /v1/codexd/sessions?limit=500`` over a registry
  of N sessions written before codexd starts (a large answer: ~300 kB for 500 sessions).

The figure is the distribution of the **paired differences** (through the conductor minus
direct, same round): a difference of two medians or two p99s hides how the two move together
under a shared machine's load. ``--baseline DIR`` adds a second conductor whose packages come
from ``DIR`` (another version, e.g. ``git archive main codexd_trio conductor_trio
codex-version.txt | tar -x -C DIR``), measured in the same rounds. ``--profile FILE`` records
the conductor with py-spy (raw collapsed stacks, GIL holders only) during the rounds.

    .venv/bin/python -m bench.bench_conductor_proxy [--requests 2000] [--baseline DIR]
        [--profile FILE] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.bench_idle_and_status import make_registry
from bench.bench_turn_roundtrip import baseline_env, check_baseline
from bench.common import (
    add_common_args,
    bench_dir,
    codex_binary,
    cpu_seconds,
    machine_facts,
    percentiles,
    print_result,
    rss_mb,
)
from codexd_trio.testing import codex_child_env, open_scripted_model, temporary_codex_home

KINDS = ("get", "post")


@asynccontextmanager
async def daemon(argv: list[str], env: dict[str, str], stderr: Path
                 ) -> AsyncIterator[dict[str, Any]]:
    """A daemon in its own process group, its log in ``stderr``; yields its ready line."""
    with open(stderr, "ab") as log:
        proc = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True
        )
    assert proc.stdout is not None
    try:
        buf = b""
        with trio.fail_after(60):
            while b"\n" not in buf:
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"{argv[2]} exited before its ready line: "
                                       f"{stderr.read_text()[-2000:]}")
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


def _profiler(pid: int, path: Path) -> subprocess.Popen[bytes] | None:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        print("py-spy not installed: no profile", file=sys.stderr)
        return None
    return subprocess.Popen(
        [str(spy), "record", "-p", str(pid), "-r", "500", "-f", "raw", "-o", str(path),
         "--nonblocking", "--gil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def _timed(client: httpx.AsyncClient, kind: str, prefix: str, session_id: str) -> float:
    start = time.perf_counter()
    if kind == "get":
        response = await client.get(f"{prefix}/sessions/{session_id}")
    elif kind == "page":
        response = await client.get(f"{prefix}/sessions", params={"limit": "500"})
    else:
        response = await client.post(f"{prefix}/sessions/{session_id}/close", json={})
    elapsed = (time.perf_counter() - start) * 1000
    assert response.status_code == 200, response.text
    return elapsed


async def run(requests: int, warmup: int, baseline: Path | None, profile: Path | None,
              keep: bool, page_sessions: int = 0) -> dict[str, Any]:
    binary = codex_binary()
    paths = ["direct", "conductor"] + (["baseline"] if baseline is not None else [])
    kinds = KINDS + (("page",) if page_sessions else ())
    times: dict[str, dict[str, list[float]]] = {k: {p: [] for p in paths} for k in kinds}
    rss: dict[str, float | None] = {}
    async with open_scripted_model() as model:
        with bench_dir("proxy", keep=keep) as work, temporary_codex_home(model.base_url) as home:
            env = {k: v for k, v in codex_child_env(home, binary).items()
                   if not k.startswith("BAA_")}
            if page_sessions:
                make_registry(work / "state" / "codexd" / "session-registry.json",
                              page_sessions, str(work))
            async with AsyncExitStack() as stack:
                codexd = await stack.enter_async_context(daemon(
                    [sys.executable, "-m", "codexd_trio", "start", "--local-api-base",
                     "http://127.0.0.1:0", "--logs-dir", str(work / "logs"), "--state-dir",
                     str(work / "state"), "--server-command", str(binary)],
                    env, work / "codexd.stderr.log"))
                pids: dict[str, int] = {}
                clients: dict[str, tuple[httpx.AsyncClient, str]] = {}
                direct = await stack.enter_async_context(httpx.AsyncClient(
                    base_url=codexd["url"]))
                clients["direct"] = (direct, "/v1/codexd")
                for name in paths[1:]:
                    extra = baseline_env(baseline) if name == "baseline" and baseline else {}
                    conductor = await stack.enter_async_context(daemon(
                        [sys.executable, "-m", "conductor_trio", "start", "--local-api",
                         "http://127.0.0.1:0", "--codexd-base", codexd["url"], "--state-dir",
                         str(work / f"state-{name}"), "--node-id", f"bench-{name}"],
                        {**env, **extra}, work / f"{name}.stderr.log"))
                    pids[name] = conductor["pid"]
                    client = await stack.enter_async_context(httpx.AsyncClient(
                        base_url=conductor["url"]))
                    clients[name] = (client, "/v1/codex")
                session = (await direct.post("/v1/codexd/sessions", json={})).json()
                session_id = session["data"]["session"]["sessionId"]
                await direct.post(f"/v1/codexd/sessions/{session_id}/close", json={})
                spy = None
                cpu_before: dict[str, float | None] = {}
                for index in range(warmup + requests):
                    if index == warmup:
                        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                        if profile is not None:
                            spy = _profiler(pids["conductor"], profile)
                    for kind in kinds:
                        shift = index % len(paths)
                        for name in paths[shift:] + paths[:shift]:
                            client, prefix = clients[name]
                            elapsed = await _timed(client, kind, prefix, session_id)
                            if index >= warmup:
                                times[kind][name].append(elapsed)
                cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
                await trio.sleep(2)  # let the conductors go idle before reading their RSS
                rss = {name: rss_mb(pid) for name, pid in pids.items()}
    out: dict[str, Any] = {"benchmark": "conductor_proxy", "requests": requests,
                           "baseline": str(baseline) if baseline else None}
    for kind in kinds:
        measured = times[kind]
        out[kind] = {name: percentiles(values) for name, values in measured.items()}
        for name in paths[1:]:
            added = [p - d for p, d in zip(measured[name], measured["direct"], strict=True)]
            out[kind][f"{name}_added"] = percentiles(added)
    out["conductor_idle_rss_mib"] = rss
    # CPU per proxied request: what a shared machine's load cannot blur (clock ticks: ~10 ms
    # resolution, hence the many requests).
    out["cpu_ms_per_request"] = {
        name: ((after - before) * 1000 / (requests * len(kinds))
               if (after := cpu_after.get(name)) is not None
               and (before := cpu_before.get(name)) is not None else None)
        for name in paths[1:]
    }
    out["goal_met"] = all(out[k]["conductor_added"]["p50"] <= 1.0 for k in KINDS)
    return out


def summary(result: dict[str, Any]) -> list[str]:
    lines = [f"the conductor's proxy, {result['requests']} rounds, each path per round "
             "(paired: through a conductor minus direct, same round)"]
    for kind in (k for k in (*KINDS, "page") if k in result):
        got = result[kind]
        direct = got["direct"]
        lines.append(f"  {kind}: direct p50 {direct['p50']:.2f} / p99 {direct['p99']:.2f} ms")
        for name in ("conductor", "baseline"):
            if f"{name}_added" in got:
                via, added = got[name], got[f"{name}_added"]
                lines.append(
                    f"    via {name:9s} p50 {via['p50']:.2f} / p99 {via['p99']:.2f} ms; added "
                    f"p50 {added['p50']:.2f}, p90 {added['p90']:.2f}, p99 {added['p99']:.2f} ms")
    lines.append(f"  conductor CPU per proxied request (ms): {result['cpu_ms_per_request']}")
    lines.append(f"  idle RSS (MiB): {result['conductor_idle_rss_mib']}; goal <= 1 ms added "
                 f"p50: {'met' if result['goal_met'] else 'NOT met'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured rounds")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a directory holding another version's packages: a second "
                             "conductor, side by side")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the conductor into this file (raw collapsed stacks)")
    parser.add_argument("--page-sessions", type=int, default=0,
                        help="also time a 500-session page over a registry of this many")
    add_common_args(parser)
    args = parser.parse_args()
    requests, warmup = (20, 5) if args.quick else (args.requests, 100)
    if args.baseline is not None:
        check_baseline(args.baseline)
    result = trio.run(run, requests, warmup, args.baseline, args.profile, args.keep,
                      args.page_sessions)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
