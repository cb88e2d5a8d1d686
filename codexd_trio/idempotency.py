"""``Idempotency-Key`` for state-changing POSTs.

A retry with the same key and the same body gets the original answer again (marked with the
``Idempotency-Replayed: true`` header); the same key with another body is a 422
``idempotency_mismatch``. Only successful answers are recorded — like the payment APIs that made
this header common, a refused request (4xx/5xx) did not change state, so retrying it runs it again.
Records are persisted (``state/codexd/idempotency.json``) before the answer is sent and kept 24 h.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

import msgspec
import trio
from quart import Response

from codexd_trio.errors import IdempotencyMismatch, InvalidRequest
from codexd_trio.store import JsonDocument

RETENTION_S = 24 * 3600.0
MAX_RECORDS = 20_000
MAX_KEY_LENGTH = 255


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    route: str
    bodyHash: str
    status: int
    response: bytes
    contentType: str
    createdAt: float


class IdempotencyBook(msgspec.Struct, frozen=True, kw_only=True):
    records: list[IdempotencyRecord] = msgspec.field(default_factory=list)


class IdempotencyStore:
    """Replays recorded answers; one request per key runs at a time."""

    def __init__(
        self, doc: JsonDocument[IdempotencyBook], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._doc = doc
        self._clock = clock
        self._locks: dict[str, trio.Lock] = {}
        self._records = {r.key: r for r in doc.value.records}

    def _prune(self) -> None:
        horizon = self._clock() - RETENTION_S
        for key in [k for k, r in self._records.items() if r.createdAt < horizon]:
            del self._records[key]
        while len(self._records) > MAX_RECORDS:
            del self._records[next(iter(self._records))]

    async def run(
        self, key: str, route: str, body: bytes, handler: Callable[[], Awaitable[Response]]
    ) -> Response:
        if len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidRequest(
                f"Idempotency-Key must be at most {MAX_KEY_LENGTH} printable characters",
                field="Idempotency-Key",
            )
        digest = hashlib.sha256(route.encode() + b"\0" + body).hexdigest()
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                self._prune()
                record = self._records.get(key)
                if record is not None:
                    if record.bodyHash != digest:
                        raise IdempotencyMismatch(
                            "this Idempotency-Key was used with a different request",
                            key=key,
                            originalRoute=record.route,
                        )
                    replay = Response(
                        record.response, status=record.status, content_type=record.contentType
                    )
                    replay.headers["Idempotency-Replayed"] = "true"
                    return replay
                response = await handler()
                if 200 <= response.status_code < 300:
                    data = await response.get_data(as_text=False)
                    assert isinstance(data, bytes)
                    self._records[key] = IdempotencyRecord(
                        key=key,
                        route=route,
                        bodyHash=digest,
                        status=response.status_code,
                        response=data,
                        contentType=response.content_type or "application/json",
                        createdAt=self._clock(),
                    )
                    self._doc.set(IdempotencyBook(records=list(self._records.values())))
                    await self._doc.flush()
                return response
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(key, None)
