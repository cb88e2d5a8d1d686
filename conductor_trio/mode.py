"""The automation mode (``running`` | ``paused`` | ``draining``), persisted across restarts.

``paused`` refuses new turns and new sessions (423 ``system_paused``); ``draining`` refuses new
turns (423 ``system_draining``) while running turns finish. The record lives in
``<state-root>/conductor/mode.json`` and is replaced atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec
import trio

from codexd_trio.base.contracts import now_iso
from codexd_trio.base.files import atomic_write_bytes

Mode = Literal["running", "paused", "draining"]


class ModeRecord(msgspec.Struct, frozen=True, kw_only=True):
    mode: Mode = "running"
    reason: str | None = None
    requested_by: str | None = None
    updated_at: str | None = None


class ModeStoreError(Exception):
    """The mode file exists but cannot be read as a mode record."""


_decoder = msgspec.json.Decoder(ModeRecord)
_encoder = msgspec.json.Encoder()


class ModeStore:
    """The current mode, in memory and in one JSON file.

    **Resource handling:** file access happens per call in a worker thread; nothing stays open.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = ModeRecord()
        self._lock = trio.Lock()

    def load(self) -> ModeRecord:
        """Read the persisted mode (``running`` if there is none yet).

        Raises:
            ModeStoreError: the file is not a mode record (a person should look at it).
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self.current = ModeRecord()
            return self.current
        except OSError as exc:
            raise ModeStoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            self.current = _decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise ModeStoreError(f"{self.path} is not a mode record: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ModeStoreError(f"{self.path} is not JSON: {exc}") from exc
        return self.current

    async def set(self, mode: Mode, *, reason: str | None, requested_by: str | None
                  ) -> ModeRecord:
        """Persist and adopt a new mode; returns it.

        **Cancellation:** the write runs in a thread and finishes even if the caller is
        cancelled; the in-memory mode changes only after the file is replaced.
        """
        record = ModeRecord(mode=mode, reason=reason, requested_by=requested_by,
                            updated_at=now_iso())
        async with self._lock:
            await trio.to_thread.run_sync(
                atomic_write_bytes, self.path, _encoder.encode(record))
            self.current = record
        return record
