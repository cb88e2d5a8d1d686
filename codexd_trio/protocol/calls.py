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
