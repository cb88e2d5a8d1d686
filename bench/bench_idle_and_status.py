"""Idle memory of codexd, and ``status`` / session reads with 10 000 sessions in the registry.

Part 1: a fresh codexd (empty state) starts, its child initializes, then ``--settle`` seconds pass
with no traffic; the resident set (``VmRSS``) of the codexd Python process and, separately, of
its codex child is read from ``/proc``.

Part 2: ``state/codexd/session-registry.json`` is written beforehand with ``--sessions``
sessions (real :class:`~codexd_trio.base.contracts.Session` records; their threads do not
exist, which does not matter for reads); codexd starts on it, settles, and then serves
``--requests`` ×
``GET /v1/codexd/status`` and ``--requests`` × ``GET /v1/codexd/sessions/{id}`` (random ids),
one at a time over one keep-alive connection. ``GET /healthz`` is timed the same way as the
floor of the HTTP stack (httpx client + hypercorn) and a few ``GET /v1/codexd/sessions`` (the
whole list) for scale. Times are client-side wall times including the client's own parsing of
the HTTP response (not of the JSON).

    .venv/bin/python -m bench.bench_idle_and_status [--sessions 10000] [--requests 500]
        [--settle 3] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import trio

from bench.common import (
    add_common_args,
    bench_dir,
    fmt_ms,
    machine_facts,
    percentiles,
    print_result,
    rss_mb,
    running_codexd,
)
from codexd_trio.base.contracts import Session, SessionRegistry, TurnError, now_iso
from codexd_trio.client import CodexdClient
from codexd_trio.testing import open_scripted_model, temporary_codex_home

HANG_GUARD_S = 300.0


def make_registry(path: Path, count: int, cwd: str) -> list[str]:
    """Write a registry of ``count`` sessions (a realistic mix of states); return their ids."""
    at = now_iso()
    sessions: list[Session] = []
    for index in range(count):
        ran = index % 4 != 0
        sessions.append(
            Session(
                sessionId=f"session-{uuid.uuid4()}",
                threadId=str(uuid.uuid4()),
                status="closed" if index % 10 == 0 else "active",
                cwd=cwd,
                model="mock-model",
                approvalPolicy="never",
                sandbox="read-only",
                createdAt=at,
                updatedAt=at,
                lastTurnId=str(uuid.uuid4()) if ran else None,
                lastTurnStatus=("failed" if index % 7 == 0 else "completed") if ran else None,
                lastTurnStartedAt=at if ran else None,
                lastTurnCompletedAt=at if ran else None,
                lastTurnError=TurnError(code="other", message="scripted failure")
                if ran and index % 7 == 0
                else None,
                lastTurnOutput=f"answer number {index}: ok" if ran else None,
                turnCount=(index % 5) if ran else 0,
                threadPersisted=ran,
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(SessionRegistry(sessions=sessions)))
    return [s.sessionId for s in sessions]


async def time_gets(client: CodexdClient, paths: list[str]) -> dict[str, float]:
    """Milliseconds per ``GET`` of each path in turn (each must answer 200)."""
    samples: list[float] = []
    for path in paths:
        t0 = time.perf_counter()
        response = await client.request("GET", path)
        samples.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text}")
    return percentiles(samples)


async def idle_rss(home: Path, work: Path, settle: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with running_codexd(work, home) as codexd, CodexdClient(codexd.url) as client:
        ready_s = time.perf_counter() - t0
        child_pid = int((await client.status())["snapshot"]["daemon"]["child"]["pid"])
        # A deliberate quiet period (not a readiness wait): let allocations settle.
        await trio.sleep(settle)
        return {
            "startup_s": ready_s,
            "codexd_rss_mb": rss_mb(codexd.pid),
            "codex_child_rss_mb": rss_mb(child_pid),
        }


async def many_sessions(
    home: Path, work: Path, count: int, requests: int, settle: float
) -> dict[str, Any]:
    ids = make_registry(work / "state" / "codexd" / "session-registry.json", count, str(work))
    registry_bytes = (work / "state" / "codexd" / "session-registry.json").stat().st_size
    rng = random.Random(1)
    t0 = time.perf_counter()
    async with running_codexd(work, home) as codexd, CodexdClient(codexd.url) as client:
        ready_s = time.perf_counter() - t0
        status = await client.status()
        seen = int(status["snapshot"]["sessions"]["count"])
        if seen != count:
            raise RuntimeError(f"codexd reports {seen} sessions, {count} were written")
        await trio.sleep(settle)
        rss_settled = rss_mb(codexd.pid)
        # Warm the connection and whatever codexd caches before timing.
        await time_gets(client, ["/healthz", "/v1/codexd/status"] * 5)
        healthz = await time_gets(client, ["/healthz"] * requests)
        status_ms = await time_gets(client, ["/v1/codexd/status"] * requests)
        session_ms = await time_gets(
            client, [f"/v1/codexd/sessions/{rng.choice(ids)}" for _ in range(requests)]
        )
        listing = await time_gets(client, ["/v1/codexd/sessions"] * max(1, requests // 50))
        size = len((await client.request("GET", "/v1/codexd/status")).content)
        return {
            "sessions": count,
            "registry_bytes": registry_bytes,
            "startup_s": ready_s,
            "codexd_rss_mb": rss_settled,
            "codexd_rss_after_requests_mb": rss_mb(codexd.pid),
            "status_body_bytes": size,
            "healthz_ms": healthz,
            "status_ms": status_ms,
            "session_ms": session_ms,
            "list_sessions_ms": listing,
        }


async def run(count: int, requests: int, settle: float, keep: bool) -> dict[str, Any]:
    with trio.fail_after(HANG_GUARD_S):
        async with open_scripted_model() as model:
            with (
                bench_dir("idle-status", keep=keep) as work,
                temporary_codex_home(model.base_url) as home,
            ):
                idle = await idle_rss(home, work / "idle", settle)
                many = await many_sessions(home, work / "many", count, requests, settle)
    return {
        "benchmark": "idle_and_status",
        "settle_s": settle,
        "requests": requests,
        "idle": idle,
        "many": many,
        "goal_idle_rss_met": (idle["codexd_rss_mb"] or 0) <= 60.0,
        "goal_status_p99_met": many["status_ms"]["p99"] <= 10.0,
    }


def summary(result: dict[str, Any]) -> list[str]:
    idle, many = result["idle"], result["many"]
    return [
        f"idle codexd after {result['settle_s']:g} s without traffic "
        f"(ready in {idle['startup_s']:.2f} s): codexd {idle['codexd_rss_mb']:.1f} MiB, "
        f"codex child {idle['codex_child_rss_mb']:.1f} MiB "
        f"(goal codexd <= 60 MB: {'met' if result['goal_idle_rss_met'] else 'NOT met'})",
        f"with {many['sessions']} sessions ({many['registry_bytes'] / 1e6:.1f} MB registry, "
        f"ready in {many['startup_s']:.2f} s): codexd {many['codexd_rss_mb']:.1f} MiB settled, "
        f"{many['codexd_rss_after_requests_mb']:.1f} MiB after the requests",
        f"  GET /healthz (floor)        x{many['healthz_ms']['n']}: "
        f"{fmt_ms(many['healthz_ms'], 'p50', 'p99')}",
        f"  GET /v1/codexd/status       x{many['status_ms']['n']}: "
        f"{fmt_ms(many['status_ms'], 'p50', 'p99')} ({many['status_body_bytes']} bytes) "
        f"(goal p99 <= 10 ms: {'met' if result['goal_status_p99_met'] else 'NOT met'})",
        f"  GET /v1/codexd/sessions/ID  x{many['session_ms']['n']}: "
        f"{fmt_ms(many['session_ms'], 'p50', 'p99')}",
        f"  GET /v1/codexd/sessions     x{many['list_sessions_ms']['n']}: "
        f"{fmt_ms(many['list_sessions_ms'], 'p50', 'max')}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--settle", type=float, default=3.0, help="quiet seconds before RSS")
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        count, requests, settle = 50, 20, 0.2
    else:
        count, requests, settle = args.sessions, args.requests, args.settle
    result = trio.run(run, count, requests, settle, args.keep)
    result["machine"] = machine_facts()
    print_result(result, summary(result), as_json=args.json)


if __name__ == "__main__":
    main()
