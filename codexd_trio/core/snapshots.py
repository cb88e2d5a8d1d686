"""``approvals.json`` as a snapshot of the approval events, as the registry is of the session
events (issue 26): stamped with the seq it reflects, written once that seq is durable, and the
approval events after the stamp replayed at start
(:func:`codexd_trio.core.recovery.replay_journal`).

Written after the event instead of stamped, a SIGKILL between an approval's event and the
document's rewrite made the next start expire the approval a second time (found by the chaos
harness).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import msgspec

from codexd_trio.base.contracts import ApprovalBook
from codexd_trio.store.documents import JsonDocument, encode_document
from codexd_trio.store.eventlog import EventLog

__all__ = ["APPROVALS_RESTAMP_EVENTS", "ApprovalSnapshots"]

# How far approvals.json's stamp may lag the registry's before it is rewritten to catch up.
APPROVALS_RESTAMP_EVENTS = 10_000


class ApprovalSnapshots:
    """Stamps and orders the writes of ``document`` (installs its ``capture`` and
    ``before_write``); ``last_seq`` is the seq of the last event emitted."""

    def __init__(self, document: JsonDocument[ApprovalBook], log: EventLog,
                 last_seq: Callable[[], int]) -> None:
        self.document = document
        self.log = log
        self._last_seq = last_seq
        self._seq = 0
        document.capture = self._job
        document.before_write = self._durable

    def _job(self) -> Callable[[], bytes]:
        self._seq = self._last_seq()
        book = msgspec.structs.replace(self.document.value, lastSeq=self._seq)
        # The value carries the stamp it will have on disk (no new version: nothing changed).
        self.document.value = book
        return functools.partial(encode_document, book, pretty=False)

    async def _durable(self) -> None:
        await self.log.wait_durable(self._seq)

    def restamp(self, registry_seq: int) -> None:
        """Approvals change rarely; a stamp left far behind would make the next start read a
        long stretch of log for nothing. Called whenever the registry snapshot is written: when
        the stamp lags ``registry_seq`` by more than :data:`APPROVALS_RESTAMP_EVENTS`, rewrite
        the document too, so a start never reads more than that many events beyond the
        registry's replay."""
        stamp = self.document.value.lastSeq
        if stamp is None or stamp < registry_seq - APPROVALS_RESTAMP_EVENTS:
            self.document.set(msgspec.structs.replace(self.document.value, lastSeq=registry_seq))
