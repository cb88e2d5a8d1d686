"""The leader lease: a small store interface, a file-backed store, and the keeper loop.

One lease record names the node that leads. The keeper of each conductor reads it and, by its
configured role, takes or renews it:

* a holder renews its own lease every ``renew_s`` (``expires_at = now + ttl_s``);
* anyone may take a lease that has **expired** (the term goes up by one);
* nobody takes a live lease held by someone else;
* when no lease exists, a ``primary`` takes it at once while a ``standby`` waits one TTL after its
  own start, so a primary starting at the same time wins;
* a leader releases its lease on a graceful stop (``expires_at = now``) so a standby can take
  over without waiting for the TTL;
* ``failure_limit`` (2) consecutive store failures make the keeper ``degraded``; the next
  success puts it back to ``leader`` (still holding) or ``standby`` (lost it meanwhile).

The store only has to offer ``read`` and an atomic ``compare_and_set``; :class:`FileLeaseStore`
does it with an exclusive ``flock`` and an atomic file replace, so a shared store (SQL row,
etcd key) can replace it later without touching the keeper.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
import trio

from codexd_trio.base.files import atomic_write_bytes

LeaseRole = Literal["leader", "standby", "degraded"]


class LeaseHolder(msgspec.Struct, frozen=True, kw_only=True):
    """Who holds the lease and where to reach it (the etcd key's value; ``details.leader`` of a
    ``not_leader`` answer)."""

    nodeId: str  # the wire name
    host: str
    localApiBase: str | None = None  # the wire name


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The lease document. Times are seconds on the keepers' shared clock (epoch by default)."""

    holder_id: str
    holder_host: str
    holder_role: str
    term: int
    acquired_at: float
    renewed_at: float
    expires_at: float
    # Where a standby sends its clients (absent in files written before it existed).
    holder_node: str | None = None
    holder_api: str | None = None


class LeaseStoreError(Exception):
    """The lease store could not be read or written."""


class LeaseStore(Protocol):
    """Where the lease lives. Implementations must make ``compare_and_set`` atomic."""

    async def read(self) -> LeaseRecord | None:
        """The current record, or ``None`` if there has never been one."""
        ...

    async def compare_and_set(self, expected: LeaseRecord | None, new: LeaseRecord) -> bool:
        """Write ``new`` only if the stored record still equals ``expected``; return whether."""
        ...


_decoder = msgspec.json.Decoder(LeaseRecord)
_encoder = msgspec.json.Encoder()


class FileLeaseStore:
    """A lease in one JSON file (atomic replace), with ``flock`` on a side file for the CAS.

    **Resource handling:** every call opens and closes its own file descriptors in a worker
    thread; nothing stays open between calls.
    """

    def __init__(self, path: Path, *, lock_timeout_s: float = 2.0) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        # Below the keeper's store timeout, so a stuck lock is a failed step, not a hung one.
        self.lock_timeout_s = lock_timeout_s

    def _read_sync(self) -> LeaseRecord | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LeaseStoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            return _decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise LeaseStoreError(f"{self.path} is not a lease record: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise LeaseStoreError(f"{self.path} is not JSON: {exc}") from exc

    def _cas_sync(self, expected: LeaseRecord | None, new: LeaseRecord) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._lock_path, "a+b") as lock:
                _lock_bounded(lock.fileno(), self.lock_timeout_s)
                try:
                    if self._read_sync() != expected:
                        return False
                    atomic_write_bytes(self.path, _encoder.encode(new))
                    return True
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            raise LeaseStoreError(f"cannot write {self.path}: {exc.strerror}") from exc

    async def read(self) -> LeaseRecord | None:
        return await trio.to_thread.run_sync(self._read_sync)

    async def compare_and_set(self, expected: LeaseRecord | None, new: LeaseRecord) -> bool:
        return await trio.to_thread.run_sync(self._cas_sync, expected, new)


