"""The Trio app-server client against ``tests/fake_app_server.py`` (a scriptable stand-in)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from codexd_trio.protocol.appserver import (
    AppServerClient,
    AppServerError,
    ChildExited,
    OverloadRetry,
    RequestTimeout,
    ServerRequest,
)
from codexd_trio.protocol.child import ChildSpec, ExitStatus
from codexd_trio.protocol.spawn import open_app_server
from codexd_trio.testing.daemon import group_alive
from tests.notifications import Notifications
from tests.test_store import all_tokens_held

FAKE = Path(__file__).with_name("fake_app_server.py")
FAST_RETRY = OverloadRetry(attempts=6, initial_delay=0.005, max_delay=0.04)


def fake_spec(tmp_path: Path) -> ChildSpec:
    return ChildSpec(argv=[sys.executable, str(FAKE)], stderr_log=tmp_path / "stderr.log")


async def test_handshake_and_notifications(tmp_path: Path) -> None:
    recorder = Notifications()
    with trio.fail_after(30):
        async with open_app_server(
            fake_spec(tmp_path), on_notification=recorder, client_name="tester"
        ) as client:
            assert client.initialize_result["userAgent"].startswith("tester/")
            assert client.initialize_result["pid"] == client.pid
            await recorder.wait_for("configWarning")
            assert client.exit_status is None


async def test_requests_before_initialize_fail_typed(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_app_server(
            fake_spec(tmp_path), on_notification=Notifications(), initialize=False
        ) as client:
            with pytest.raises(AppServerError) as info:
                await client.request("fake/echo", {"x": 1})
            assert info.value.code == -32600
            assert info.value.message == "Not initialized"
            assert info.value.method == "fake/echo"
            await client.initialize(name="late", version="1", title="Late")
            assert client.initialize_result["userAgent"].startswith("late/")
            assert await client.request("fake/echo", {"x": 1}) == {"x": 1}


async def test_params_default_to_empty_object(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_app_server(fake_spec(tmp_path), on_notification=Notifications()) as client:
            # The fake rejects requests without params, as the real server does.
            assert await client.request("fake/echo") == {}


async def test_notifications_arrive_in_order_before_the_response(tmp_path: Path) -> None:
    recorder = Notifications()
    with trio.fail_after(30):
        async with open_app_server(fake_spec(tmp_path), on_notification=recorder) as client:
            await client.request("fake/notify", {"count": 200})
            ticks = [n.params["n"] for n in recorder.notifications if n.method == "fake/tick"]
            assert ticks == list(range(200))
            assert all(n.emitted_at_ms is not None for n in recorder.notifications)


async def test_overload_is_retried_until_success(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_app_server(
            fake_spec(tmp_path), on_notification=Notifications(), overload_retry=FAST_RETRY
        ) as client:
            result = await client.request("fake/overloaded", {"key": "a", "times": 3})
            assert result == {"attempts": 4}


async def test_overload_gives_up_after_the_attempts(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_app_server(
            fake_spec(tmp_path), on_notification=Notifications(), overload_retry=FAST_RETRY
        ) as client:
            with pytest.raises(AppServerError) as info:
                await client.request("fake/overloaded", {"key": "b", "times": -1})
            assert info.value.code == -32001
            # Exactly `attempts` tries were made: the 7th call on this key is the 7th attempt.
            with pytest.raises(AppServerError):
                await client.request("fake/overloaded", {"key": "c", "times": 6})
            assert await client.request("fake/overloaded", {"key": "c", "times": 6}) == {
                "attempts": 7
            }


def test_default_backoff_doubles_to_a_cap() -> None:
    assert OverloadRetry().delays() == [0.05, 0.1, 0.2, 0.4, 0.8]
    assert OverloadRetry(attempts=9).delays()[-3:] == [1.6, 2.0, 2.0]
    assert OverloadRetry(attempts=1).delays() == []


async def test_unanswered_request_times_out_and_the_client_stays_usable(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_app_server(fake_spec(tmp_path), on_notification=Notifications()) as client:
            with pytest.raises(RequestTimeout) as info:
                await client.request("fake/ignore", timeout=0.3)
            assert info.value.method == "fake/ignore"
            assert info.value.timeout == 0.3
            assert await client.request("fake/echo", {"still": "alive"}) == {"still": "alive"}


async def test_in_flight_cap_is_honoured(tmp_path: Path) -> None:
    results: list[dict[str, Any]] = []

    async def hold(client: AppServerClient) -> None:
        results.append(await client.request("fake/hold"))

    with trio.fail_after(30):
        async with (
            open_app_server(
                fake_spec(tmp_path), on_notification=Notifications(), max_in_flight=4
            ) as client,
            trio.open_nursery() as nursery,
        ):
            for _ in range(12):
                nursery.start_soon(hold, client)
            while len(results) < 12:
                # Every request task has either written its line or is waiting for a slot;
                # the fake reads in order, so the release counts everything written so far.
                await trio.testing.wait_all_tasks_blocked()
                await client.notify("fake/release")
    outstanding = [r["outstanding"] for r in results]
    assert max(outstanding) == 4


async def test_server_request_without_handler_gets_an_error(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_app_server(fake_spec(tmp_path), on_notification=Notifications()) as client:
            answer = await client.request(
                "fake/ask",
                {"method": "item/commandExecution/requestApproval", "params": {"itemId": "c1"}},
            )
    assert answer["reply"]["id"] == 0
    assert answer["reply"]["error"]["code"] == -32601
    assert "result" not in answer["reply"]


async def test_server_request_handler_result_is_the_reply(tmp_path: Path) -> None:
    seen: list[ServerRequest] = []

    async def decide(request: ServerRequest) -> Any:
        seen.append(request)
        await trio.lowlevel.checkpoint()
        return {"decision": "accept"}

    with trio.fail_after(30):
        async with open_app_server(
            fake_spec(tmp_path), on_notification=Notifications(), on_server_request=decide
        ) as client:
            # Our request ids and the server's collide (both count from 0); both still work.
            first = await client.request("fake/ask", {"method": "item/x", "params": {"k": 1}})
            second = await client.request("fake/ask", {"method": "item/y", "params": {}})
    assert first["reply"] == {"id": 0, "result": {"decision": "accept"}}
    assert second["reply"] == {"id": 1, "result": {"decision": "accept"}}
    assert [(r.id, r.method, r.params) for r in seen] == [
        (0, "item/x", {"k": 1}),
        (1, "item/y", {}),
    ]


async def test_failing_or_slow_handler_answers_with_an_error(tmp_path: Path) -> None:
    async def handler(request: ServerRequest) -> Any:
        if request.method == "item/raise":
            raise ValueError("no decision possible")
        await trio.sleep_forever()

    with trio.fail_after(30):
        async with open_app_server(
            fake_spec(tmp_path),
            on_notification=Notifications(),
            on_server_request=handler,
            server_request_timeout=0.3,
        ) as client:
            raised = await client.request("fake/ask", {"method": "item/raise", "params": {}})
            slow = await client.request("fake/ask", {"method": "item/slow", "params": {}})
    assert raised["reply"]["error"]["code"] == -32603
    assert "no decision possible" in raised["reply"]["error"]["message"]
    assert slow["reply"]["error"]["code"] == -32000


async def test_malformed_stdout_is_logged_and_ignored(tmp_path: Path) -> None:
    stdout_log = tmp_path / "logs" / "stdout.log"
    with trio.fail_after(30):
        async with open_app_server(
            fake_spec(tmp_path), on_notification=Notifications(), stdout_log=stdout_log
        ) as client:
            await client.request("fake/garbage")
            assert await client.request("fake/echo", {"a": 1}) == {"a": 1}
    assert stdout_log.read_bytes() == b"this is not json\n"


async def test_stray_stdout_is_logged_while_the_default_threads_are_all_busy(
    tmp_path: Path,
) -> None:
    # The stdout log used trio.open_file (Trio's default thread limiter): with every default
    # thread held (a wave of replays), the reader waited for one, and so did Codex's pipe.
    stdout_log = tmp_path / "logs" / "stdout.log"
    with trio.fail_after(30):
        async with open_app_server(
            fake_spec(tmp_path), on_notification=Notifications(), stdout_log=stdout_log
        ) as client, all_tokens_held(trio.to_thread.current_default_thread_limiter()):
            with trio.fail_after(10):
                await client.request("fake/garbage")
                assert await client.request("fake/echo", {"a": 1}) == {"a": 1}
    assert stdout_log.read_bytes() == b"this is not json\n"


async def test_child_killed_mid_request_fails_the_call(tmp_path: Path) -> None:
    recorder = Notifications()
    failures: list[BaseException] = []

    async def pending_call(client: AppServerClient) -> None:
        try:
            await client.request("fake/ignore", timeout=600)
        except ChildExited as exc:
            failures.append(exc)

    with trio.fail_after(30):
        async with open_app_server(fake_spec(tmp_path), on_notification=recorder) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending_call, client)
                await recorder.wait_for("fake/received")
                os.killpg(client.process_group, signal.SIGKILL)
            assert len(failures) == 1
            status = await client.wait_exited()
            assert status == ExitStatus(code=None, signal=signal.SIGKILL)
            with pytest.raises(ChildExited):
                await client.request("fake/echo")
    exc = failures[0]
    assert isinstance(exc, ChildExited)
    assert exc.status == ExitStatus(code=None, signal=signal.SIGKILL)


async def test_child_exiting_on_its_own_does_not_raise_from_the_block(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_app_server(fake_spec(tmp_path), on_notification=Notifications()) as client:
            with pytest.raises(ChildExited) as info:
                await client.request("fake/exit", {"code": 5})
            assert info.value.status == ExitStatus(code=5, signal=None)
            assert await client.wait_exited() == ExitStatus(code=5, signal=None)
            assert client.exit_status == ExitStatus(code=5, signal=None)


async def test_a_child_that_closes_stdout_but_lives_on_is_ended(tmp_path: Path) -> None:
    # It can never answer again; left alive it would keep the incarnation "running" forever.
    with trio.fail_after(30):
        async with open_app_server(fake_spec(tmp_path), on_notification=Notifications()) as client:
            pgid = client.process_group
            with pytest.raises(ChildExited):
                await client.request("fake/close-stdout")
            status = await client.wait_exited()
            assert status.signal == signal.SIGKILL
            assert not group_alive(pgid)


async def test_leaving_the_block_stops_the_child(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_app_server(fake_spec(tmp_path), on_notification=Notifications()) as client:
            pgid = client.process_group
        # The fake exits on stdin EOF: a graceful stop, not a kill.
        assert client.exit_status == ExitStatus(code=0, signal=None)
        assert not group_alive(pgid)


async def test_cancelling_the_owner_stops_the_child(tmp_path: Path) -> None:
    recorder = Notifications()
    with trio.fail_after(30):
        with trio.CancelScope() as scope:
            async with (
                open_app_server(fake_spec(tmp_path), on_notification=recorder) as client,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(client.request, "fake/ignore")
                await recorder.wait_for("fake/received")
                scope.cancel(reason="test: owner cancelled")
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert client.exit_status is not None
        assert not group_alive(client.process_group)


async def test_exception_in_block_propagates_unwrapped(tmp_path: Path) -> None:
    pids: list[int] = []

    async def body() -> None:
        async with open_app_server(fake_spec(tmp_path), on_notification=Notifications()) as client:
            pids.append(client.process_group)
            raise KeyError("from the body")

    with trio.fail_after(30), pytest.raises(KeyError, match="from the body"):
        await body()
    assert not group_alive(pids[0])


async def test_the_reader_stops_taking_lines_while_the_host_has_no_room(tmp_path: Path) -> None:
    # codexd's event log cannot write: the reader must stop reading (the pipe fills and Codex
    # waits) instead of buffering what Codex says without limit.
    recorder = Notifications()
    gate = trio.Event()
    gate.set()
    held = trio.Event()

    async def room() -> None:
        if not gate.is_set():
            held.set()
            await gate.wait()

    with trio.fail_after(30):
        async with (
            open_app_server(fake_spec(tmp_path), on_notification=recorder,
                            backpressure=room) as client,
            trio.open_nursery() as nursery,
        ):
            gate = trio.Event()  # no room from now on
            answered = trio.Event()

            async def burst() -> None:
                await client.request("fake/notify", {"count": 200})
                answered.set()

            nursery.start_soon(burst)
            await held.wait()
            await trio.testing.wait_all_tasks_blocked()
            # The reader waits at the gate: of the burst it took at most the one line it was
            # already waiting for when the room ran out.
            taken = [n for n in recorder.notifications if n.method == "fake/tick"]
            assert len(taken) <= 1
            assert not answered.is_set()
            gate.set()
            await answered.wait()
            ticks = [n.params["n"] for n in recorder.notifications if n.method == "fake/tick"]
            assert ticks == list(range(200))
