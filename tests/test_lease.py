"""Lease transitions on a virtual clock, and the file-backed store's compare-and-set."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from conductor_trio.lease.file import (
    FileLeaseStore,
    LeaseKeeper,
    LeaseRecord,
    LeaseStoreError,
    MemoryLeaseStore,
)


def _keeper(store: MemoryLeaseStore | FileLeaseStore, name: str, role: str = "primary"
            ) -> LeaseKeeper:
    return LeaseKeeper(store, holder_id=f"{name}@host", holder_host="host", role=role,
                       ttl_s=30.0, renew_s=10.0, clock=trio.current_time)


async def test_primary_acquires_and_renews_keeping_its_term(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    primary = _keeper(store, "a")
    async with trio.open_nursery() as nursery:
        assert await nursery.start(primary.run) == "leader"
        first = store.record
        assert first is not None
        assert (first.term, first.holder_id) == (1, "a@host")
        await trio.sleep(25)  # two renewals later
        assert store.record is not None
        assert store.record.term == 1
        assert store.record.expires_at > first.expires_at + 15
        assert primary.role == "leader"
        nursery.cancel_scope.cancel()


async def test_standby_takes_only_an_expired_lease(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    primary = _keeper(store, "a")
    standby = _keeper(store, "b", role="standby")
    async with trio.open_nursery() as nursery:
        primary_scope = trio.CancelScope()

        async def run_primary(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                              ) -> None:
            with primary_scope:
                await primary.run(task_status=task_status)

        await nursery.start(run_primary)
        assert await nursery.start(standby.run) == "standby"
        await trio.sleep(60)
        # A live lease is never taken, however long the standby watches.
        assert (primary.role, standby.role) == ("leader", "standby")
        assert store.record is not None
        assert store.record.holder_id == "a@host"

        # The primary stops renewing (hung, killed): after the TTL the standby takes over.
        primary_scope.cancel()
        last_renewal = store.record.renewed_at
        # Still the primary's until it expires...
        await trio.sleep_until(last_renewal + 29)
        assert standby.snapshot()["role"] == "standby"
        # ...and the standby's within one renew interval after that.
        await trio.sleep_until(last_renewal + 30 + 10 + 0.5)
        assert standby.snapshot()["role"] == "leader"
        assert store.record.holder_id == "b@host"
        assert store.record.term == 2
        nursery.cancel_scope.cancel()

    # The old primary, back, finds a live lease held by someone else.
    assert await primary.step() == "standby"
    assert primary.lease is not None
    assert primary.lease.holder_id == "b@host"


async def test_standby_leaves_a_missing_lease_to_the_primary_for_one_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    standby = _keeper(store, "b", role="standby")
    assert await standby.step() == "standby"
    assert store.record is None
    await trio.sleep(31)
    assert await standby.step() == "leader"
    assert store.record is not None
    assert store.record.term == 1


async def test_two_renew_failures_degrade_and_recovery_restores(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    keeper = _keeper(store, "a")
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        store.failing = True
        await trio.sleep(10.5)  # one failed renewal
        assert (keeper.role, keeper.consecutive_failures) == ("leader", 1)
        await trio.sleep(10)  # the second in a row
        assert (keeper.role, keeper.consecutive_failures) == ("degraded", 2)
        assert keeper.last_error is not None
        assert "fail" in keeper.last_error
        store.failing = False
        await trio.sleep(10)
        assert (keeper.role, keeper.consecutive_failures) == ("leader", 0)
        assert store.record is not None
        assert store.record.term == 1
        nursery.cancel_scope.cancel()


async def test_degraded_leader_whose_lease_was_taken_becomes_standby(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    a = _keeper(store, "a")
    b = _keeper(store, "b", role="standby")
    await a.step()
    store.failing = True
    await trio.sleep(10)
    await a.step()
    await trio.sleep(10)
    assert await a.step() == "degraded"
    store.failing = False
    await trio.sleep(15)  # a's lease (renewed at t=0) has now expired
    assert await b.step() == "leader"
    assert await a.step() == "standby"


async def test_release_lets_a_standby_take_over_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    a = _keeper(store, "a")
    b = _keeper(store, "b", role="standby")
    await a.step()
    assert await b.step() == "standby"
    await a.release()
    assert a.role == "standby"
    assert await b.step() == "leader"
    assert store.record is not None
    assert (store.record.holder_id, store.record.term) == ("b@host", 2)


def _record(holder: str, term: int) -> LeaseRecord:
    return LeaseRecord(holder_id=holder, holder_host="h", holder_role="primary", term=term,
                       acquired_at=0.0, renewed_at=0.0, expires_at=30.0)


async def test_file_store_compare_and_set(tmp_path: Path) -> None:
    path = tmp_path / "conductor" / "lease.json"
    one, two = FileLeaseStore(path), FileLeaseStore(path)
    assert await one.read() is None
    assert await one.compare_and_set(None, _record("a", 1)) is True
    # The other store (another conductor on this node) saw nothing: its write must lose.
    assert await two.compare_and_set(None, _record("b", 1)) is False
    assert await two.read() == _record("a", 1)
    assert await two.compare_and_set(_record("a", 1), _record("b", 2)) is True
    assert await one.read() == _record("b", 2)
    assert not list(path.parent.glob(".*.tmp"))

    path.write_text("{not json")
    with pytest.raises(LeaseStoreError):
        await one.read()
    # A corrupt lease file counts as a store failure for the keeper, not a crash.
    keeper = LeaseKeeper(one, holder_id="a", holder_host="h", failure_limit=1)
    assert await keeper.step() == "degraded"


async def test_a_leader_whose_lease_ran_out_is_not_leader_before_its_next_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Frozen past its TTL (no step ran): the first question after waking gets "degraded".
    store = MemoryLeaseStore()
    keeper = _keeper(store, "a")
    assert await keeper.step() == "leader"
    await trio.sleep(29.9)
    assert _role(keeper) == "leader"
    await trio.sleep(0.2)
    assert _role(keeper) == "degraded"
    assert keeper.snapshot()["role"] == "degraded"
    assert await keeper.step() == "leader"  # nobody else took it: renewed, a leader again


def _role(keeper: LeaseKeeper) -> str:
    return keeper.role  # asked anew each time (mypy would narrow a repeated attribute)


async def test_a_stuck_lease_lock_fails_the_step_instead_of_hanging_it(tmp_path: Path) -> None:
    import fcntl

    store = FileLeaseStore(tmp_path / "lease.json", lock_timeout_s=0.2)
    keeper = LeaseKeeper(store, holder_id="a@host", holder_host="host", ttl_s=30.0,
                         renew_s=10.0, store_timeout_s=5.0)
    (tmp_path / "lease.json.lock").touch()
    with open(tmp_path / "lease.json.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another process holding it forever
        with trio.fail_after(4):  # the store's own bound, well inside the keeper's
            assert await keeper.step() == "standby"
        assert keeper.last_error is not None
        assert "held by another process" in keeper.last_error
    assert await keeper.step() == "leader"
