"""What the conductor knows of its loops and of codexd: the records its probes and loops keep,
read by the views (``/v1/status``, the status page, ``/metrics``) and the status-api."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from codexd_trio.base.contracts import ActiveTurn, CodexdStatus, now_iso
from codexd_trio.client import CodexdClient, CodexdUnavailable


@dataclass
class LoopInfo:
    interval_s: float
    runs: int = 0
    last_run_at: str | None = None
    # A leader-only loop runs inside the lease's fence; the token it last ran under.
    fenced: bool = False
    fence_token: int | None = None

    def tick(self) -> None:
        self.runs += 1
        self.last_run_at = now_iso()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"interval_s": self.interval_s, "runs": self.runs,
                               "last_run_at": self.last_run_at}
        if self.fenced:
            out.update(fenced=True, fence_token=self.fence_token)
        return out


# How often the heartbeat checks codexd's GET /metrics (for /v1/status and the status page).
METRICS_CHECK_EVERY_S = 60.0


@dataclass
class MetricsHealth:
    """Whether a daemon's ``GET /metrics`` answers with its own metric families."""

    ok: bool = False
    checked_at: str | None = None
    error: str | None = None
    families: int | None = None


def count_families(text: str, prefix: str) -> int:
    """How many ``<prefix>_*`` metric families a Prometheus text answer declares."""
    return sum(
        1 for line in text.splitlines()
        if line.startswith("# TYPE ") and line[7:].startswith(prefix + "_")
    )


async def check_metrics(client: CodexdClient, *, timeout_s: float = 3.0) -> MetricsHealth:
    """Check codexd's ``GET /metrics`` now (for the status page); never raises."""
    checked = now_iso()
    try:
        with trio.fail_after(timeout_s):
            answer = await client.request("GET", "/metrics")
    except (CodexdUnavailable, trio.TooSlowError) as exc:
        return MetricsHealth(False, checked, str(exc) or "codexd did not answer in time")
    families = count_families(answer.text, "codexd")
    if answer.status_code != 200:
        return MetricsHealth(False, checked, f"HTTP {answer.status_code}")
    if not families:
        return MetricsHealth(False, checked, "no codexd_* metrics in the answer")
    return MetricsHealth(True, checked, None, families)


@dataclass
class CodexdProbe:
    """The last thing the conductor learned about codexd."""

    reachable: bool = False
    checked_at: str | None = None
    error: str | None = None
    status: CodexdStatus | None = None


def active_turns(probe: CodexdProbe) -> list[ActiveTurn] | None:
    """codexd's ``activeTurns`` (``None`` when codexd's status is unknown)."""
    if probe.status is None:
        return None
    return list(probe.status.snapshot.activeTurns)
