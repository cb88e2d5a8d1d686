"""A test's view of one app-server's notifications: everything received, and waits for a match."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from codexd_trio.protocol.appserver import Notification


class Notifications:
    """Pass as ``on_notification``; then filter with :meth:`of` or wait with :meth:`wait_for`.

    ``params`` filters compare a param to a value, or call it when it is a callable.
    """

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._waiting: list[tuple[Callable[[Notification], bool], trio.Event]] = []

    def __call__(self, notification: Notification) -> None:
        self.notifications.append(notification)
        for match, event in self._waiting:
            if match(notification):
                event.set()

    def methods(self) -> list[str]:
        return [n.method for n in self.notifications]

    def of(self, method: str, **params: Any) -> list[Notification]:
        return [n for n in self.notifications if _matches(n, method, params)]

    async def wait_for(self, method: str, **params: Any) -> Notification:
        def match(n: Notification) -> bool:
            return _matches(n, method, params)

        event = trio.Event()
        self._waiting.append((match, event))
        if not any(match(n) for n in self.notifications):
            await event.wait()
        return next(n for n in self.notifications if match(n))

    async def turn_completed(self, turn_id: str) -> dict[str, Any]:
        done = await self.wait_for("turn/completed", turn=lambda t: t["id"] == turn_id)
        turn: dict[str, Any] = done.params["turn"]
        return turn


def _matches(n: Notification, method: str, params: dict[str, Any]) -> bool:
    if n.method != method:
        return False
    for key, expected in params.items():
        value = n.params.get(key)
        if callable(expected):
            if not expected(value):
                return False
        elif value != expected:
            return False
    return True
