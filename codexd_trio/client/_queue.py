"""The turn queue's and the hold's calls of :class:`~codexd_trio.client.CodexdClient` (issue 23;
private: import the client from :mod:`codexd_trio.client`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from codexd_trio.base.contracts import QueueEntry, QueueHold, QueueView, TurnInput
from codexd_trio.client._calls import Calls

__all__ = ["QueueCalls"]


def _queue_path(session_id: str, *rest: str) -> str:
    parts = [quote(session_id, safe=""), "queue", *(quote(p, safe="") for p in rest)]
    return "/v1/codexd/sessions/" + "/".join(parts)


class QueueCalls(Calls):
    """The turn queue's and the hold's calls."""

    async def queue_turn(
        self, session_id: str, input: TurnInput, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/codexd/turn`` with ``whenBusy: "queue"``: the turn starts now when the
        session is idle (``{accepted: true, turnId, …}``), else it waits in the session's queue
        (``{queued: true, queueId, position, entry, …}``)."""
        data: dict[str, Any] = await self._call(
            "POST", "/v1/codexd/turn",
            json={"sessionId": session_id, "input": input, "whenBusy": "queue"},
            headers=self._idem(idempotency_key),
        )
        return data

    async def get_queue(self, session_id: str) -> QueueView:
        """``GET /v1/codexd/sessions/{id}/queue``."""
        data = await self._call("GET", _queue_path(session_id))
        return msgspec.convert(data["queue"], QueueView)

    async def remove_queued(
        self, session_id: str, queue_id: str, *, idempotency_key: str | None = None
    ) -> QueueEntry:
        """``DELETE /v1/codexd/sessions/{id}/queue/{queueId}``: the removed entry; 404 when
        unknown, 409 ``queue_entry_started`` once it started."""
        data = await self._call("DELETE", _queue_path(session_id, queue_id),
                                headers=self._idem(idempotency_key))
        return msgspec.convert(data["removed"], QueueEntry)

    async def move_queued(
        self, session_id: str, queue_id: str, position: int, *,
        idempotency_key: str | None = None,
    ) -> QueueView:
        """``POST …/queue/{queueId}/move {position}`` (0 = next)."""
        data = await self._call("POST", _queue_path(session_id, queue_id, "move"),
                                json={"position": position}, headers=self._idem(idempotency_key))
        return msgspec.convert(data["queue"], QueueView)

    async def resume_queue(
        self, session_id: str, *, idempotency_key: str | None = None
    ) -> QueueView:
        """``POST …/queue/resume``: a stopped queue tries its head again."""
        data = await self._call("POST", _queue_path(session_id, "resume"), json={},
                                headers=self._idem(idempotency_key))
        return msgspec.convert(data["queue"], QueueView)

    async def get_hold(self) -> QueueHold:
        """``GET /v1/codexd/hold``."""
        data = await self._call("GET", "/v1/codexd/hold")
        return msgspec.convert(data["hold"], QueueHold)

    async def set_hold(self, held: bool, reason: str | None = None) -> QueueHold:
        """``POST /v1/codexd/hold``: hold (or release) the queues; idempotent."""
        data = await self._call("POST", "/v1/codexd/hold", json={"held": held, "reason": reason})
        return msgspec.convert(data["hold"], QueueHold)
