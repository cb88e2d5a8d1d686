"""Edges of the leader lease that the transition tests in test_lease.py and
test_lease_etcd_unit.py leave open: what the views show, the store's error messages, races lost
between read and write, the exact boundaries, and the defaults. Written against the mutants
mutmut left alive (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import base64
import fcntl
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing

from conductor_trio.lease import etcd as lease_etcd
from conductor_trio.lease import file as lease_file
from conductor_trio.lease.etcd import EtcdLeaseKeeper, boot_clock
from conductor_trio.lease.etcd_gateway import EtcdGateway
from conductor_trio.lease.file import (
    FileLeaseStore,
    LeaseHolder,
    LeaseKeeper,
    LeaseRecord,
    LeaseStoreError,
    MemoryLeaseStore,
    iso_from_clock,
)
from tests.test_lease_etcd_unit import (
    KEY,
    FencedJob,
    GatewayDouble,
    Link,
    _Lines,
    role_now,
)

# 2023-11-14T22:13:20.250Z on the keepers' shared (epoch) clock.
T0 = 1_700_000_000.25
T0_ISO = "2023-11-14T22:13:20.250Z"


class Clock:
    """A wall clock the test moves by hand (the keeper's ``clock``)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _iso(value: float) -> str:
    out = iso_from_clock(value)
    assert out is not None
    return out


def _epoch_keeper(store: MemoryLeaseStore, clock: Callable[[], float], name: str = "a", **kw: Any
                  ) -> LeaseKeeper:
    return LeaseKeeper(store, holder_id=f"{name}@host-{name}", holder_host=f"host-{name}",
                       ttl_s=30.0, renew_s=10.0, clock=clock, **kw)


# -- what /v1/runtime, /v1/system/state and /v1/status show -----------------------------------


def test_iso_times_are_utc_with_milliseconds_and_a_z() -> None:
    # The views' acquired_at/renewed_at/expires_at: the same instant on every node, whatever
    # the machine's time zone, in the Z form the rest of the API uses.
    assert iso_from_clock(T0) == T0_ISO
    assert iso_from_clock(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_from_clock(None) is None


async def test_a_fresh_keeper_shows_no_lease_and_no_error() -> None:
    keeper = _epoch_keeper(MemoryLeaseStore(), Clock())
    assert keeper.holder is None
    assert keeper.lease_holder_id is None
    assert keeper.snapshot() == {
        "store": "file", "role": "standby", "configured_role": "primary",
        "holder_id": None, "holder_host": None, "term": None, "fencing_token": None,
        "acquired_at": None, "renewed_at": None, "expires_at": None, "is_holder": False,
        "ttl_s": 30.0, "renew_s": 10.0, "consecutive_failures": 0, "last_error": None,
    }


async def test_the_snapshot_names_the_lease_as_held_renewed_and_run_out() -> None:
    clock = Clock()
    store = MemoryLeaseStore()
    keeper = _epoch_keeper(store, clock, holder_node="node-a",
                           holder_api=lambda: "http://node-a:4317")
    assert await keeper.step() == "leader"
    # The record every other conductor reads: who, where, how to reach it, since when.
    assert store.record == LeaseRecord(
        holder_id="a@host-a", holder_host="host-a", holder_role="primary", term=1,
        acquired_at=T0, renewed_at=T0, expires_at=T0 + 30, holder_node="node-a",
        holder_api="http://node-a:4317")
    assert keeper.holder == LeaseHolder(nodeId="node-a", host="host-a",
                                        localApiBase="http://node-a:4317")
    leader_view = {
        "store": "file", "role": "leader", "configured_role": "primary",
        "holder_id": "a@host-a", "holder_host": "host-a", "term": 1, "fencing_token": 1,
        "acquired_at": T0_ISO, "renewed_at": T0_ISO, "expires_at": _iso(T0 + 30),
        "is_holder": True, "ttl_s": 30.0, "renew_s": 10.0, "consecutive_failures": 0,
        "last_error": None,
    }
    assert keeper.snapshot() == leader_view

    # A renewal keeps the acquisition time and the term, and moves the rest.
    clock.now = T0 + 10
    assert await keeper.step() == "leader"
    assert store.record is not None
    assert (store.record.acquired_at, store.record.renewed_at, store.record.term) == (
        T0, T0 + 10, 1)
    assert keeper.snapshot() == {**leader_view, "renewed_at": _iso(T0 + 10),
                                 "expires_at": _iso(T0 + 40)}

    # Frozen past its TTL: still the holder on record, but not a leader, and not shown as one.
    clock.now = T0 + 40
    assert keeper.snapshot() == {**leader_view, "role": "degraded", "is_holder": False,
                                 "renewed_at": _iso(T0 + 10), "expires_at": _iso(T0 + 40)}


async def test_a_standby_shows_the_holder_and_a_takeover_starts_a_new_term_now() -> None:
    clock = Clock()
    store = MemoryLeaseStore()
    a = _epoch_keeper(store, clock, "a")
    b = _epoch_keeper(store, clock, "b", role="standby")
    await a.step()
    assert await b.step() == "standby"
    assert b.holder == LeaseHolder(nodeId="a", host="host-a")
    snap = b.snapshot()
    assert (snap["role"], snap["holder_id"], snap["holder_host"], snap["is_holder"]) == (
        "standby", "a@host-a", "host-a", False)

    clock.now = T0 + 30  # a's lease runs out exactly now
    assert await b.step() == "leader"
    assert store.record == LeaseRecord(
        holder_id="b@host-b", holder_host="host-b", holder_role="standby", term=2,
        acquired_at=T0 + 30, renewed_at=T0 + 30, expires_at=T0 + 60)
    assert b.snapshot()["acquired_at"] == _iso(T0 + 30)


def test_the_keeper_defaults() -> None:
    # A keeper built with only its identity: a primary, 30 s leases renewed every 10 s.
    keeper = LeaseKeeper(MemoryLeaseStore(), holder_id="a@h", holder_host="h")
    snap = keeper.snapshot()
    assert (snap["configured_role"], snap["ttl_s"], snap["renew_s"]) == ("primary", 30.0, 10.0)


async def test_a_hung_store_fails_the_step_after_five_seconds_by_default(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class HungStore(MemoryLeaseStore):
        async def read(self) -> LeaseRecord | None:
            await trio.sleep_forever()
            raise AssertionError  # pragma: no cover

    keeper = LeaseKeeper(HungStore(), holder_id="a@h", holder_host="h", clock=trio.current_time)
    start = trio.current_time()
    assert await keeper.step() == "standby"
    # The bound is the default store timeout (5 s), well inside the default 10 s renewal...
    assert trio.current_time() - start == 5.0
    # ...and the error says what happened (a TooSlowError has no text of its own).
    assert keeper.last_error == "TooSlowError"
    assert keeper.consecutive_failures == 1


# -- store failures, as the views report them -------------------------------------------------


async def test_a_failing_store_is_reported_in_words_and_cleared_by_the_next_success() -> None:
    clock = Clock()
    store = MemoryLeaseStore()
    keeper = _epoch_keeper(store, clock)
    await keeper.step()
    store.failing = True
    clock.now = T0 + 10
    await keeper.step()
    assert keeper.snapshot()["last_error"] == "memory lease store set to fail"
    store.failing = False
    clock.now = T0 + 20
    assert await keeper.step() == "leader"
    snap = keeper.snapshot()
    assert (snap["last_error"], snap["consecutive_failures"]) == (None, 0)


async def test_a_store_failing_between_read_and_write_is_reported_in_words() -> None:
    class FailsAfterRead(MemoryLeaseStore):
        async def read(self) -> LeaseRecord | None:
            record = await super().read()
            self.failing = True  # the write that follows fails
            return record

    store = FailsAfterRead()
    keeper = _epoch_keeper(store, Clock())
    assert await keeper.step() == "standby"
    assert keeper.last_error == "memory lease store set to fail"
    assert store.record is None


async def test_one_failure_leaves_a_standby_standby_even_after_the_leaders_lease_ran_out(
) -> None:
    # degraded takes failure_limit failures in a row; one failed read is not yet it, whatever
    # the record last seen says.
    clock = Clock()
    store = MemoryLeaseStore()
    a = _epoch_keeper(store, clock, "a")
    b = _epoch_keeper(store, clock, "b", role="standby")
    await a.step()
    assert await b.step() == "standby"
    store.failing = True
    clock.now = T0 + 31
    assert await b.step() == "standby"
    assert b.snapshot()["role"] == "standby"


class SteppingBack:
    """A wall clock that NTP steps back by two seconds right after the step read it."""

    def __init__(self, values: list[float]) -> None:
        self.values: Iterator[float] = iter(values)
        self.last = values[0]

    def __call__(self) -> float:
        self.last = next(self.values, self.last)
        return self.last


async def test_a_leader_that_saw_its_lease_run_out_stays_degraded_if_the_clock_steps_back(
) -> None:
    # time.time (the default clock) can step back. A renewal that failed after its lease ran
    # out must leave the keeper degraded; the clock stepping back under it must not make it
    # leader again (another conductor may have taken the lease meanwhile).
    store = MemoryLeaseStore()
    clock = SteppingBack([T0, T0])
    keeper = _epoch_keeper(store, clock)
    assert await keeper.step() == "leader"
    store.failing = True
    # The failing step reads T0 + 30 (exactly when the lease runs out), then the clock says
    # T0 + 28 from there on.
    clock.values = iter([T0 + 30, T0 + 28])
    assert await keeper.step() == "degraded"
    assert keeper.consecutive_failures == 1
    assert keeper.role == "degraded"


# -- races lost between read and compare-and-set ----------------------------------------------


class RivalWinsTheRace(MemoryLeaseStore):
    """Another conductor writes its record between our read and our compare-and-set."""

    def __init__(self, rival: LeaseRecord, *, fail_reread: bool = False) -> None:
        super().__init__()
        self.rival = rival
        self.fail_reread = fail_reread
        self.reads = 0

    async def read(self) -> LeaseRecord | None:
        self.reads += 1
        if self.reads > 1 and self.fail_reread:
            raise LeaseStoreError("store gone")
        return await super().read()

    async def compare_and_set(self, expected: LeaseRecord | None, new: LeaseRecord) -> bool:
        self.record = self.rival
        return await super().compare_and_set(expected, new)


def _rival(term: int = 1) -> LeaseRecord:
    return LeaseRecord(holder_id="r@host-r", holder_host="host-r", holder_role="primary",
                       term=term, acquired_at=T0, renewed_at=T0, expires_at=T0 + 30)


async def test_a_lost_race_reports_the_winner_not_the_record_read_before_it() -> None:
    store = RivalWinsTheRace(_rival())
    keeper = _epoch_keeper(store, Clock())
    assert await keeper.step() == "standby"
    assert keeper.lease_holder_id == "r@host-r"
    assert keeper.snapshot()["holder_id"] == "r@host-r"


async def test_a_lost_race_whose_reread_fails_keeps_the_record_it_read() -> None:
    clock = Clock()
    store = RivalWinsTheRace(_rival(term=2), fail_reread=True)
    expired = msgspec.structs.replace(_rival(), holder_id="old@host-o", holder_host="host-o",
                                      expires_at=T0 - 1)
    store.record = expired
    keeper = _epoch_keeper(store, clock)
    assert await keeper.step() == "standby"
    assert keeper.lease == expired
    assert keeper.snapshot()["holder_id"] == "old@host-o"


# -- the standby's wait and release ------------------------------------------------------------


async def test_a_standby_takes_a_missing_lease_exactly_one_ttl_after_its_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    standby = LeaseKeeper(store, holder_id="b@h", holder_host="h", role="standby", ttl_s=30.0,
                          clock=trio.current_time)
    await trio.sleep(29.5)
    assert await standby.step() == "standby"
    await trio.sleep(0.5)
    assert await standby.step() == "leader"


async def test_release_expires_the_lease_now_and_keeps_showing_it() -> None:
    clock = Clock()
    store = MemoryLeaseStore()
    keeper = _epoch_keeper(store, clock)
    await keeper.step()
    clock.now = T0 + 5
    await keeper.release()
    released = LeaseRecord(holder_id="a@host-a", holder_host="host-a", holder_role="primary",
                           term=1, acquired_at=T0, renewed_at=T0 + 5, expires_at=T0 + 5)
    assert store.record == released
    assert keeper.lease == released
    snap = keeper.snapshot()
    assert (snap["role"], snap["holder_id"], snap["expires_at"], snap["renewed_at"]) == (
        "standby", "a@host-a", _iso(T0 + 5), _iso(T0 + 5))


async def test_release_by_a_standby_leaves_the_leaders_lease_alone() -> None:
    clock = Clock()
    store = MemoryLeaseStore()
    a = _epoch_keeper(store, clock, "a")
    b = _epoch_keeper(store, clock, "b", role="standby")
    await a.step()
    await b.step()
    before = store.record
    await b.release()  # a standby's graceful stop
    assert store.record == before
    assert a.role == "leader"


# -- the stores ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_compare_and_set_writes_only_over_the_expected_record(
    kind: str, tmp_path: Path,
) -> None:
    store: MemoryLeaseStore | FileLeaseStore = (
        MemoryLeaseStore() if kind == "memory" else FileLeaseStore(tmp_path / "lease.json"))
    assert await store.compare_and_set(None, _rival(1)) is True
    # A writer that read nothing, or an older record, loses and changes nothing.
    assert await store.compare_and_set(None, _rival(5)) is False
    assert await store.compare_and_set(_rival(3), _rival(5)) is False
    assert await store.read() == _rival(1)
    assert await store.compare_and_set(_rival(1), _rival(2)) is True
    assert await store.read() == _rival(2)


async def test_the_file_store_creates_its_missing_state_directories(tmp_path: Path) -> None:
    path = tmp_path / "state" / "conductor" / "lease.json"
    store = FileLeaseStore(path)
    assert await store.compare_and_set(None, _rival()) is True
    assert await FileLeaseStore(path).read() == _rival()


async def test_the_file_store_says_what_is_wrong_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lease.json"
    store = FileLeaseStore(path)
    path.write_text('{"holder_id": "a"}')
    with pytest.raises(LeaseStoreError, match=r"lease\.json is not a lease record: "):
        await store.read()
    path.write_text("{not json")
    with pytest.raises(LeaseStoreError, match=r"lease\.json is not JSON: "):
        await store.read()
    path.unlink()
    path.mkdir()
    with pytest.raises(LeaseStoreError, match=r"cannot read .*lease\.json: Is a directory"):
        await store.read()
    blocked = FileLeaseStore(tmp_path / "a-file" / "lease.json")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(LeaseStoreError, match=r"cannot write .*a-file/lease\.json: "):
        await blocked.compare_and_set(None, _rival())


class FakeTime:
    """``time`` for the lease module: monotonic seconds that move only when it sleeps, so the
    lock's bounded wait runs at once and is measured exactly. ``on_sleep`` runs at each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = 0
        self.on_sleep: list[Any] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        # Rounded, so 200 polls of 0.01 s land on the deadline exactly, as real time may.
        self.now = round(self.now + seconds, 6)
        for action in self.on_sleep:
            action()


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(lease_file, "time", fake)
    return fake


async def test_a_held_lock_is_given_up_after_two_seconds_by_default(
    tmp_path: Path, fake_time: FakeTime,
) -> None:
    path = tmp_path / "lease.json"
    store = FileLeaseStore(path)
    with open(tmp_path / "lease.json.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another conductor, stuck
        with pytest.raises(LeaseStoreError,
                           match="the lease lock is held by another process for over 2 s"):
            await store.compare_and_set(None, _rival())
    # It tried until the two seconds were up, and gave up the moment they were.
    assert fake_time.now == 1002.0
    assert await store.read() is None


async def test_a_lock_held_only_briefly_is_taken_as_soon_as_it_is_free(
    tmp_path: Path, fake_time: FakeTime,
) -> None:
    path = tmp_path / "lease.json"
    store = FileLeaseStore(path)
    held = open(tmp_path / "lease.json.lock", "a+b")  # noqa: SIM115 - closed by on_sleep
    fcntl.flock(held.fileno(), fcntl.LOCK_EX)
    fake_time.on_sleep.append(held.close)  # the other conductor finishes its write
    try:
        assert await store.compare_and_set(None, _rival()) is True
    finally:
        held.close()
    # One short poll, not a second's wait, for a lock another conductor held a moment.
    assert fake_time.sleeps == 1
    assert fake_time.now - 1000.0 < 0.05


# == the etcd lease, against the gateway double of test_lease_etcd_unit.py ====================

KEY_B64 = base64.b64encode(KEY.encode()).decode()


class HistoryDouble(GatewayDouble):
    """The gateway double that also keeps the key's history, so a watch starts where it is
    asked to (as etcd's does) instead of "from now"."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.starts: dict[int, int] = {}  # id(watcher's channel) → its start revision

    def _emit(self, key: str, event: dict[str, Any]) -> None:
        self.history.append((self.revision, key, event))
        line = json.dumps({"result": {"header": self.header(), "events": [event]}}) + "\n"
        for wkey, send in list(self.watchers):
            if wkey == key and self.revision >= self.starts.get(id(send), 0):
                try:
                    send.send_nowait(line.encode())
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    self.watchers.remove((wkey, send))


class HistoryLink(Link):
    """Watches from ``start_revision``: past events first; a start etcd cannot parse is
    refused (HTTP 400, as the gateway does)."""

    double: HistoryDouble
    fail_ranges = 0  # how many reads of the key to refuse from now on

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if len(self.requests) > 2000:
            raise AssertionError("a keeper calls etcd in a tight loop")
        if request.url.path == "/v3/kv/range" and self.fail_ranges > 0:
            self.fail_ranges -= 1
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path != "/v3/watch" or self.cut:
            return await super().handle_async_request(request)
        await trio.lowlevel.checkpoint()
        self.requests.append(f"{request.url.host}/v3/watch")
        create = json.loads(request.content)["create_request"]
        start = create.get("start_revision", "0")
        if not (isinstance(start, str) and start.isdigit()):
            return httpx.Response(400, json={"error": f"bad start_revision {start!r}",
                                             "code": 3})
        send, receive = trio.open_memory_channel[bytes](100)
        send.send_nowait((json.dumps(
            {"result": {"header": self.double.header(), "created": True}}) + "\n").encode())
        for revision, key, event in self.double.history:
            if key == create["key"] and revision >= int(start):
                send.send_nowait((json.dumps({"result": {
                    "header": {"revision": str(revision)}, "events": [event]}}) + "\n").encode())
        self.double.starts[id(send)] = int(start)
        self.double.watchers.append((create["key"], send))
        return httpx.Response(200, stream=_Lines(receive))


def _etcd(double: HistoryDouble, name: str, *, link: Link | None = None,
          clock: Callable[[], float] = trio.current_time, **kw: Any,
          ) -> tuple[EtcdLeaseKeeper, Link]:
    """A keeper with the defaults (TTL 10 s) and a fixed wall clock, so its views are exact."""
    link = link or HistoryLink(double)
    gateway = EtcdGateway(("etcd:2379",), request_timeout_s=1.0, transport=link)
    kw.setdefault("holder", _holder(name))
    return EtcdLeaseKeeper(gateway, key=KEY, clock=clock, wall_clock=lambda: T0, **kw), link


def _holder(name: str) -> LeaseHolder:
    return LeaseHolder(nodeId=name, host="h", localApiBase=f"http://{name}:4317")


ETCD_FRESH = {
    "store": "etcd", "endpoints": ["etcd:2379"], "key": KEY, "role": "standby",
    "configured_role": "primary", "holder_id": None, "holder_host": None, "holder": None,
    "term": None, "fencing_token": None, "revision": None, "lease_id": None,
    "acquired_at": None, "renewed_at": None, "expires_at": None, "valid_for_s": None,
    "is_holder": False, "ttl_s": 10, "renew_s": 3.333, "margin_s": 1.0, "keepalives": 0,
    "consecutive_failures": 0, "last_error": None, "last_loss": None,
}


async def test_etcd_views_of_a_fresh_node_a_leader_a_standby_and_a_released_leader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, link_a = _etcd(double, "a")
    b, _ = _etcd(double, "b", configured_role="standby")
    assert a.snapshot() == ETCD_FRESH
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "leader"
        a_view = {
            **ETCD_FRESH, "role": "leader", "holder_id": "a@h", "holder_host": "h",
            "holder": {"nodeId": "a", "host": "h", "localApiBase": "http://a:4317"},
            "term": 2, "fencing_token": 2, "revision": 2, "lease_id": "101",
            # Valid for TTL - margin from when the grant was sent.
            "acquired_at": T0_ISO, "renewed_at": T0_ISO, "expires_at": _iso(T0 + 9),
            "valid_for_s": 9.0, "is_holder": True,
        }
        assert a.snapshot() == a_view
        assert await nursery.start(b.run) == "standby"
        assert b.snapshot() == {
            **ETCD_FRESH, "configured_role": "standby", "holder_id": "a@h", "holder_host": "h",
            "holder": a_view["holder"], "term": 2, "fencing_token": 2, "revision": 2,
        }
        # One keep-alive later (every TTL/3), 0.1234 s after it was sent: to the millisecond.
        await trio.sleep(10 / 3 + 0.1234)
        assert a.snapshot() == {**a_view, "valid_for_s": 8.877, "expires_at": _iso(T0 + 8.877),
                                "keepalives": 1}
        await a.release()
        assert "etcd/v3/lease/revoke" in link_a.requests
        assert a.snapshot() == {**ETCD_FRESH, "term": 2, "fencing_token": 2, "revision": 2,
                                "keepalives": 1, "last_loss": "released"}
        nursery.cancel_scope.cancel()


async def test_etcd_a_callable_holder_is_what_goes_into_the_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The service passes a function (its public address can change at run time).
    double = HistoryDouble()
    a, _ = _etcd(double, "a", holder=lambda: _holder("a"))
    async with trio.open_nursery() as nursery:
        assert await nursery.start(a.run) == "leader"
        assert json.loads(base64.b64decode(double.kv[KEY_B64]["value"]))["nodeId"] == "a"
        assert a.lease_holder_id == "a@h"
        nursery.cancel_scope.cancel()


async def test_etcd_two_failed_calls_in_a_row_make_a_standby_degraded_by_default(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, link = _etcd(double, "a")
    link.cut = True
    async with trio.open_nursery() as nursery:
        assert await nursery.start(a.run) == "standby"
        await trio.sleep(10 / 3 + 0.01)  # the second attempt, one renew period later
        assert (a.role, a.consecutive_failures) == ("degraded", 2)
        assert a.last_error is not None
        assert a.last_error.startswith("no etcd endpoint answered: ")
        link.cut = False
        await trio.sleep(10 / 3)
        snap = a.snapshot()
        assert (snap["role"], snap["consecutive_failures"], snap["last_error"]) == (
            "leader", 0, None)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("ttl", "margin", "leader_until"), [
    (10, None, 9.0),  # a tenth of the TTL
    (1, None, 0.8),  # at least 0.2 s
    (10, 2.5, 7.5),  # as configured
])
async def test_etcd_a_node_stops_answering_leader_a_margin_before_its_ttl(
    autojump_clock: trio.testing.MockClock, ttl: int, margin: float | None,
    leader_until: float,
) -> None:
    # The process stands still from the grant on: only its clock moves.
    double = HistoryDouble()
    frozen = [0.0]
    a, _ = _etcd(double, "a", ttl_s=ttl, margin_s=margin,
                 clock=lambda: trio.current_time() + frozen[0])
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        assert await nursery.start(a.run) == "leader"
        frozen[0] = leader_until - 0.001 - (trio.current_time() - start)
        assert role_now(a) == "leader"
        frozen[0] += 0.001
        assert role_now(a) == "degraded"
        nursery.cancel_scope.cancel()


def _error_now(k: EtcdLeaseKeeper) -> str | None:
    """The last error, read again (mypy would otherwise keep its earlier narrowing)."""
    return k.last_error


async def _watching(double: GatewayDouble, count: int) -> None:
    """Until ``count`` watches are open on the double (each keeper opens its own)."""
    with trio.fail_after(10):  # virtual seconds: a watch that never comes fails the test
        while len(double.watchers) < count:  # noqa: ASYNC110 - virtual time
            await trio.sleep(0.01)


def _put(double: GatewayDouble, kv: dict[str, str]) -> None:
    """Someone else writes the key (another program, an operator)."""
    double.revision += 1
    double.kv[KEY_B64] = {"key": KEY_B64, "create_revision": str(double.revision),
                          "mod_revision": str(double.revision), **kv}


@pytest.mark.parametrize("value", [None, base64.b64encode(b"not ours").decode()],
                         ids=["empty", "not-json"])
async def test_etcd_a_key_someone_else_wrote_is_a_holder_we_cannot_name(
    autojump_clock: trio.testing.MockClock, value: str | None,
) -> None:
    double = HistoryDouble()
    # etcd leaves an empty value out of its JSON altogether.
    _put(double, {} if value is None else {"value": value})
    double.revision += 3  # later writes elsewhere: the key's revisions stay its own
    a, _ = _etcd(double, "a")
    async with trio.open_nursery() as nursery:
        assert await nursery.start(a.run) == "standby"
        snap = a.snapshot()
        assert (snap["holder"], snap["holder_id"], snap["term"], snap["revision"]) == (
            None, None, 2, 2)
        nursery.cancel_scope.cancel()


class RaceLink(HistoryLink):
    """Between our read (key absent) and our transaction, a rival takes the key; or etcd
    answers the transaction with an error."""

    def __init__(self, double: HistoryDouble, *, txn_error: bool = False) -> None:
        super().__init__(double)
        self.txn_error = txn_error
        self.raced = False  # only the first campaign loses the race

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v3/kv/txn" and self.txn_error:
            self.requests.append(f"{request.url.host}{path}")
            return httpx.Response(429, json={"error": "etcdserver: too many requests",
                                             "code": 8})
        if path == "/v3/kv/txn" and KEY_B64 not in self.double.kv and not self.raced:
            self.raced = True
            grant = self.double.answer("/v3/lease/grant", {"TTL": "10"})
            assert grant is not None
            self.double.answer("/v3/kv/txn", {
                "compare": [{"key": KEY_B64}],
                "success": [{"request_put": {
                    "key": KEY_B64, "lease": grant["ID"],
                    "value": base64.b64encode(msgspec.json.encode(_holder("r"))).decode()}}]})
        return await super().handle_async_request(request)


async def test_etcd_a_lost_campaign_names_the_winner_and_gives_its_lease_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a", link=RaceLink(double))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "standby"
        assert a.lease_holder_id == "r@h"
        assert (a.term, a.revision) == (2, 2)
        # Our own, now useless, lease was revoked: only the winner's is left.
        assert list(double.leases) == ["102"]
        nursery.cancel_scope.cancel()


async def test_etcd_a_failed_transaction_gives_the_lease_back_and_says_why(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a", link=RaceLink(double, txn_error=True))
    async with trio.open_nursery() as nursery:
        assert await nursery.start(a.run) == "standby"
        assert a.last_error == "etcd: etcdserver: too many requests"
        assert double.leases == {}
        nursery.cancel_scope.cancel()


async def test_etcd_a_standby_follows_a_new_value_of_the_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    b, _ = _etcd(double, "b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await _watching(double, 2)
        # The holder's value changes in place (its address, say): the standby shows the new one.
        kv = dict(double.kv[KEY_B64])
        double.revision += 1
        kv["value"] = base64.b64encode(msgspec.json.encode(
            LeaseHolder(nodeId="a", host="h2"))).decode()
        kv["mod_revision"] = str(double.revision)
        double.kv[KEY_B64] = kv
        double._emit(KEY_B64, {"kv": kv})
        await trio.sleep(0.1)
        assert b.lease_holder_id == "a@h2"
        assert (b.term, b.revision) == (2, 3)
        nursery.cancel_scope.cancel()


async def test_etcd_a_cancelled_watch_makes_a_standby_read_the_key_again_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, link_a = _etcd(double, "a")
    b, _ = _etcd(double, "b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await _watching(double, 2)
        # a's key goes without a DELETE reaching b (compacted away), then etcd cancels b's
        # watch: b must read again now, not a TTL later.
        link_a.cut = True
        del double.kv[KEY_B64]
        line = json.dumps({"result": {"header": double.header(), "canceled": True}}) + "\n"
        for _, send in list(double.watchers):
            send.send_nowait(line.encode())
        await trio.sleep(0.5)
        assert b.role == "leader"
        nursery.cancel_scope.cancel()


class WatchRefused(HistoryLink):
    """A link on which the first ``refuse`` watch requests are refused (other calls work)."""

    def __init__(self, double: HistoryDouble, refuse: int) -> None:
        super().__init__(double)
        self.refuse = refuse

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/watch" and self.refuse > 0:
            self.refuse -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return await super().handle_async_request(request)


async def test_etcd_a_failed_watch_is_reported_and_cleared_by_the_next_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a", link=WatchRefused(double, refuse=1))
    async with trio.open_nursery() as nursery:
        assert await nursery.start(a.run) == "leader"
        await trio.sleep(0.1)
        assert a.last_error is not None
        assert a.last_error.startswith("no etcd endpoint accepted the watch: ")
        assert a.consecutive_failures == 0  # the lease itself is fine
        await trio.sleep(10 / 3)  # the next keep-alive succeeds
        assert (_error_now(a), role_now(a)) == (None, "leader")
        nursery.cancel_scope.cancel()


async def test_etcd_a_standby_whose_watch_fails_says_so_and_keeps_trying(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    b, _ = _etcd(double, "b", link=WatchRefused(double, refuse=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        assert await nursery.start(b.run) == "standby"
        await trio.sleep(0.1)
        assert b.last_error is not None
        assert b.last_error.startswith("no etcd endpoint accepted the watch: ")
        assert b.consecutive_failures == 1
        await trio.sleep(10 / 3)
        assert (role_now(b), b.consecutive_failures, _error_now(b), b.lease_holder_id) == (
            "standby", 0, None, "a@h")
        nursery.cancel_scope.cancel()


async def test_etcd_a_failed_keep_alive_is_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, link = _etcd(double, "a")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await _watching(double, 1)  # an open watch is not cut: only the keep-alive fails
        link.cut = True
        await trio.sleep(10 / 3 + 0.1)
        assert a.last_error is not None
        assert a.last_error.startswith("no etcd endpoint answered: ")
        assert (a.consecutive_failures, a.role) == (1, "leader")
        nursery.cancel_scope.cancel()


async def test_etcd_release_with_etcd_unreachable_still_steps_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, link = _etcd(double, "a")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        nursery.cancel_scope.cancel()
    link.cut = True
    await a.release()  # the lease then simply runs out in etcd
    assert (a.role, a.holds_lease, a.last_loss) == ("standby", False, "released")


async def test_etcd_release_by_a_node_that_never_led_asks_etcd_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, link = _etcd(double, "a")
    await a.release()
    assert link.requests == []
    assert a.snapshot()["last_loss"] is None


async def test_etcd_release_by_a_standby_keeps_naming_the_leader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    b, _ = _etcd(double, "b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        nursery.cancel_scope.cancel()
    await b.release()
    await a.release()
    assert b.lease_holder_id == "a@h"
    assert a.lease_holder_id is None


class StoppingJob(FencedJob):
    """A fenced job that notes why and when it was stopped (as a job would log it)."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[str | None] = []
        self.stopped_at: list[float] = []

    async def __call__(self) -> None:
        try:
            await super().__call__()
        except trio.Cancelled as exc:
            self.reasons.append(exc.reason)
            self.stopped_at.append(trio.current_time())
            raise


async def test_etcd_a_fenced_job_runs_on_through_keep_alives_and_hears_why_it_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    job = StoppingJob()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        loop = trio.CancelScope()

        async def lease_loop(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                             ) -> None:
            with loop:
                await a.run(task_status=task_status)

        await nursery.start(lease_loop)
        nursery.start_soon(a.run_fenced, job)
        await trio.sleep(5 * 10)  # fifteen keep-alives
        assert (job.running, job.starts) == (True, 1)
        loop.cancel()  # a graceful stop: the loop ends, then the lease is released
        await a.release()
        await trio.sleep(0.1)
        assert not job.running
        assert job.reasons == ["leader lease lost: released"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("cut_after", [0.5, 5.0], ids=["before-a-keep-alive", "after-one"])
async def test_etcd_a_fenced_job_stops_the_moment_the_node_stops_answering_leader(
    autojump_clock: trio.testing.MockClock, cut_after: float,
) -> None:
    double = HistoryDouble()
    a, link = _etcd(double, "a")
    job = StoppingJob()
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        # The job starts off the lease's beat, so that no periodic check happens to fall on
        # the very moment the lease runs out.
        await trio.sleep(0.25)
        nursery.start_soon(a.run_fenced, job)
        await trio.sleep(cut_after)
        link.cut = True
        while role_now(a) == "leader":  # noqa: ASYNC110 - virtual time, measured below
            await trio.sleep(0.01)
        not_leader_seen_at = trio.current_time()
        await trio.sleep(1.5)  # time for any later way of stopping it
        nursery.cancel_scope.cancel()
    # Stopped by the fence's own deadline, not by a later poll.
    assert len(job.stopped_at) == 1
    assert job.stopped_at[0] <= not_leader_seen_at


async def test_etcd_a_fenced_job_that_finishes_is_not_run_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    runs = []

    async def job() -> None:
        runs.append(trio.current_time())
        await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        with trio.fail_after(5):
            await a.run_fenced(job)
        assert len(runs) == 1
        nursery.cancel_scope.cancel()


class FakeClocks:
    """``time`` for the etcd module, with or without ``CLOCK_BOOTTIME`` (Linux or macOS)."""

    CLOCK_BOOTTIME = 7

    def __init__(self) -> None:
        self.asked: list[int] = []

    def clock_gettime(self, clock_id: int) -> float:
        self.asked.append(clock_id)
        return 5000.0  # counts the suspend

    def monotonic(self) -> float:
        return 1000.0  # does not


class FakeClocksWithoutBoottime:
    def clock_gettime(self, clock_id: int) -> float:
        raise AssertionError("no CLOCK_BOOTTIME here")

    def monotonic(self) -> float:
        return 1000.0


def test_the_etcd_lease_is_judged_on_the_clock_that_counts_a_suspend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    linux = FakeClocks()
    monkeypatch.setattr(lease_etcd, "time", linux)
    assert boot_clock() == 5000.0
    assert linux.asked == [FakeClocks.CLOCK_BOOTTIME]
    monkeypatch.setattr(lease_etcd, "time", FakeClocksWithoutBoottime())
    assert boot_clock() == 1000.0  # elsewhere: monotonic (macOS's counts sleep)


# -- the leader's own watch: a key deleted, replaced or no longer there -----------------------


def _delete_key(double: GatewayDouble, *, tell_watchers: bool = True) -> None:
    """An operator deletes the leader key (``etcdctl del``): the lease itself lives on."""
    del double.kv[KEY_B64]
    double.revision += 1
    if tell_watchers:
        double._emit(KEY_B64, {"type": "DELETE", "kv": {
            "key": KEY_B64, "mod_revision": str(double.revision)}})


def _cancel_watches(double: GatewayDouble) -> None:
    """etcd cancels every open watch (compaction past its start, a member going away)."""
    line = json.dumps({"result": {"header": double.header(), "canceled": True}}) + "\n"
    for _, send in list(double.watchers):
        send.send_nowait(line.encode())
    double.watchers.clear()


async def _lead_with_job(nursery: trio.Nursery, double: GatewayDouble, a: EtcdLeaseKeeper,
                         job: StoppingJob) -> None:
    nursery.start_soon(double.expiry_loop)
    assert await nursery.start(a.run) == "leader"
    nursery.start_soon(a.run_fenced, job)
    await _watching(double, 1)
    await trio.sleep(0.1)
    assert job.running


async def test_etcd_a_leader_whose_key_is_deleted_steps_down_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    job = StoppingJob()
    async with trio.open_nursery() as nursery:
        await _lead_with_job(nursery, double, a, job)
        first_term = a.term
        assert first_term is not None
        _delete_key(double)
        await trio.sleep(0.01)
        # At once, through the watch (not a keep-alive, not a TTL later).
        assert a.last_loss == "the leader key was deleted or replaced"
        assert job.reasons == ["leader lease lost: the leader key was deleted or replaced"]
        # Nobody else campaigns here, so a takes the key again, under a new term.
        await trio.sleep(0.5)
        assert role_now(a) == "leader"
        assert a.term is not None
        assert a.term > first_term
        nursery.cancel_scope.cancel()


async def test_etcd_a_leader_whose_key_is_replaced_follows_the_new_holder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    job = StoppingJob()
    async with trio.open_nursery() as nursery:
        await _lead_with_job(nursery, double, a, job)
        # Deleted and created again by someone else, the DELETE lost between watch events:
        # the watch shows a PUT of a key with another create_revision.
        del double.kv[KEY_B64]
        double.revision += 1
        _put(double, {"value": base64.b64encode(msgspec.json.encode(_holder("r"))).decode()})
        double._emit(KEY_B64, {"kv": double.kv[KEY_B64]})
        await trio.sleep(0.01)
        assert a.last_loss == "the leader key was deleted or replaced"
        assert not job.running
        await trio.sleep(0.5)
        assert (role_now(a), a.lease_holder_id) == ("standby", "r@h")
        # The lease a held is no longer shown as its own.
        assert a.snapshot()["lease_id"] is None
        nursery.cancel_scope.cancel()


async def test_etcd_a_leader_whose_watch_is_cancelled_reads_its_key_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The key went without a DELETE reaching the watch, which etcd then cancelled: the leader
    # must find out by reading the key within a renew period, while its keep-alives still work.
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    job = StoppingJob()
    async with trio.open_nursery() as nursery:
        await _lead_with_job(nursery, double, a, job)
        _delete_key(double, tell_watchers=False)
        _cancel_watches(double)
        await trio.sleep(10 / 3 + 0.01)
        assert a.last_loss == "the leader key is no longer ours"
        assert job.reasons == ["leader lease lost: the leader key is no longer ours"]
        nursery.cancel_scope.cancel()


async def test_etcd_a_cancelled_watch_on_a_key_still_ours_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    job = StoppingJob()
    async with trio.open_nursery() as nursery:
        await _lead_with_job(nursery, double, a, job)
        _cancel_watches(double)
        await trio.sleep(10 / 3 + 0.5)
        assert (role_now(a), a.last_loss, job.running, job.starts) == ("leader", None, True, 1)
        # The watch is open again and still sees what happens to the key.
        assert len(double.watchers) == 1
        _delete_key(double)
        await trio.sleep(0.01)
        assert a.last_loss == "the leader key was deleted or replaced"
        nursery.cancel_scope.cancel()


async def test_etcd_a_leader_keeps_a_one_second_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A keep-alive answers the TTL left (1 here): only a missing TTL means the lease is gone.
    double = HistoryDouble()
    a, _ = _etcd(double, "a", ttl_s=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        await nursery.start(a.run)
        await trio.sleep(5)
        assert (role_now(a), a.last_loss) == ("leader", None)
        assert a.keepalives >= 14
        nursery.cancel_scope.cancel()


async def test_etcd_a_lease_gone_is_named_as_such(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    a, _ = _etcd(double, "a")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        assert a.lease_id is not None
        double.watchers.clear()
        double.leases.pop(a.lease_id)
        await trio.sleep(10 / 3 + 0.1)
        assert a.last_loss == "etcd says the lease is gone (keep-alive without TTL)"
        nursery.cancel_scope.cancel()


class CountingLink(HistoryLink):
    """Counts the keep-alives tried, also those refused while cut."""

    def __init__(self, double: HistoryDouble) -> None:
        super().__init__(double)
        self.keepalives_tried = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/lease/keepalive":
            self.keepalives_tried += 1
        return await super().handle_async_request(request)


@pytest.mark.parametrize("outage_until", [7.5, 8.75])
async def test_etcd_keep_alives_during_an_outage_are_retried_often_enough_not_hammered(
    autojump_clock: trio.testing.MockClock, outage_until: float,
) -> None:
    # etcd unreachable from 3.0 s; the lease (granted at 0 s, 10 s TTL) is valid here until
    # 9 s. Retries come ever closer as the time left runs out, so an outage that ends before
    # then costs nothing; but they stay a fraction of the time left, not a tight loop.
    double = HistoryDouble()
    link = CountingLink(double)
    a, _ = _etcd(double, "a", link=link)
    roles: set[str] = set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "leader"
        await trio.sleep(3.0)
        link.cut = True
        while trio.current_time() < outage_until:
            await trio.sleep(0.01)
            roles.add(role_now(a))
        link.cut = False
        tried_in_outage = link.keepalives_tried
        while trio.current_time() < 15:
            await trio.sleep(0.05)
            roles.add(role_now(a))
        nursery.cancel_scope.cancel()
    assert roles == {"leader"}
    assert tried_in_outage <= 12


async def test_etcd_after_a_suspend_a_fenced_job_stops_within_a_second_and_hears_why(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    slept = [0.0]
    a, _ = _etcd(double, "a", clock=lambda: trio.current_time() + slept[0])
    job = StoppingJob()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "leader"
        started = trio.current_time()
        nursery.start_soon(a.run_fenced, job)
        # Wake from a long suspend just after 1.12 s of the job's life (past any check made
        # on a period over one second).
        await trio.sleep_until(started + 1.12)
        slept[0] = 60.0
        woke = trio.current_time()
        await trio.sleep_until(woke + 1.0)
        assert not job.running
        assert job.reasons == ["leader lease no longer valid"]
        nursery.cancel_scope.cancel()


# -- watches start where they must: after a handover, older events are history ----------------


class Running:
    """A keeper's loop in its own cancel scope (to stop it gracefully, then release)."""

    def __init__(self, keeper: EtcdLeaseKeeper) -> None:
        self.keeper = keeper
        self.scope = trio.CancelScope()
        self.link: Link | None = None

    async def run(self, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            await self.keeper.run(task_status=task_status)

    async def stop_and_release(self) -> None:
        self.scope.cancel()
        await self.keeper.release()


async def _handed_over(nursery: trio.Nursery, double: HistoryDouble) -> Running:
    """a led (term 2) and released (the key's DELETE at revision 3); b took it (term 4).
    Returns b, leading."""
    nursery.start_soon(double.expiry_loop)
    a = Running(_etcd(double, "a")[0])
    b_keeper, b_link = _etcd(double, "b")
    b = Running(b_keeper)
    b.link = b_link
    await nursery.start(a.run)
    await nursery.start(b.run)
    await _watching(double, 2)
    await a.stop_and_release()
    while role_now(b.keeper) != "leader":  # noqa: ASYNC110 - virtual time
        await trio.sleep(0.01)
    assert (b.keeper.term, double.revision) == (4, 4)
    await _watching(double, 1)
    return b


async def test_etcd_after_a_handover_the_leader_and_a_late_standby_keep_to_the_present(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    async with trio.open_nursery() as nursery:
        b = await _handed_over(nursery, double)
        c, c_link = _etcd(double, "c")
        assert await nursery.start(c.run) == "standby"
        await trio.sleep(2 * 10)
        # The old DELETE (revision 3) is nobody's news: b still leads, c follows b calmly
        # (one fresh read per TTL), and no call failed.
        assert (role_now(b.keeper), b.keeper.last_loss) == ("leader", None)
        assert (c.role, c.lease_holder_id, c.consecutive_failures, c.last_error) == (
            "standby", "b@h", 0, None)
        assert c_link.requests.count("etcd/v3/kv/range") <= 3
        # Finding the key held, c asks etcd for no lease of its own (no grant-and-revoke churn
        # at every look).
        assert "etcd/v3/lease/grant" not in c_link.requests
        # b stops gracefully: c sees the DELETE at once and takes over.
        await b.stop_and_release()
        await trio.sleep(0.5)
        assert role_now(c) == "leader"
        nursery.cancel_scope.cancel()


async def test_etcd_after_a_handover_the_next_change_to_the_key_reaches_the_leader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    async with trio.open_nursery() as nursery:
        b = await _handed_over(nursery, double)
        _delete_key(double)  # revision 5, the very next one
        await trio.sleep(0.01)
        assert b.keeper.last_loss == "the leader key was deleted or replaced"
        nursery.cancel_scope.cancel()


async def test_etcd_after_a_handover_a_cancelled_watch_resumes_from_the_present(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    async with trio.open_nursery() as nursery:
        b = await _handed_over(nursery, double)
        _cancel_watches(double)
        await trio.sleep(10 / 3 + 0.5)  # b read its key again and watches anew
        assert (role_now(b.keeper), b.keeper.last_loss, b.keeper.last_error) == (
            "leader", None, None)
        await _watching(double, 1)
        _delete_key(double)
        await trio.sleep(0.01)
        assert b.keeper.last_loss == "the leader key was deleted or replaced"
        nursery.cancel_scope.cancel()


async def test_etcd_a_standby_that_lost_the_campaign_sees_the_winner_go_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    double = HistoryDouble()
    # Before all this, an earlier holder's key went (put at revision 2, DELETE at 3).
    _put(double, {"value": base64.b64encode(msgspec.json.encode(_holder("old"))).decode()})
    double._emit(KEY_B64, {"kv": double.kv[KEY_B64]})
    _delete_key(double)
    link = RaceLink(double)
    a, _ = _etcd(double, "a", link=link)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(double.expiry_loop)
        assert await nursery.start(a.run) == "standby"
        await _watching(double, 1)
        await trio.sleep(0.1)
        # a follows the winner from the present: that old DELETE is not news to it (one read
        # of the key, at the start).
        assert (a.lease_holder_id, link.requests.count("etcd/v3/kv/range")) == ("r@h", 1)
        _delete_key(double)  # the winner's key goes at the very next revision
        await trio.sleep(0.5)
        assert role_now(a) == "leader"
        nursery.cancel_scope.cancel()


async def test_etcd_a_leader_whose_watch_ended_and_read_failed_watches_on_from_the_present(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The watch stream ends (a member restarts) and the read that follows fails too: the
    # leader watches again from where its last watch was, neither replaying older events
    # (the DELETE of the handover) nor skipping the next one.
    double = HistoryDouble()
    async with trio.open_nursery() as nursery:
        b = await _handed_over(nursery, double)
        assert isinstance(b.link, HistoryLink)
        b.link.fail_ranges = 1
        for _, send in list(double.watchers):
            send.close()
        double.watchers.clear()
        await trio.sleep(10 / 3 + 0.1)
        # Watching again at once after the failed read, and it was accepted.
        assert len(double.watchers) == 1
        assert (role_now(b.keeper), b.keeper.last_loss, b.keeper.last_error) == (
            "leader", None, None)
        _delete_key(double)
        await trio.sleep(0.01)
        assert b.keeper.last_loss == "the leader key was deleted or replaced"
        nursery.cancel_scope.cancel()
