"""``GET /v1/codexd/status``: what codexd says about itself, as one msgspec Struct
(:class:`~codexd_trio.base.contracts.CodexdStatus`) that the conductor decodes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from codexd_trio import __version__
from codexd_trio.base.contracts import (
    ActiveTurn,
    ApprovalCounts,
    CodexdStatus,
    DaemonInfo,
    RecentEventsView,
    ServiceInfo,
    SessionCounts,
    StatusSnapshot,
)

if TYPE_CHECKING:
    from codexd_trio.core.service import Daemon


def codexd_status(daemon: Daemon) -> CodexdStatus:
    """The status of ``daemon`` now: O(1) in the number of sessions (O(running turns))."""
    book = daemon.book
    recent = daemon.hub.recent()
    base = daemon.resolved_base_url
    stream = daemon.config.event_stream_path
    return CodexdStatus(
        service=ServiceInfo(
            localApiBase=daemon.config.local_api_base,
            resolvedBaseUrl=base,
            eventStreamPath=stream,
            eventStreamUrl=base.replace("http://", "ws://", 1) + stream if base else None,
        ),
        snapshot=StatusSnapshot(
            identity=daemon.files.identity.value,
            daemon=DaemonInfo(
                started=daemon.started_at is not None and not daemon.stopping,
                startedAt=daemon.started_at,
                pid=os.getpid(),
                version=__version__,
                accepting=daemon.accepting,
                child=daemon.child,
            ),
            sessions=SessionCounts(count=book.count, activeCount=book.active_count),
            activeTurns=[ActiveTurn(**t) for t in book.active_turns()],
            approvals=ApprovalCounts(pendingCount=len(daemon.approvals("pending"))),
            recentEvents=RecentEventsView(
                count=len(recent), lastSeq=daemon.hub.published_seq, events=recent
            ),
            queue=daemon.queue_status(),
        ),
    )


def readiness(daemon: Daemon) -> tuple[str | None, str]:
    """``(None, "ready")``, or the error code and the reason ``/readyz`` answers 503 with."""
    if daemon.stopping:
        return "shutting_down", "codexd is stopping"
    if daemon.log.write_error is not None:
        return "store_unavailable", (
            f"the event log cannot be written ({daemon.log.write_error}); "
            f"{daemon.log.waiting} events wait to become durable"
            + ("; reading from codex is paused until they are written"
               if daemon.log.backlogged else "")
        )
    if daemon.supervisor.current is None or daemon.child.status != "running":
        reason = f"codex app-server is {daemon.child.status}"
        if daemon.child.lastError:
            reason += f" ({daemon.child.lastError})"
        return "child_unavailable", reason
    return None, "ready"
