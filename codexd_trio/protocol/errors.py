"""What a call to the app-server can end in, besides its result, and how overload is retried."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codexd_trio.protocol.child import ExitStatus

__all__ = ["AppServerError", "ChildExited", "OverloadRetry", "RequestTimeout"]


class AppServerError(Exception):
    """The app-server answered a request with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class ChildExited(Exception):
    """The child went away while a request was pending, or before it could be sent."""

    def __init__(self, status: ExitStatus | None, method: str | None = None) -> None:
        how = status.describe() if status is not None else "stdout closed"
        what = f" during {method}" if method else ""
        super().__init__(f"codex app-server exited{what} ({how})")
        self.status = status
        self.method = method


class RequestTimeout(Exception):
    """No answer to a request within its timeout (the server may drop replies when overloaded)."""

    def __init__(self, method: str, timeout: float) -> None:
        super().__init__(f"{method}: no answer within {timeout:g} s")
        self.method = method
        self.timeout = timeout


@dataclass(frozen=True)
class OverloadRetry:
    """Backoff for requests the server rejects with -32001 "Server overloaded; retry later"."""

    attempts: int = 6
    initial_delay: float = 0.05
    max_delay: float = 2.0

    def delays(self) -> list[float]:
        """Sleeps between attempts: ``initial_delay`` doubling up to ``max_delay``."""
        delays: list[float] = []
        delay = self.initial_delay
        for _ in range(self.attempts - 1):
            delays.append(min(delay, self.max_delay))
            delay *= 2
        return delays
