"""Pairing codes: how a phone gets a device token without anyone typing one.

``conductor pair`` asks the running conductor for a code (``POST /v1/system/pairings``, a
``/v1/system/*`` write) and prints ``<base>/console#pair=<code>`` and the same as a QR code. The
console reads the code from the URL's fragment (never sent in a request line, so never in a log),
posts it to ``POST /v1/pair`` and keeps the device token it gets back.

A code is 12 characters of a 31-letter alphabet (59 bits), works once, expires after 5 minutes
and lives only in the conductor's memory (a restart forgets it: pair again). Wrong codes are
rate-limited for the whole conductor, not per address (an attacker has many): after
:data:`MAX_FAILURES` wrong codes within :data:`FAILURE_WINDOW_S`, every code — the right one
too — is refused with 429 until the window has passed. Brute force then needs ~10^17 years;
the price is that someone guessing can delay a pairing by a minute.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from conductor_trio.auth.devices import Scope

__all__ = ["CODE_TTL_S", "PairingCodes", "PairingRefused", "Pending"]

CODE_TTL_S = 300.0
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
# No 0/O, 1/I/L: read off a screen and typed by hand if the camera fails.
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 12
# Codes waiting at once: enough for a person, bounded against a loop.
MAX_PENDING = 20


@dataclass(frozen=True)
class Pending:
    name: str
    scopes: list[Scope]
    expires_at: float


class PairingRefused(Exception):
    """A code that does not pair: ``code`` is the envelope's error code."""

    def __init__(self, status: int, code: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def normalize(code: str) -> str:
    return "".join(c for c in code.upper() if c.isalnum())


def _key(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


class PairingCodes:
    """The codes waiting to be used (sans-IO; ``clock`` is monotonic seconds)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._codes: dict[str, Pending] = {}
        self._failures: deque[float] = deque()

    def create(self, name: str, scopes: list[Scope]) -> tuple[str, float]:
        """A new code and its lifetime in seconds."""
        self._expire()
        while len(self._codes) >= MAX_PENDING:
            self._codes.pop(next(iter(self._codes)))
        code = "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))
        self._codes[_key(code)] = Pending(name, scopes, self._clock() + CODE_TTL_S)
        return code, CODE_TTL_S

    def redeem(self, code: str) -> Pending:
        """Use a code (once).

        Raises:
            PairingRefused: 429 ``rate_limited`` while too many wrong codes were tried, else
                401 ``pairing_code_invalid`` (unknown, used or expired: not told apart, so a
                guess learns nothing).
        """
        now = self._clock()
        while self._failures and self._failures[0] <= now - FAILURE_WINDOW_S:
            self._failures.popleft()
        if len(self._failures) >= MAX_FAILURES:
            retry = self._failures[0] + FAILURE_WINDOW_S - now
            raise PairingRefused(
                429, "rate_limited",
                "Too many wrong pairing codes: pairing is refused for a minute.",
                retryAfterS=round(max(retry, 0.0), 1))
        self._expire()
        pending = self._codes.pop(_key(code), None)
        if pending is None:
            self._failures.append(now)
            raise PairingRefused(
                401, "pairing_code_invalid",
                "This pairing code is unknown, used or expired: run `conductor pair` again.")
        return pending

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, p in self._codes.items() if p.expires_at <= now]:
            del self._codes[key]
