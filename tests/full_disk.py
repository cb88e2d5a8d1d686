"""A disk that refuses the event log's commits until it is healed."""

from __future__ import annotations

import pytest
import trio

from codexd_trio.store.eventlog import EventLog


class FullDisk:
    """Every commit of ``log`` fails with ENOSPC while ``failing``; ``retried`` is set once the
    writer has handled the first failure and tries again. Healed, commits write for real."""

    def __init__(self, log: EventLog, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing = True
        self.attempts = 0
        self.retried = trio.Event()
        # The log's commit thread is its own (not trio.to_thread's): name the run to call back.
        self._token = trio.lowlevel.current_trio_token()
        self._write = log._write_batch
        monkeypatch.setattr(log, "_write_batch", self._commit)

    def _commit(self, data: bytes, start: int) -> None:  # the writer's worker thread
        self.attempts += 1
        if self.attempts == 2:
            trio.from_thread.run_sync(self.retried.set, trio_token=self._token)
        if self.failing:
            raise OSError(28, "No space left on device")
        self._write(data, start)