def _lock_bounded(fd: int, timeout_s: float) -> None:
    """``flock(LOCK_EX)`` that gives up: a blocking flock in a worker thread cannot be
    cancelled, so a stuck holder would stall the lease loop past its TTL unnoticed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LeaseStoreError(
                    f"the lease lock is held by another process for over {timeout_s:g} s"
                ) from None
            time.sleep(0.01)


class MemoryLeaseStore:
    """An in-process lease store (tests, or several keepers in one process)."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.failing = False

    async def read(self) -> LeaseRecord | None:
        await trio.lowlevel.checkpoint()
        if self.failing:
            raise LeaseStoreError("memory lease store set to fail")
        return self.record

    async def compare_and_set(self, expected: LeaseRecord | None, new: LeaseRecord) -> bool:
        await trio.lowlevel.checkpoint()
        if self.failing:
            raise LeaseStoreError("memory lease store set to fail")
        if self.record != expected:
            return False
        self.record = new
        return True


def iso_from_clock(value: float | None) -> str | None:
    """An ISO-8601 UTC string for a clock value (meaningful when the clock is epoch time)."""
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


class LeaseKeeper:
    """Acquires, renews and releases the lease for one conductor, and knows its role.

    Args:
        store: where the lease lives.
        holder_id: this conductor's stable id (``node@host``).
        holder_host: the host name recorded in the lease.
        role: ``primary`` or ``standby`` (only changes who takes a lease that never existed).
        ttl_s: lease lifetime from each renewal.
        renew_s: time between attempts.
        clock: the shared clock (``time.time``; tests pass ``trio.current_time``).
        failure_limit: consecutive store failures before ``degraded``.
        store_timeout_s: bound on one store call (a hung store counts as a failure).
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        holder_id: str,
        holder_host: str,
        role: str = "primary",
        ttl_s: float = 30.0,
        renew_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        failure_limit: int = 2,
        store_timeout_s: float = 5.0,
        holder_node: str | None = None,
        holder_api: Callable[[], str | None] | None = None,
    ) -> None:
        self.store = store
        self.holder_id = holder_id
        self.holder_host = holder_host
        self.holder_node = holder_node
        self._holder_api = holder_api
        self.configured_role = role
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.clock = clock
        self.failure_limit = failure_limit
        self.store_timeout_s = store_timeout_s
        self._role: LeaseRole = "standby"
        self.lease: LeaseRecord | None = None
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_attempt_at: float | None = None
        self.attempts = 0
        self._started_at = clock()

    @property
    def role(self) -> LeaseRole:
        """The role *now*: a leader whose lease has run out by this clock is not a leader,
        whatever the last step decided (a process frozen past its TTL — SIGSTOP, a laptop lid,
        a VM pause — must not answer ``leader`` even once when it wakes)."""
        if self._role == "leader" and (self.lease is None or self.lease.expires_at <= self.clock()):
            return "degraded"
        return self._role

    @role.setter
    def role(self, value: LeaseRole) -> None:
        self._role = value

    @property
    def holds_lease(self) -> bool:
        return self.lease is not None and self.lease.holder_id == self.holder_id

    @property
    def holder(self) -> LeaseHolder | None:
        """Who holds the lease, as last read, and where to reach it."""
        lease = self.lease
        if lease is None:
            return None
        return LeaseHolder(nodeId=lease.holder_node or lease.holder_id.split("@", 1)[0],
                           host=lease.holder_host, localApiBase=lease.holder_api)

    @property
    def lease_holder_id(self) -> str | None:
        """Who holds the lease, as last read."""
        return self.lease.holder_id if self.lease else None

    def _record(self, *, term: int, acquired_at: float, now: float) -> LeaseRecord:
        return LeaseRecord(
            holder_id=self.holder_id,
            holder_host=self.holder_host,
            holder_role=self.configured_role,
            term=term,
            acquired_at=acquired_at,
            renewed_at=now,
            expires_at=now + self.ttl_s,
            holder_node=self.holder_node,
            holder_api=self._holder_api() if self._holder_api is not None else None,
        )

    def _next(self, current: LeaseRecord | None, now: float) -> LeaseRecord | None:
        """The record to write, or ``None`` to stay a standby."""
        if current is None:
            if self.configured_role == "standby" and now < self._started_at + self.ttl_s:
                return None
            return self._record(term=1, acquired_at=now, now=now)
        if current.holder_id == self.holder_id:
            return self._record(term=current.term, acquired_at=current.acquired_at, now=now)
        if current.expires_at <= now:
            return self._record(term=current.term + 1, acquired_at=now, now=now)
        return None

    async def step(self) -> LeaseRole:
        """One acquire-or-renew attempt; returns the role after it.

        **Cancellation:** a cancel during the store call leaves the role unchanged; the store's
        compare-and-set either happened or not, and the next step reads the truth.
        """
        now = self.clock()
        self.last_attempt_at = now
        self.attempts += 1
        try:
            with trio.fail_after(self.store_timeout_s):
                current = await self.store.read()
                new = self._next(current, now)
                won = new is not None and await self.store.compare_and_set(current, new)
        except (LeaseStoreError, trio.TooSlowError) as exc:
            self.consecutive_failures += 1
            self.last_error = str(exc) or type(exc).__name__
            if self.consecutive_failures >= self.failure_limit:
                self.role = "degraded"
            elif self.role == "leader" and self.lease is not None and self.lease.expires_at <= now:
                # Our own lease ran out while we could not renew it: not a leader any more.
                self.role = "degraded"
            return self.role
        self.consecutive_failures = 0
        self.last_error = None
        if won:
            self.lease = new
            self.role = "leader"
        else:
            # Lost a race or someone else holds it: re-read to report the real holder.
            self.lease = current if new is None else await self._reread(current)
            self.role = "standby"
        return self.role

    async def _reread(self, fallback: LeaseRecord | None) -> LeaseRecord | None:
        try:
            with trio.fail_after(self.store_timeout_s):
                return await self.store.read()
        except (LeaseStoreError, trio.TooSlowError):
            return fallback

    async def run(self, *, task_status: trio.TaskStatus[LeaseRole] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """The lease loop: one step, report the role, then a step every ``renew_s``.

        **Cancellation:** the loop just stops; call :meth:`release` afterwards (shielded) to hand
        the lease over at once on a graceful stop.
        """
        task_status.started(await self.step())
        while True:
            await trio.sleep(self.renew_s)
            await self.step()

    async def release(self) -> None:
        """Expire our own lease now so a standby can take it without waiting for the TTL.

        Store failures are ignored (the lease then simply expires after its TTL).
        """
        if not self.holds_lease or self.lease is None:
            return
        now = self.clock()
        released = msgspec.structs.replace(self.lease, renewed_at=now, expires_at=now)
        try:
            with trio.fail_after(self.store_timeout_s):
                if await self.store.compare_and_set(self.lease, released):
                    self.lease = released
        except (LeaseStoreError, trio.TooSlowError):
            pass
        self.role = "standby"

    def snapshot(self) -> dict[str, Any]:
        """The lease state for ``/v1/runtime``, ``/v1/system/state`` and ``/v1/status``."""
        lease = self.lease
        return {
            "store": "file",
            "role": self.role,
            "configured_role": self.configured_role,
            "holder_id": lease.holder_id if lease else None,
            "holder_host": lease.holder_host if lease else None,
            "term": lease.term if lease else None,
            "fencing_token": lease.term if lease else None,
            "acquired_at": iso_from_clock(lease.acquired_at) if lease else None,
            "renewed_at": iso_from_clock(lease.renewed_at) if lease else None,
            "expires_at": iso_from_clock(lease.expires_at) if lease else None,
            "is_holder": self.holds_lease and self.role == "leader",
            "ttl_s": self.ttl_s,
            "renew_s": self.renew_s,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
        }
