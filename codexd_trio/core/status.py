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
