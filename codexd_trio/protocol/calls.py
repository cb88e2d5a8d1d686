"""The app-server methods codexd calls, typed: the handshake, threads and turns.

A mixin of :class:`~codexd_trio.protocol.appserver.AppServerClient` (which owns the connection,
``request`` and ``notify``). A new Codex method codexd uses (``thread/list``, say) is a method
here; what codexd makes of its answer belongs in :mod:`codexd_trio.core`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from codexd_trio.protocol.jsonrpc import ProtocolError

__all__ = ["CodexCalls"]


class CodexCalls:
    """Typed app-server calls over :meth:`request` and :meth:`notify`."""

    initialize_result: dict[str, Any]

    if TYPE_CHECKING:

        async def request(
            self,
            method: str,
            params: dict[str, Any] | None = None,
            *,
            timeout: float | None = None,  # noqa: ASYNC109
        ) -> Any: ...

        async def notify(self, method: str, params: dict[str, Any] | None = None) -> None: ...

    async def _request_object(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        result = await self.request(method, params)
        if not isinstance(result, dict):
            raise ProtocolError(f"{method}: expected an object result, got {result!r}")
        return result

    async def initialize(
        self,
        *,
        name: str,
        version: str,
        title: str | None = None,
        opt_out_notifications: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Handshake: ``initialize`` then the ``initialized`` notification.

        ``opt_out_notifications`` lists notification methods the server should not send.
        Stores and returns the result (``userAgent``, ``codexHome``, ``platformOs`` ...).
        """
        client_info: dict[str, Any] = {"name": name, "version": version}
        if title is not None:
            client_info["title"] = title
        params: dict[str, Any] = {"clientInfo": client_info}
        if opt_out_notifications:
            params["capabilities"] = {"optOutNotificationMethods": list(opt_out_notifications)}
        result = await self._request_object("initialize", params)
        await self.notify("initialized")
        self.initialize_result = result
        return result

    async def thread_start(self, **params: Any) -> dict[str, Any]:
        """``thread/start`` with camelCase params (``cwd``, ``model``, ``approvalPolicy`` ...)."""
        return await self._request_object("thread/start", params)

    async def thread_resume(
        self, thread_id: str, *, exclude_turns: bool = True, **params: Any
    ) -> dict[str, Any]:
        """``thread/resume``; turns are excluded by default (full history is deprecated)."""
        return await self._request_object(
            "thread/resume", {"threadId": thread_id, "excludeTurns": exclude_turns, **params}
        )

    async def thread_read(self, thread_id: str, *, include_turns: bool = False) -> dict[str, Any]:
        """``thread/read``."""
        return await self._request_object(
            "thread/read", {"threadId": thread_id, "includeTurns": include_turns}
        )

    async def turn_start(
        self, thread_id: str, input: list[dict[str, Any]], **overrides: Any
    ) -> dict[str, Any]:
        """``turn/start``; the turn's end is the ``turn/completed`` notification."""
        return await self._request_object(
            "turn/start", {"threadId": thread_id, "input": input, **overrides}
        )

    async def turn_steer(
        self, thread_id: str, input: list[dict[str, Any]], *, expected_turn_id: str
    ) -> dict[str, Any]:
        """``turn/steer``: add input to the running turn ``expected_turn_id``."""
        return await self._request_object(
            "turn/steer",
            {"threadId": thread_id, "input": input, "expectedTurnId": expected_turn_id},
        )

    async def turn_interrupt(self, thread_id: str, turn_id: str) -> dict[str, Any]:
        """``turn/interrupt``; ``turn/completed`` with status ``interrupted`` follows."""
        return await self._request_object(
            "turn/interrupt", {"threadId": thread_id, "turnId": turn_id}
        )

    # ---------------------------------------------------------------- threads (issue 22)

    async def thread_list(self, **params: Any) -> dict[str, Any]:
        """``thread/list`` (``cursor``, ``limit``, ``cwd``, ``searchTerm``, ``archived``,
        ``sourceKinds`` ...): ``{data, nextCursor}``."""
        return await self._request_object("thread/list", params)

    async def thread_turns_list(self, thread_id: str, **params: Any) -> dict[str, Any]:
        """``thread/turns/list`` (``cursor``, ``limit``, ``sortDirection``, ``itemsView``):
        ``{data, nextCursor}``; works on a thread that is not loaded."""
        return await self._request_object("thread/turns/list", {"threadId": thread_id, **params})

    async def thread_fork(self, thread_id: str, **params: Any) -> dict[str, Any]:
        """``thread/fork``: a new thread with the same history (``excludeTurns`` to page it)."""
        return await self._request_object("thread/fork", {"threadId": thread_id, **params})

    async def thread_revert(self, thread_id: str, before_turn_id: str) -> dict[str, Any]:
        """``thread/revert``: drop ``before_turn_id`` and every later turn from the history."""
        return await self._request_object(
            "thread/revert", {"threadId": thread_id, "beforeTurnId": before_turn_id})

    async def thread_compact_start(self, thread_id: str) -> dict[str, Any]:
        """``thread/compact/start``: the compaction runs as a turn (``turn/started`` …)."""
        return await self._request_object("thread/compact/start", {"threadId": thread_id})

    async def review_start(self, thread_id: str, target: dict[str, Any]) -> dict[str, Any]:
        """``review/start`` inline on the thread: ``{turn, reviewThreadId}``."""
        return await self._request_object(
            "review/start", {"threadId": thread_id, "target": target})

    async def thread_name_set(self, thread_id: str, name: str) -> dict[str, Any]:
        """``thread/name/set``."""
        return await self._request_object("thread/name/set", {"threadId": thread_id, "name": name})
