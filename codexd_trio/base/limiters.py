"""Worker-thread limiters of codexd, one per kind of blocking work.

``trio.to_thread.run_sync`` without ``limiter=`` borrows from one run-wide limiter of 40 tokens.
If every kind of blocking work shared it, a wave of reconnecting websocket clients replaying the
event log (each page is a disk read in a thread) could hold all 40 tokens while the group commit
that every ``202`` waits on, the document writers and the child's stderr drain (whose child
blocks once the pipe is full) queue behind them. Each kind gets its own small limiter here, so a
saturated one only slows its own kind.

A :class:`trio.CapacityLimiter` belongs to one Trio run (it must be created inside it), so each
is created lazily per run and kept in a :class:`trio.lowlevel.RunVar`.

============================  ======  =======================================================
limiter                       tokens  used by
============================  ======  =======================================================
:func:`journal_limiter`       2       event-log commits, rotation and segment removal; the
                                      idempotency journal's appends and compaction swap
:func:`documents_limiter`     6       the :class:`~codexd_trio.store.documents.JsonDocument`
                                      writers, the idempotency journal's compaction rewrite
:func:`reads_limiter`         8       event-log reads (websocket replay pages, ``GET`` pages,
                                      the start-up journal replay)
:func:`drains_limiter`        2       the child's stderr log (and the app-server stdout log)
============================  ======  =======================================================
"""

from __future__ import annotations

import trio
from trio.lowlevel import RunVar

__all__ = [
    "DOCUMENT_THREADS",
    "DRAIN_THREADS",
    "JOURNAL_THREADS",
    "READ_THREADS",
    "documents_limiter",
    "drains_limiter",
    "journal_limiter",
    "reads_limiter",
]

# The event log and the idempotency journal each write under their own lock, so each holds at
# most one token at a time: two tokens mean neither ever waits for the other. (That needs their
# writes never to be abandoned on cancel: an abandoned thread keeps its token while the next
# write takes another. See eventlog._Commit.)
JOURNAL_THREADS = 2
# One per document writer (each writes one version at a time): writers never queue on each
# other, and a slow disk cannot take more than these threads.
DOCUMENT_THREADS = 6
# Enough for several replays to progress side by side; more would only compete for one disk.
READ_THREADS = 8
# One child at a time: its stderr log and the app-server's stdout log.
DRAIN_THREADS = 2

_journal: RunVar[trio.CapacityLimiter] = RunVar("codexd_journal_limiter")
_documents: RunVar[trio.CapacityLimiter] = RunVar("codexd_documents_limiter")
_reads: RunVar[trio.CapacityLimiter] = RunVar("codexd_reads_limiter")
_drains: RunVar[trio.CapacityLimiter] = RunVar("codexd_drains_limiter")


def _limiter(var: RunVar[trio.CapacityLimiter], tokens: int) -> trio.CapacityLimiter:
    try:
        return var.get()
    except LookupError:
        limiter = trio.CapacityLimiter(tokens)
        var.set(limiter)
        return limiter


def journal_limiter() -> trio.CapacityLimiter:
    """The limiter of append-and-fsync work that acknowledgements wait on (this Trio run's)."""
    return _limiter(_journal, JOURNAL_THREADS)


def documents_limiter() -> trio.CapacityLimiter:
    """The limiter of whole-document rewrites (this Trio run's)."""
    return _limiter(_documents, DOCUMENT_THREADS)


def reads_limiter() -> trio.CapacityLimiter:
    """The limiter of event-log reads for replays and pages (this Trio run's)."""
    return _limiter(_reads, READ_THREADS)


def drains_limiter() -> trio.CapacityLimiter:
    """The limiter of the child's output logs (this Trio run's)."""
    return _limiter(_drains, DRAIN_THREADS)
