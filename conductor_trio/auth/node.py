"""The conductor's credentials besides the shared token, in one place: device tokens, pairing
codes, one-tap action links, and the relay websockets each device holds open (closed at once
when the device is revoked)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from conductor_trio.auth.actions import ActionLinks
from conductor_trio.auth.devices import Device, DeviceStore
from conductor_trio.auth.pairing import PairingCodes

__all__ = ["REVOKED_CLOSE_CODE", "NodeAuth", "RelayTicket"]

# The close code of a relay websocket whose device was revoked (1008: policy violation).
REVOKED_CLOSE_CODE = 1008


class NodeAuth:
    """Devices, pairing codes and action links of one conductor.

    Args:
        state: the conductor's state directory (``devices.json``, ``action-key``,
            ``actions-used.jsonl``).
        action_ttl_s: how long a notification's action links work (at most 15 minutes).
    """

    def __init__(self, state: Path, *, action_ttl_s: float = 900.0) -> None:
        self.devices = DeviceStore(state / "devices.json")
        self.pairing = PairingCodes(time.monotonic)
        self.actions = ActionLinks(state, ttl_s=action_ttl_s)
        self._relays: dict[str, set[RelayTicket]] = {}

    def load(self) -> None:
        """Read the files (blocking; at start).

        Raises:
            conductor_trio.auth.devices.DeviceError, OSError, ValueError: a file a person should
                look at.
        """
        self.devices.load()
        self.actions.load()

    @contextmanager
    def relay(self, device_id: str | None, scope: trio.CancelScope) -> Iterator[RelayTicket]:
        """Register a relay websocket opened with a device token: revoking the device cancels
        ``scope`` and marks the ticket (the relay then closes with
        :data:`REVOKED_CLOSE_CODE`)."""
        ticket = RelayTicket(scope)
        if device_id is None:
            yield ticket
            return
        self._relays.setdefault(device_id, set()).add(ticket)
        try:
            yield ticket
        finally:
            tickets = self._relays.get(device_id)
            if tickets is not None:
                tickets.discard(ticket)
                if not tickets:
                    del self._relays[device_id]

    async def revoke(self, device_id: str) -> Device | None:
        """Revoke a device: its token is refused from now on and its relays are closed."""
        device = await self.devices.revoke(device_id)
        for ticket in self._relays.pop(device_id, set()):
            ticket.revoked = True
            ticket.scope.cancel(reason=f"device {device_id} revoked")
        return device


class RelayTicket:
    """One registered relay: its cancel scope, and whether a revocation cancelled it."""

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.revoked = False
