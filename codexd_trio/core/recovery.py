"""What codexd does at start before it serves: bring the registry and approvals snapshots up to
date with the durable event log, and settle what a previous codexd left unfinished (it may have
been SIGKILLed). Both run once, in :meth:`~codexd_trio.core.service.Daemon.run`, before the child is
spawned."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codexd_trio.core.service import Daemon

log = logging.getLogger("codexd")


async def replay_journal(daemon: Daemon) -> None:
    """Bring the registry and approvals snapshots up to date with the durable event log."""
    snapshot_seq = daemon.files.registry.value.lastSeq
    approvals_seq = daemon.files.approvals.value.lastSeq
    if approvals_seq is not None and approvals_seq > daemon.log.last_seq:
        # As for the registry below: the next events reuse those seqs.
        daemon.files.approvals.touch()
        await daemon.files.approvals.flush()
        approvals_seq = daemon.log.last_seq
    if snapshot_seq > daemon.log.last_seq:
        # The log lost its torn tail after the snapshot was written: renumbering continues
        # from the log, so the snapshot must not claim events it will never see again.
        log.warning("registry snapshot is ahead of the event log (%d > %d)",
                    snapshot_seq, daemon.log.last_seq)
        daemon._save_registry()
        # Durable before the first new event: those will reuse the seqs the snapshot
        # claims, and a crash before a lazy rewrite would make the next start skip them.
        await daemon.files.registry.flush()
        snapshot_seq = daemon.log.last_seq
    # One read for both: from the older stamp (a file without a stamp, written before
    # stamps existed, is not replayed; its first rewrite stamps it).
    start = snapshot_seq if approvals_seq is None else min(snapshot_seq, approvals_seq)
    events = await daemon.log.read_after(start) if start < daemon.log.last_seq else []
    replayed = [e for e in events if e.seq > snapshot_seq]
    if daemon.book.replay(replayed):
        log.info("replayed %d logged events over the registry snapshot", len(replayed))
        daemon._save_registry()
    if approvals_seq is not None and daemon.ledger.replay(
            e for e in events if e.seq > approvals_seq):
        log.info("replayed the logged approval events after seq %d over approvals.json",
                 approvals_seq)


def recover_after_restart(daemon: Daemon) -> None:
    """Settle what a previous codexd left unfinished (it may have been SIGKILLed)."""
    emits = daemon.book.fail_all_current(
        "daemon_restarted", "codexd restarted while the turn was running"
    )
    # A queued turn whose turn/start was on its way: Codex may have it; a person decides.
    emits += daemon.book.recover_queues()
    for emit in emits:
        daemon.publish(emit)
    if emits:
        daemon._save_registry()
    daemon.broker.expire_all("codexd restarted")
