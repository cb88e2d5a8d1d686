"""``Idempotency-Key`` for state-changing POSTs.

A retry with the same key and the same body gets the original answer again (marked with the
``Idempotency-Replayed: true`` header); the same key with another body is a 422
``idempotency_mismatch``. Only successful answers are recorded — like the payment APIs that made
this header common, a refused request (4xx/5xx) did not change state, so retrying it runs it again.
Records are persisted before the answer is sent and kept 24 h.

Persistence is an append-only journal, ``state/codexd/idempotency.jsonl``
(:class:`IdempotencyJournal`): one compact JSON :class:`IdempotencyRecord` per line. A recorded
answer costs one appended line and one ``fsync`` — concurrent requests share it (group commit) —
whatever the number of records. In memory each live record is kept as its journal line in an
insertion-ordered map, and expired records are dropped from its front. The dead lines this
leaves in the file are removed by a compaction that the journal's :meth:`IdempotencyJournal.run`
task performs in the background once the file holds more than twice as many lines as there are
live records (and at least ``compact_min_lines``): it writes the live lines to a temporary file,
then, holding the append lock only while it adds the few lines appended meanwhile, renames it
over the journal.

Crash safety: a crash can only tear the tail of the last append; :meth:`IdempotencyJournal.open`
cuts it away. A record whose append did not finish was never acknowledged. The journal replaced
``idempotency.json`` (one document rewritten whole on every keyed POST); ``open`` imports that
file's records once and removes it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import trio

from codexd_trio.base.errors import IdempotencyMismatch, InvalidRequest
from codexd_trio.store._idempotency_journal import IdempotencyJournal
from codexd_trio.store._idempotency_records import (
    COMPACT_MIN_LINES,
    MAX_RECORDS,
    RETENTION_S,
    WRITE_RETRY_S,
    IdempotencyBook,
    IdempotencyRecord,
)

__all__ = [
    "COMPACT_MIN_LINES",
    "MAX_KEY_LENGTH",
    "MAX_RECORDS",
    "RETENTION_S",
    "WRITE_RETRY_S",
    "Answer",
    "IdempotencyBook",
    "IdempotencyJournal",
    "IdempotencyRecord",
    "IdempotencyStore",
]

MAX_KEY_LENGTH = 255


class Answer(NamedTuple):
    """An HTTP answer as the store runs and replays it. Framework-free on purpose: the API turns
    its responses into these and back, so the service layer never imports the web framework."""

    status: int
    body: bytes
    content_type: str = "application/json"
    replayed: bool = False


class IdempotencyStore:
    """Replays recorded answers; one request per key runs at a time.

    Attributes:
        journal: Where the records live; start ``journal.run`` in the store nursery.
    """

    def __init__(self, journal: IdempotencyJournal) -> None:
        self.journal = journal
        self._locks: dict[str, trio.Lock] = {}

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        compact_min_lines: int = COMPACT_MIN_LINES,
    ) -> IdempotencyStore:
        """A store over :meth:`IdempotencyJournal.open` ``(path)`` (blocking; see there)."""
        return cls(
            IdempotencyJournal.open(path, clock=clock, compact_min_lines=compact_min_lines)
        )

    async def run(
        self, key: str, route: str, body: bytes, handler: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        """Answer a keyed request: replay its recorded answer, or run ``handler`` and record it.

        Args:
            key: The ``Idempotency-Key`` header.
            route: Method and path (a key reused on another route is a mismatch).
            body: The request body.
            handler: Runs the request; only a 2xx answer is recorded.

        Returns:
            The handler's answer, or the recorded one with ``replayed`` set (the API adds
            ``Idempotency-Replayed: true``).

        Raises:
            InvalidRequest: The key is longer than 255 characters or not printable.
            IdempotencyMismatch: The key was recorded for another route or body.
            StoreWriteError: The answer could not be made durable (it is still recorded in
                memory and its append is retried).

        Cancellation:
            A cancel while ``handler`` runs records nothing; once the answer is recorded it
            stays recorded (see :meth:`IdempotencyJournal.put`).
        """
        if len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidRequest(
                f"Idempotency-Key must be at most {MAX_KEY_LENGTH} printable characters",
                field="Idempotency-Key",
            )
        digest = hashlib.sha256(route.encode() + b"\0" + body).hexdigest()
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                self.journal.prune()
                record = self.journal.get(key)
                if record is not None:
                    if record.bodyHash != digest:
                        raise IdempotencyMismatch(
                            "this Idempotency-Key was used with a different request",
                            key=key,
                            originalRoute=record.route,
                        )
                    return Answer(record.status, record.response, record.contentType, True)
                response = await handler()
                if 200 <= response.status < 300:
                    await self.journal.put(
                        IdempotencyRecord(
                            key=key,
                            route=route,
                            bodyHash=digest,
                            status=response.status,
                            response=response.body,
                            contentType=response.content_type,
                            createdAt=self.journal.clock(),
                        )
                    )
                return response
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(key, None)
