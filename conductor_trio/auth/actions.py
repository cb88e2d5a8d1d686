"""One-tap action links: Accept and Decline in a notification, one approval, once, for a while.

A link is ``<base>/v1/actions/<approvalId>/<accept|decline>?t=<exp>.<nonce>.<mac>`` with
``mac = HMAC-SHA256(key, approvalId, decision, exp, nonce)``. The key (32 random bytes) lives in
``<state>/conductor/action-key``, mode 600, made at the first start; it never leaves the node.
So a link says which approval and which decision it is for, and changing either breaks it; it
expires at ``exp`` (at most :data:`MAX_TTL_S` after it was made); and the two links of one
notification share their nonce, which is spent by the first use of either: a second tap, or
Decline after Accept, is refused. Spent nonces are appended (and fsynced) to
``actions-used.jsonl`` until they expire, so a restart does not make a used link work again.

The token travels in the query, which the access log leaves out. Nothing else can be done with a
link: the conductor answers it by deciding that one approval on codexd, itself.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, TypeVar

import msgspec
import trio

from codexd_trio.base.files import append_synced, atomic_write_bytes

__all__ = ["MAX_TTL_S", "ActionLinks", "ActionRefused", "LinkDecision"]

T = TypeVar("T")
LinkDecision = Literal["accept", "decline"]
MAX_TTL_S = 15 * 60.0
_KEY_BYTES = 32


class ActionRefused(Exception):
    """A link that may not be used: status, envelope code, and a message for a person."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Used(msgspec.Struct, frozen=True):
    nonce: str
    exp: float


_used_decoder = msgspec.json.Decoder(_Used)
_encoder = msgspec.json.Encoder()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_key(path: Path) -> bytes:
    """The signing key in ``path``, made (mode 600) when there is none yet."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(_KEY_BYTES)
        atomic_write_bytes(path, key)
        return key
    if len(key) < _KEY_BYTES:
        raise ValueError(f"{path} holds no action key (remove it to make a new one)")
    return key


class ActionLinks:
    """Makes and checks action links, and remembers which were used.

    Args:
        state: the conductor's state directory (key and used-nonce journal).
        ttl_s: how long a link works (capped at :data:`MAX_TTL_S`).
        clock: wall-clock seconds (links outlive a restart, so not monotonic).
    """

    def __init__(self, state: Path, *, ttl_s: float = MAX_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = min(ttl_s, MAX_TTL_S)
        self._clock = clock
        self._key_path = state / "action-key"
        self._used_path = state / "actions-used.jsonl"
        self._key = b""
        self._used: dict[str, float] = {}
        # Nonces whose decision is being delivered now: a concurrent second tap is refused.
        self._busy: set[str] = set()
        self._lock = trio.Lock()

    def load(self) -> None:
        """Read (or make) the key and the used nonces; drop expired ones (blocking, at start)."""
        self._key = load_key(self._key_path)
        now = self._clock()
        used: dict[str, float] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self._used_path.read_bytes().splitlines():
                with contextlib.suppress(msgspec.MsgspecError):
                    entry = _used_decoder.decode(line)  # a torn last line is skipped
                    if entry.exp > now:
                        used[entry.nonce] = entry.exp
        self._used = used
        data = b"".join(_encoder.encode(_Used(n, e)) + b"\n" for n, e in used.items())
        atomic_write_bytes(self._used_path, data)

    def _mac(self, approval_id: str, decision: str, exp: int, nonce: str) -> str:
        message = "\n".join((approval_id, decision, str(exp), nonce)).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def make(self, approval_id: str, *, not_after: float | None = None
             ) -> dict[LinkDecision, str]:
        """The ``t`` values of the Accept and Decline links of one notification (one nonce).

        ``not_after``: a wall-clock time the links must not outlive (the approval's own
        deadline), when earlier than the TTL.
        """
        exp = self._clock() + self.ttl_s
        if not_after is not None:
            exp = min(exp, not_after)
        exp_i = int(exp)
        nonce = _b64(secrets.token_bytes(12))
        return {d: f"{exp_i}.{nonce}.{self._mac(approval_id, d, exp_i, nonce)}"
                for d in ("accept", "decline")}

    def check(self, approval_id: str, decision: str, token: str) -> tuple[str, int]:
        """The nonce and expiry of a valid, unused link (nothing is spent).

        Raises:
            ActionRefused: 403 ``action_invalid`` (not a link of this conductor, or not for this
                approval and decision), 410 ``action_expired``, 409 ``action_used``.
        """
        exp_text, _, rest = token.partition(".")
        nonce, _, mac = rest.partition(".")
        if (decision not in ("accept", "decline") or not exp_text.isdigit() or not nonce
                or not hmac.compare_digest(
                    mac.encode(), self._mac(approval_id, decision, int(exp_text),
                                            nonce).encode())):
            raise ActionRefused(
                403, "action_invalid",
                "This link is not valid for this approval: use the buttons of the notification "
                "about it, or the console.")
        if int(exp_text) <= self._clock():
            raise ActionRefused(
                410, "action_expired",
                "This link has expired (links work for 15 minutes at most): decide in the "
                "console.")
        if nonce in self._used or nonce in self._busy:
            raise ActionRefused(
                409, "action_used",
                "This notification's buttons were already used: each works once.")
        return nonce, int(exp_text)

    async def spend(self, approval_id: str, decision: str, token: str,
                    deliver: Callable[[], Awaitable[T]]) -> T:
        """Check the link, run ``deliver()`` (an async callable deciding the approval) and
        record the nonce as used — also when codexd refused the decision (already decided):
        the link has done what it could. If ``deliver`` raises :class:`Retryable`, the link
        stays usable.

        Raises:
            ActionRefused: see :meth:`check`.
        """
        nonce, exp = self.check(approval_id, decision, token)
        self._busy.add(nonce)
        try:
            try:
                result = await deliver()
            except Retryable:
                raise
            except BaseException:
                await self._record(nonce, exp)
                raise
            await self._record(nonce, exp)
            return result
        finally:
            self._busy.discard(nonce)

    async def _record(self, nonce: str, exp: int) -> None:
        async with self._lock:
            self._used[nonce] = exp
            line = _encoder.encode(_Used(nonce, exp)) + b"\n"
            await trio.to_thread.run_sync(self._append, line)

    def _append(self, line: bytes) -> None:
        fd = os.open(self._used_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as file:
            append_synced(file, line, file.seek(0, os.SEEK_END))


class Retryable(Exception):
    """Raised by a ``deliver`` that could not reach codexd: the link is not spent."""
