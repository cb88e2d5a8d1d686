"""Transcripts: the conversation fold over the durable event log, its store, and the reads the
API serves (``GET …/transcript``, ``GET …/transcript/items/{id}``).

The fold runs in the same synchronous step as the hub publishes each durable batch
(:meth:`Transcripts.on_durable`, installed by the Daemon), so a record is written in the step
that folds its turn's final event, and a transcript taken on the Trio thread (the records, the
running turn and ``lastSeq``) reflects exactly the events up to ``lastSeq``: a client that then
follows the stream from ``after=lastSeq`` misses nothing and sees nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import msgspec

from codexd_trio.base.contracts import Event
from codexd_trio.base.errors import NotFound
from codexd_trio.base.transcript import (
    Transcript,
    TranscriptItem,
    TranscriptItemView,
    TranscriptTurn,
)
from codexd_trio.core.conversation import ConversationFold, RolledBack, Settled
from codexd_trio.core.items import cap_item
from codexd_trio.store.conversation import ConversationStore, PageRefs
from codexd_trio.store.eventlog import EventLog

__all__ = ["Transcripts", "cap_turn"]

log = logging.getLogger("codexd")

# Events read per page while start-up folds the log again from the store's checkpoint.
_REFOLD_PAGE = 5000
# Records read per step while the item route looks for an item that was not cut.
_SEARCH_BATCH = 32


def cap_turn(turn: TranscriptTurn) -> tuple[TranscriptTurn, dict[str, TranscriptItem]]:
    """``(the turn as a page shows it, its cut items whole by id)``."""
    whole: dict[str, TranscriptItem] = {}
    items: list[TranscriptItem] = []
    for item in turn.items:
        capped, cut = cap_item(item)
        items.append(capped)
        if cut:
            whole[item.id] = item
    if not whole:
        return turn, whole
    return msgspec.structs.replace(turn, items=items), whole


class Transcripts:
    """Every session's transcript: the store's records plus the running turns.

    Args:
        store: the conversation store (its writer runs in the store nursery).
        published_seq: the hub's high-watermark (what ``lastSeq`` is).
    """

    def __init__(self, store: ConversationStore, published_seq: Callable[[], int]) -> None:
        self.store = store
        self.fold = ConversationFold(store.has)
        self._published_seq = published_seq
        store.claim = self.fold.resume_seq

    # ---------------------------------------------------------------- folding

    def on_durable(self, batch: list[Event]) -> None:
        """Fold a durable batch (synchronous; called as the hub publishes it).

        A bug here must never reach the event log's commit, which calls this: it is logged and
        the event skipped (its turn's record may then lack an item; the log still has it).
        """
        for event in batch:
            try:
                for out in self.fold.fold(event):
                    self._apply(out)
            except Exception:
                log.exception("conversation fold failed on event %d (%s)", event.seq, event.type)

    def _apply(self, out: Settled | RolledBack) -> None:
        if isinstance(out, Settled):
            capped, whole = cap_turn(out.turn)
            self.store.append(out.session_id, capped, whole, out.seq)
        else:
            self.store.remove(out.session_id, out.turn_ids)

    async def refold(self, event_log: EventLog) -> int:
        """Fold the log again from the store's checkpoint (start-up, before any new event):
        records a crash lost are written again, running turns are rebuilt. Returns how many
        events were folded.

        Cancellation:
            Safe: nothing is written that a later refold would not write the same way.
        """
        after = self.store.resume_seq
        folded = 0
        while True:
            events = await event_log.read_after(after, limit=_REFOLD_PAGE)
            if not events:
                break
            self.on_durable(events)
            folded += len(events)
            after = events[-1].seq
        self.fold.last_seq = max(self.fold.last_seq, event_log.durable_seq)
        if folded:
            log.info("conversation: folded %d logged events from seq %d",
                     folded, self.store.resume_seq)
        return folded

    # ---------------------------------------------------------------- reads

    async def transcript(
        self, session_id: str, *, order: Literal["asc", "desc"] = "asc",
        start: int | None = None, limit: int = 50,
    ) -> tuple[Transcript, int | None]:
        """A page of a session's turns and the ordinal the next page starts from (``None`` on
        the last page). ``start`` is an ordinal from a previous answer."""
        # One synchronous step: the records, the running turn and lastSeq agree.
        last_seq = self._published_seq()
        running = self.fold.running(session_id)
        running_ordinal = self.store.next_ordinal(session_id)
        show_running = running is not None and (
            start is None or (start <= running_ordinal if order == "asc"
                              else start > running_ordinal))
        if order == "desc" and show_running:
            refs = self.store.page(session_id, order="desc", start=start, limit=limit - 1)
        else:
            refs = self.store.page(session_id, order=order, start=start, limit=limit)
        turns = await self.store.read(refs) if refs.entries else []
        following = refs.next_ordinal
        if show_running and running is not None:
            live = cap_turn(running)[0]
            if order == "desc":
                turns.insert(0, live)
                if limit == 1 and self.store.count(session_id):
                    following = running_ordinal
            elif len(turns) < limit:
                turns.append(live)
            elif following is None:
                following = running_ordinal
        transcript = Transcript(sessionId=session_id, turns=turns, lastSeq=last_seq)
        return transcript, following

    async def item(self, session_id: str, item_id: str) -> TranscriptItemView:
        """One item whole: from the running turn, a cut item's whole record, or a record."""
        running = self.fold.running(session_id)
        if running is not None:
            for item in running.items:
                if item.id == item_id:
                    return TranscriptItemView(sessionId=session_id, turnId=running.turnId,
                                              item=item)
        whole = self.store.find_whole(session_id, item_id)
        if whole is not None:
            turn_id, item = await self.store.read_whole(whole, item_id)
            return TranscriptItemView(sessionId=session_id, turnId=turn_id, item=item)
        before: int | None = None
        while True:
            refs: PageRefs = self.store.newest_first(session_id, _SEARCH_BATCH, before)
            if not refs.entries:
                break
            for turn in await self.store.read(refs):
                for item in turn.items:
                    if item.id == item_id:
                        return TranscriptItemView(sessionId=session_id, turnId=turn.turnId,
                                                  item=item)
            if refs.next_ordinal is None:
                break
            before = refs.next_ordinal
        raise NotFound(f"no item {item_id!r} in the transcript of session {session_id}",
                       sessionId=session_id, itemId=item_id)
