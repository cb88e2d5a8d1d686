"""What codexd does at start before it serves: bring the registry snapshot up to date with the
durable event log, and settle what a previous codexd left unfinished (it may have been
SIGKILLed). Both run once, in :meth:`~codexd_trio.core.service.Daemon.run`, before the child is
spawned."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codexd_trio.core.service import Daemon

log = logging.getLogger("codexd")


async def replay_journal(daemon: Daemon) -> None:
    """Bring the registry snapshot up to date with the durable event log."""
    snapshot_seq = daemon.files.registry.value.lastSeq
    if snapshot_seq > daemon.log.last_seq:
        # The log lost its torn tail after the snapshot was written: renumbering continues
        # from the log, so the snapshot must not claim events it will never see again.
        log.warning("registry snapshot is ahead of the event log (%d > %d)",
                    snapshot_seq, daemon.log.last_seq)
        daemon._save_registry()
        # Durable before the first new event: those will reuse the seqs the snapshot
        # claims, and a crash before a lazy rewrite would make the next start skip them.
        await daemon.files.registry.flush()
        return
    events = await daemon.log.read_after(snapshot_seq)
    if daemon.book.replay(events):
        log.info("replayed %d logged events over the registry snapshot", len(events))
        daemon._save_registry()

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
