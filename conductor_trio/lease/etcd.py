"""The leader lease on etcd v3, through its JSON gateway (``/v3/...``) with httpx.

Several conductors share one etcd key. The keeper of each one:

* reads the key; when it is absent, **grants** an etcd lease with the TTL and takes the key with a
  transaction that succeeds only if the key does not exist (``create_revision == 0``), putting
  its own ``{nodeId, host, localApiBase}`` under that lease;
* as the holder, **keeps the lease alive** every TTL/3 and **watches** the key, so a deletion (a
  revoke, an operator, an expiry it slept through) ends its leadership at once;
* as a standby, watches the key and campaigns as soon as it is deleted;
* on a graceful stop, **revokes** the lease so the key goes at once.

**Safety.** ``leader`` is computed when asked, on this process's own clock (``CLOCK_BOOTTIME``
where the platform has it, so a suspended laptop counts its sleep): only while
``now < t_send + TTL - margin``, where ``t_send`` is when the last successful keep-alive (or the
grant) was *sent*. etcd starts a lease's TTL when it *receives* the request, after ``t_send``, so
this node stops answering ``leader`` before etcd can expire its key and let another node take it.
A process frozen past its TTL answers ``degraded`` on its very first question after waking.
The key's ``create_revision`` is the term and the fencing token: it grows with every new holder.

The HTTP calls to etcd's JSON gateway (failover, watches, wire details) are
:mod:`conductor_trio.lease.etcd_gateway`.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from conductor_trio.lease.etcd_gateway import EtcdGateway, as_int, b64
from conductor_trio.lease.file import LeaseHolder, LeaseRole, LeaseStoreError, iso_from_clock

__all__ = ["EtcdLeaseKeeper", "boot_clock"]


def boot_clock() -> float:
    """Seconds on a clock that never goes back and, on Linux, keeps counting through a suspend
    (``CLOCK_BOOTTIME``): a lease judged on ``CLOCK_MONOTONIC`` would look younger than it is
    after a laptop lid was closed. Elsewhere ``time.monotonic`` (macOS's counts sleep too)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()




_holder_encoder = msgspec.json.Encoder()
_holder_decoder = msgspec.json.Decoder(LeaseHolder)


def _holder_from(kv: dict[str, Any]) -> LeaseHolder | None:
    try:
        return _holder_decoder.decode(base64.b64decode(kv.get("value", "")))
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        # Not one of ours (someone else wrote the key): a holder we cannot name.
        return None


class EtcdLeaseKeeper:
    """The conductor's lease on one etcd key: campaign, keep alive, watch, revoke.

    It has the face the service and the app use (``role``, ``holder``, ``snapshot``, ``run``,
    ``release``) plus :meth:`run_fenced` for jobs only the leader may run.

    Args:
        gateway: the etcd client.
        key: the leader key (e.g. ``/baa-conductor/leader``).
        holder: what this conductor writes as the key's value.
        ttl_s: the etcd lease TTL (whole seconds).
        margin_s: how long before ``t_send + TTL`` this node stops answering ``leader``
            (default: a tenth of the TTL, at least 0.2 s).
        configured_role: ``primary`` or ``standby`` (reported; etcd decides who leads).
        clock: the judging clock (:func:`boot_clock`; tests pass ``trio.current_time``).
        wall_clock: for the ISO times in the snapshot.
        failure_limit: consecutive failed etcd calls before a non-holder reports ``degraded``.
    """

    store_kind = "etcd"

    def __init__(
        self,
        gateway: EtcdGateway,
        *,
        key: str,
        holder: LeaseHolder | Callable[[], LeaseHolder],
        ttl_s: int = 10,
        margin_s: float | None = None,
        configured_role: str = "primary",
        clock: Callable[[], float] = boot_clock,
        wall_clock: Callable[[], float] = time.time,
        failure_limit: int = 2,
    ) -> None:
        self.gateway = gateway
        self.key = key
        self._holder_value = holder
        self.ttl_s = ttl_s
        self.renew_s = ttl_s / 3
        self.margin_s = margin_s if margin_s is not None else max(0.2, ttl_s / 10)
        self.configured_role = configured_role
        self.clock = clock
        self.wall_clock = wall_clock
        self.failure_limit = failure_limit
        # Who holds the key, as last read (ours while leading).
        self.holder: LeaseHolder | None = None
        self.term: int | None = None
        self.revision: int | None = None
        self.lease_id: str | None = None
        self._leading = False
        self._valid_until: float | None = None
        self.acquired_at: float | None = None
        self.renewed_at: float | None = None
        self.consecutive_failures = 0
        self.last_error: str | None = None
        # Why this node last stopped leading (kept after later successes, for the views).
        self.last_loss: str | None = None
        self.keepalives = 0
        self._changed = trio.Event()
        self._fences: set[trio.CancelScope] = set()

    # -- the role, judged when asked ----------------------------------------------------------

    @property
    def role(self) -> LeaseRole:
        if self._leading:
            if self._valid_until is not None and self.clock() < self._valid_until:
                return "leader"
            return "degraded"  # not renewed in time: etcd may expire the key any moment now
        if self.consecutive_failures >= self.failure_limit:
            return "degraded"
        return "standby"

    @property
    def lease_holder_id(self) -> str | None:
        return f"{self.holder.nodeId}@{self.holder.host}" if self.holder else None

    @property
    def holds_lease(self) -> bool:
        return self._leading

    def _own_value(self) -> LeaseHolder:
        value = self._holder_value
        return value() if callable(value) else value

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _failed(self, exc: Exception) -> None:
        self.consecutive_failures += 1
        self.last_error = str(exc) or type(exc).__name__
        self._notify()

    def _succeeded(self) -> None:
        if self.consecutive_failures or self.last_error:
            self.consecutive_failures = 0
            self.last_error = None
            self._notify()

    def _renewed(self, sent_at: float, ttl: int) -> None:
        # From the *send* time: etcd counts the TTL from when it received the request.
        self._valid_until = sent_at + min(ttl, self.ttl_s) - self.margin_s
        self.renewed_at = self.wall_clock()
        deadline = trio.current_time() + (self._valid_until - self.clock())
        for scope in self._fences:
            scope.deadline = deadline
        self._notify()

    def _lost(self, reason: str) -> None:
        if not self._leading:
            return
        self._leading = False
        self._valid_until = None
        self.last_loss = reason
        for scope in list(self._fences):
            scope.cancel(reason=f"leader lease lost: {reason}")
        self._notify()

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[LeaseRole] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Campaign, then lead or follow, forever; ``task_status.started(role)`` after the
        first attempt.

        **Cancellation:** the loop just stops; call :meth:`release` (shielded) afterwards.
        """
        started = False
        while True:
            start_revision: int | None = None
            try:
                start_revision = await self._campaign()
            except LeaseStoreError as exc:
                self._failed(exc)
            if not started:
                task_status.started(self.role)
                started = True
            if self._leading:
                await self._lead()
            elif start_revision is not None:
                await self._follow(start_revision)
            else:
                await trio.sleep(self.renew_s)

    async def _campaign(self) -> int:
        """Read the key; take it if absent. Returns the revision to watch from."""
        key = b64(self.key)
        current = await self.gateway.call("/v3/kv/range", {"key": key})
        self._succeeded()
        kvs = current.get("kvs") or []
        if kvs:
            self._saw(kvs[0])
            return as_int(current["header"].get("revision")) + 1
        sent_at = self.clock()
        grant = await self.gateway.call("/v3/lease/grant", {"TTL": str(self.ttl_s)})
        lease_id = str(grant["ID"])
        ttl = as_int(grant.get("TTL"))
        value = _holder_encoder.encode(self._own_value())
        try:
            txn = await self.gateway.call("/v3/kv/txn", {
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                             "create_revision": "0"}],
                "success": [{"request_put": {"key": key, "value": b64(value),
                                             "lease": lease_id}}],
                "failure": [{"request_range": {"key": key}}],
            })
        except LeaseStoreError:
            await self._revoke(lease_id)
            raise
        revision = as_int(txn["header"].get("revision"))
        if txn.get("succeeded"):
            self.lease_id = lease_id
            self.holder = self._own_value()
            self.term = self.revision = revision
            self._leading = True
            self.acquired_at = self.wall_clock()
            self._renewed(sent_at, ttl)
            return revision + 1
        # Someone was quicker: that lease is of no use.
        await self._revoke(lease_id)
        responses = txn.get("responses") or [{}]
        kvs = (responses[0].get("response_range") or {}).get("kvs") or []
        if kvs:
            self._saw(kvs[0])
        return revision + 1

    def _saw(self, kv: dict[str, Any]) -> None:
        """Record the holder named by the key's current value."""
        self.holder = _holder_from(kv)
        self.term = as_int(kv.get("create_revision"))
        self.revision = as_int(kv.get("mod_revision"))
        self._notify()

    async def _lead(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_alive, nursery.cancel_scope)
            nursery.start_soon(self._watch_own, nursery.cancel_scope)

    async def _keep_alive(self, done: trio.CancelScope) -> None:
        assert self.lease_id is not None
        delay = self.renew_s
        while self._leading:
            await trio.sleep(delay)
            sent_at = self.clock()
            try:
                answer = await self.gateway.call("/v3/lease/keepalive", {"ID": self.lease_id})
            except LeaseStoreError as exc:
                self._failed(exc)  # the role turns degraded by itself once the time is up
                # Try again soon, not a whole renew period later: one failed round (an etcd
                # election, a member down) must not cost a lease that has time left.
                left = (self._valid_until or 0.0) - self.clock()
                delay = min(self.renew_s, max(left / 3, 0.1))
                continue
            delay = self.renew_s
            self._succeeded()
            ttl = as_int((answer.get("result") or {}).get("TTL"))
            if ttl <= 0:
                self._lost("etcd says the lease is gone (keep-alive without TTL)")
                done.cancel(reason="lease gone")
                return
            self.keepalives += 1
            self._renewed(sent_at, ttl)

    async def _watch_own(self, done: trio.CancelScope) -> None:
        """Any change to our key means we no longer hold it: a delete (revoke, expiry, an
        operator) or a put by someone else — a new key, or ours rewritten in place (same
        ``create_revision``, another value, no longer on our lease). We put the key once, at
        revision ``term``, and watch from the revision after it, so every event is someone
        else's; the read after a broken watch compares ``mod_revision`` for the same reason."""
        start = (self.term or 0) + 1
        while self._leading:
            try:
                async with self.gateway.watch(self.key, start) as results:
                    async for result in results:
                        if result.get("canceled"):
                            break  # compacted or refused: re-check by reading below
                        if result.get("events"):
                            self._lost("the leader key was deleted or replaced")
                            done.cancel(reason="leader key changed")
                            return
                        start = as_int((result.get("header") or {}).get("revision")) + 1
            except LeaseStoreError as exc:
                self.last_error = str(exc)
            await trio.sleep(self.renew_s)
            try:
                current = await self.gateway.call("/v3/kv/range", {"key": b64(self.key)})
            except LeaseStoreError:
                continue
            kvs = current.get("kvs") or []
            if not kvs or as_int(kvs[0].get("mod_revision")) != self.term:
                self._lost("the leader key is no longer ours")
                done.cancel(reason="leader key changed")
                return
            start = as_int(current["header"].get("revision")) + 1

    async def _follow(self, start_revision: int) -> None:
        """Watch the holder's key until it goes (then campaign at once). Bounded by one TTL so
        a silent watch (a frozen etcd) still ends in a fresh read."""
        with trio.move_on_after(self.ttl_s):
            try:
                async with self.gateway.watch(self.key, start_revision) as results:
                    async for result in results:
                        if result.get("canceled"):
                            return
                        for event in result.get("events") or []:
                            if event.get("type") == "DELETE":
                                self.holder = None
                                self._notify()
                                return
                            self._saw(event.get("kv") or {})
            except LeaseStoreError as exc:
                self._failed(exc)
                await trio.sleep(self.renew_s)

    async def _revoke(self, lease_id: str) -> None:
        # A failed revoke costs nothing: the lease expires by itself after its TTL.
        with contextlib.suppress(LeaseStoreError):
            await self.gateway.call("/v3/lease/revoke", {"ID": lease_id})

    async def release(self) -> None:
        """Revoke our lease so the key goes at once and a standby takes over without waiting
        for the TTL. Failures are ignored (the lease then expires after its TTL)."""
        lease_id, self.lease_id = self.lease_id, None
        self._lost("released")
        if lease_id is not None:
            await self._revoke(lease_id)
            if self.holder == self._own_value():
                self.holder = None

    # -- fenced jobs --------------------------------------------------------------------------

    async def run_fenced(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` only while this node leads; cancel it the moment it stops leading.

        The job runs in a cancel scope whose deadline is the lease's local validity (moved on
        by each keep-alive) and which is cancelled on any loss, so it stops at once when the
        lease is lost, and at the latest when it could have expired. When it leads again, the
        job starts again.

        **Cancellation:** a cancel from outside ends this loop and the job.
        """
        while True:
            while self.role != "leader":
                await self._changed.wait()
            with trio.CancelScope() as scope:
                assert self._valid_until is not None
                scope.deadline = trio.current_time() + (self._valid_until - self.clock())
                self._fences.add(scope)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._watch_validity, scope)
                        await job()
                        nursery.cancel_scope.cancel(reason="fenced job done")
                finally:
                    self._fences.discard(scope)
            if not scope.cancelled_caught:
                return

    async def _watch_validity(self, fence: trio.CancelScope) -> None:
        # The fence's deadline is on Trio's clock, which stops while the machine sleeps; the
        # role is judged on the boot clock, which does not. Check it often enough that a job
        # never outlives the lease by more than a second after a suspend.
        while True:
            await trio.sleep(min(1.0, self.renew_s / 3))
            if self.role != "leader":
                fence.cancel(reason="leader lease no longer valid")
                return

    # -- the view ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The lease state for ``/v1/runtime``, ``/v1/system/state`` and ``/v1/status``."""
        role = self.role
        holder = self.holder
        left = (None if self._valid_until is None
                else round(self._valid_until - self.clock(), 3))
        return {
            "store": "etcd",
            "endpoints": [e.removeprefix("http://") for e in self.gateway.endpoints],
            "key": self.key,
            "role": role,
            "configured_role": self.configured_role,
            "holder_id": self.lease_holder_id,
            "holder_host": holder.host if holder else None,
            "holder": msgspec.to_builtins(holder) if holder else None,
            "term": self.term,
            "fencing_token": self.term,
            "revision": self.revision,
            "lease_id": self.lease_id if self._leading else None,
            "acquired_at": iso_from_clock(self.acquired_at) if self._leading else None,
            "renewed_at": iso_from_clock(self.renewed_at) if self._leading else None,
            "expires_at": (iso_from_clock(self.wall_clock() + left)
                           if left is not None and self._leading else None),
            "valid_for_s": left if self._leading else None,
            "is_holder": role == "leader",
            "ttl_s": self.ttl_s,
            "renew_s": round(self.renew_s, 3),
            "margin_s": self.margin_s,
            "keepalives": self.keepalives,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_loss": self.last_loss,
        }
