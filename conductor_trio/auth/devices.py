"""Device tokens: the credential a paired phone (or any client) keeps, scoped and revocable.

A token is ``baa_dev_<id>_<secret>``: the id finds the record, the secret proves it. Only the
token's SHA-256 is stored (the secret has 256 random bits, so a fast hash is enough: nothing to
guess), in ``<state>/conductor/devices.json``, mode 600, replaced atomically. A revoked device
stays listed (``revokedAt``) so the page that still holds its token can be told so.

Scopes: ``codex`` (sessions, turns, queue, approvals, transcripts, the relay websocket) is every
device's; ``system`` (``/v1/system/*`` writes, the device list) only when granted at pairing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Literal

import msgspec
import trio

from codexd_trio.base.contracts import now_iso
from codexd_trio.base.files import atomic_write_bytes
from conductor_trio.contracts import DeviceInfo

__all__ = [
    "TOKEN_PREFIX",
    "Device",
    "DeviceStore",
    "Scope",
    "device_info",
    "is_device_token",
]

Scope = Literal["codex", "system"]
TOKEN_PREFIX = "baa_dev_"
# Listed devices (revoked ones included) before the oldest revoked records are forgotten.
MAX_DEVICES = 200


class Device(msgspec.Struct, frozen=True, kw_only=True):
    """A record of ``devices.json``."""

    id: str
    name: str
    scopes: list[Scope]
    tokenSha256: str
    createdAt: str
    revokedAt: str | None = None


def device_info(device: Device) -> DeviceInfo:
    """A device as the API lists it (never its token or hash)."""
    return DeviceInfo(id=device.id, name=device.name, scopes=list(device.scopes),
                      createdAt=device.createdAt, revokedAt=device.revokedAt,
                      revoked=device.revokedAt is not None)


class _File(msgspec.Struct, frozen=True, kw_only=True):
    devices: list[Device] = msgspec.field(default_factory=list)


_decoder = msgspec.json.Decoder(_File)
_encoder = msgspec.json.Encoder()


def is_device_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DeviceError(Exception):
    """The devices file cannot be read (a person should look at it)."""


class DeviceStore:
    """Every paired device, in memory and in one file.

    **Resource handling:** file access is per call (a worker thread for writes); nothing stays
    open. Changes are made in memory only once the file holds them, except a revocation, which
    takes effect at once and is then written (a lost phone must stop working now).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._devices: dict[str, Device] = {}
        self._lock = trio.Lock()

    def load(self) -> None:
        """Read ``devices.json`` (none yet: no device).

        Raises:
            DeviceError: unreadable or not a devices file.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise DeviceError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            self._devices = {d.id: d for d in _decoder.decode(raw).devices}
        except msgspec.MsgspecError as exc:
            raise DeviceError(f"{self.path} is not a devices file: {exc}") from exc

    def all(self) -> list[Device]:
        return [*self._devices.values()]

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def check(self, token: str) -> tuple[Device | None, str]:
        """``(device, "ok")`` for a live token, else ``(device or None, why)`` with ``why`` one
        of ``unknown`` and ``revoked``. Constant-time on the secret."""
        rest = token[len(TOKEN_PREFIX):] if is_device_token(token) else ""
        device_id, _, secret = rest.partition("_")
        device = self._devices.get(device_id)
        if device is None or not secret:
            return None, "unknown"
        if not hmac.compare_digest(_digest(token), device.tokenSha256):
            return None, "unknown"
        if device.revokedAt is not None:
            return device, "revoked"
        return device, "ok"

    async def add(self, name: str, scopes: list[Scope]) -> tuple[Device, str]:
        """Create a device; returns it and its token (shown once, never stored)."""
        async with self._lock:
            device_id = secrets.token_hex(4)
            while device_id in self._devices:
                device_id = secrets.token_hex(4)
            token = f"{TOKEN_PREFIX}{device_id}_{secrets.token_urlsafe(32)}"
            device = Device(id=device_id, name=name, scopes=sorted(set(scopes)),
                            tokenSha256=_digest(token), createdAt=now_iso())
            devices = {**self._devices, device_id: device}
            await self._write(_trimmed(devices))
            self._devices = _trimmed(devices)
            return device, token

    async def revoke(self, device_id: str) -> Device | None:
        """Revoke a device (refused at once, then written); ``None`` if unknown."""
        async with self._lock:
            device = self._devices.get(device_id)
            if device is None:
                return None
            if device.revokedAt is None:
                device = msgspec.structs.replace(device, revokedAt=now_iso())
                self._devices = {**self._devices, device_id: device}
                await self._write(self._devices)
            return device

    async def _write(self, devices: dict[str, Device]) -> None:
        data = _encoder.encode(_File(devices=list(devices.values())))
        # mkstemp creates the file with mode 600, and the rename keeps it.
        await trio.to_thread.run_sync(atomic_write_bytes, self.path, data)


def _trimmed(devices: dict[str, Device]) -> dict[str, Device]:
    """At most :data:`MAX_DEVICES` records: the oldest revoked ones go first."""
    extra = len(devices) - MAX_DEVICES
    if extra <= 0:
        return devices
    revoked = [d.id for d in devices.values() if d.revokedAt is not None][:extra]
    return {k: v for k, v in devices.items() if k not in set(revoked)}
