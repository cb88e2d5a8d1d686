"""The app-server client against the REAL ``codex app-server`` and the scripted model provider."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from codexd_trio.protocol.appserver import (
    AppServerClient,
    AppServerError,
    ChildExited,
    ServerRequest,
    ServerRequestHandler,
)
from codexd_trio.protocol.child import ChildSpec, ExitStatus
from codexd_trio.protocol.spawn import open_app_server
from codexd_trio.testing import (
    ExecCommand,
    Hang,
    HttpError,
    Plain,
    ScriptedModel,
    Streamed,
    codex_child_env,
    read_only_sandbox_enforced,
)
from codexd_trio.testing.daemon import assert_group_gone
from tests.capabilities import missing
from tests.notifications import Notifications

pytestmark = pytest.mark.real_codex

# Generous: two cores shared with other test runs; a turn normally takes ~100 ms.
HANG_GUARD = 60


def text(value: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value}]


@pytest.fixture
def spec(codex_home: Path, codex_binary: Path) -> ChildSpec:
    return ChildSpec(
        argv=[str(codex_binary), "app-server"],
        env=codex_child_env(codex_home, codex_binary),
        stderr_log=codex_home / "stderr.log",
    )


@asynccontextmanager
async def app_server(
    spec: ChildSpec, stream: Notifications, on_server_request: ServerRequestHandler | None = None
) -> AsyncIterator[AppServerClient]:
    async with open_app_server(
        spec, on_notification=stream, on_server_request=on_server_request, request_timeout=30
    ) as client:
        yield client


async def start_thread(client: AppServerClient, **params: Any) -> str:
    result = await client.thread_start(**params)
    thread_id: str = result["thread"]["id"]
    return thread_id


async def start_turn(client: AppServerClient, thread_id: str, prompt: str) -> str:
    result = await client.turn_start(thread_id, text(prompt))
    turn_id: str = result["turn"]["id"]
    return turn_id


async def test_handshake(spec: ChildSpec) -> None:
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, stream) as client:
            assert client.initialize_result["userAgent"].startswith("codexd/")
            assert client.initialize_result["platformFamily"] == "unix"
            # The handshake is complete: a normal request works.
            assert await client.request("thread/loaded/list") == {"data": [], "nextCursor": None}
        assert client.exit_status == ExitStatus(code=0, signal=None)


async def test_thread_start(spec: ChildSpec, codex_home: Path) -> None:
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, stream) as client:
            result = await client.thread_start(cwd=str(codex_home))
            thread = result["thread"]
            assert thread["status"] == {"type": "idle"}
            assert thread["originator"] == "codexd"
            started = await stream.wait_for("thread/started")
            assert started.params["thread"]["id"] == thread["id"]
            loaded = await client.request("thread/loaded/list")
            assert loaded["data"] == [thread["id"]]


async def test_streamed_turn(spec: ChildSpec, scripted_model: ScriptedModel) -> None:
    deltas = ["Hel", "lo, ", "stre", "amed ", "world"]
    scripted_model.script(Streamed(deltas))
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, stream) as client:
            thread_id = await start_thread(client)
            turn_id = await start_turn(client, thread_id, "stream please")
            turn = await stream.turn_completed(turn_id)
    assert turn["status"] == "completed"
    got = [n.params["delta"] for n in stream.of("item/agentMessage/delta", turnId=turn_id)]
    assert got == deltas
    completed = stream.of(
        "item/completed", turnId=turn_id, item=lambda i: i["type"] == "agentMessage"
    )
    assert [n.params["item"]["text"] for n in completed] == ["".join(deltas)]
    assert scripted_model.requests[-1].user_texts()[-1] == "stream please"


async def test_interrupt_a_slow_turn(spec: ChildSpec, scripted_model: ScriptedModel) -> None:
    scripted_model.script(Streamed([f"chunk{n} " for n in range(40)], delay=0.25))
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, stream) as client:
            thread_id = await start_thread(client)
            turn_id = await start_turn(client, thread_id, "talk slowly")
            await stream.wait_for("item/agentMessage/delta", turnId=turn_id)
            assert await client.turn_interrupt(thread_id, turn_id) == {}
            turn = await stream.turn_completed(turn_id)
    assert turn["status"] == "interrupted"
    delivered = stream.of("item/agentMessage/delta", turnId=turn_id)
    assert 1 <= len(delivered) < 40


async def test_steer_a_slow_turn(spec: ChildSpec, scripted_model: ScriptedModel) -> None:
    scripted_model.script(
        Streamed([f"chunk{n} " for n in range(40)], delay=0.25), Plain("steered answer")
    )
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, stream) as client:
            thread_id = await start_thread(client)
            turn_id = await start_turn(client, thread_id, "talk slowly")
            await stream.wait_for("item/agentMessage/delta", turnId=turn_id)
            steered = await client.turn_steer(
                thread_id, text("change of plan"), expected_turn_id=turn_id
            )
            assert steered == {"turnId": turn_id}
            turn = await stream.turn_completed(turn_id)
    assert turn["status"] == "completed"
    assert scripted_model.requests[-1].user_texts()[-2:] == ["talk slowly", "change of plan"]
    answers = stream.of(
        "item/completed", turnId=turn_id, item=lambda i: i["type"] == "agentMessage"
    )
    assert [n.params["item"]["text"] for n in answers] == ["steered answer"]


async def test_steer_with_a_wrong_turn_id_is_an_app_server_error(
    spec: ChildSpec, scripted_model: ScriptedModel
) -> None:
    scripted_model.script(Hang())
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, stream) as client:
            thread_id = await start_thread(client)
            turn_id = await start_turn(client, thread_id, "hang")
            await scripted_model.wait_streaming()
            with pytest.raises(AppServerError) as info:
                await client.turn_steer(thread_id, text("x"), expected_turn_id="wrong")
            assert info.value.code == -32600
            assert info.value.method == "turn/steer"
            assert turn_id in info.value.message
            await client.turn_interrupt(thread_id, turn_id)
            assert (await stream.turn_completed(turn_id))["status"] == "interrupted"


async def test_failing_provider_fails_the_turn(
    spec: ChildSpec, scripted_model: ScriptedModel
) -> None:
    scripted_model.script(HttpError(500))
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, stream) as client:
            thread_id = await start_thread(client)
            turn_id = await start_turn(client, thread_id, "fail please")
            turn = await stream.turn_completed(turn_id)
    assert turn["status"] == "failed"
    assert turn["error"]["message"]
    errors = stream.of("error", turnId=turn_id)
    assert [n.params["error"]["message"] for n in errors] == [turn["error"]["message"]]
    assert errors[0].params["willRetry"] is False


@pytest.mark.parametrize(
    ("decision", "item_status", "file_made"),
    [("accept", "completed", True), ("decline", "declined", False)],
)
async def test_command_approval(
    spec: ChildSpec,
    scripted_model: ScriptedModel,
    codex_home: Path,
    decision: str,
    item_status: str,
    file_made: bool,
) -> None:
    # workspace-write with the workspace as cwd: an accepted write is allowed by the sandbox on
    # every machine, so the outcome depends on the decision alone (under read-only it depends on
    # whether this machine can enforce the sandbox; see the next test).
    workdir = codex_home / "ws"
    workdir.mkdir()
    scripted_model.script(ExecCommand("touch made.txt", then=Plain("done")))
    asked: list[ServerRequest] = []

    async def decide(request: ServerRequest) -> Any:
        asked.append(request)
        return {"decision": decision}

    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, stream, on_server_request=decide) as client:
            thread_id = await start_thread(
                client, cwd=str(workdir), approvalPolicy="untrusted", sandbox="workspace-write"
            )
            turn_id = await start_turn(client, thread_id, "make a file")
            turn = await stream.turn_completed(turn_id)
    assert [r.method for r in asked] == ["item/commandExecution/requestApproval"]
    assert "touch made.txt" in asked[0].params["command"]
    commands = stream.of(
        "item/completed", turnId=turn_id, item=lambda i: i["type"] == "commandExecution"
    )
    assert [n.params["item"]["status"] for n in commands] == [item_status]
    assert (workdir / "made.txt").exists() is file_made
    assert turn["status"] == "completed"


@pytest.fixture(scope="session")
def read_only_sandbox(codex_binary: Path) -> None:
    enforced, said = read_only_sandbox_enforced(codex_binary)
    if not enforced:
        missing("sandbox", f"Codex's sandbox cannot be enforced on this machine ({said})")


@pytest.mark.usefixtures("read_only_sandbox")
async def test_write_refused_by_the_read_only_sandbox_reaches_the_model_as_a_failure(
    spec: ChildSpec, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir = codex_home / "ws"
    workdir.mkdir()
    scripted_model.script(ExecCommand("touch made.txt", then=Plain("could not")))
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, stream) as client:
            thread_id = await start_thread(
                client, cwd=str(workdir), approvalPolicy="never", sandbox="read-only"
            )
            turn_id = await start_turn(client, thread_id, "make a file")
            turn = await stream.turn_completed(turn_id)
    assert turn["status"] == "completed"
    assert not (workdir / "made.txt").exists()
    # What the model was told about its command: the sandbox's refusal and a failing exit.
    outputs = scripted_model.requests[-1].function_call_outputs()
    assert len(outputs) == 1
    assert "Read-only file system" in str(outputs[0]["output"])
    # Codex does not always emit item notifications for a sandbox-refused command
    # (codex-app-server.md §5); when it does, the item is a failure carrying the same output.
    commands = stream.of(
        "item/completed", turnId=turn_id, item=lambda i: i["type"] == "commandExecution"
    )
    for note in commands:
        item = note.params["item"]
        assert item["status"] == "failed"
        assert "Read-only file system" in (item.get("aggregatedOutput") or "")


async def test_burst_of_requests_all_succeed(spec: ChildSpec) -> None:
    # Unthrottled, a burst this size makes the server answer -32001 or drop replies
    # (codex-app-server.md §7); the in-flight cap and the retries make every call succeed.
    results: list[Any] = []

    async def one(client: AppServerClient) -> None:
        results.append(await client.request("thread/loaded/list"))

    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, Notifications()) as client, trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(one, client)
    assert len(results) == 300
    assert all(r == {"data": [], "nextCursor": None} for r in results)


async def test_child_killed_mid_request(spec: ChildSpec) -> None:
    failures: list[ChildExited] = []

    async def pending_call(client: AppServerClient) -> None:
        try:
            await client.request("thread/loaded/list", timeout=600)
        except ChildExited as exc:
            failures.append(exc)

    with trio.fail_after(HANG_GUARD):
        async with app_server(spec, Notifications()) as client:
            # Stopped, the server cannot answer: the request is certainly pending at the kill.
            os.killpg(client.process_group, signal.SIGSTOP)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending_call, client)
                await trio.testing.wait_all_tasks_blocked()
                os.killpg(client.process_group, signal.SIGKILL)
            status = await client.wait_exited()
    assert status == ExitStatus(code=None, signal=signal.SIGKILL)
    assert len(failures) == 1
    assert failures[0].status == status
    assert failures[0].method == "thread/loaded/list"


async def test_cancelling_the_owner_mid_turn_leaves_no_process(
    spec: ChildSpec, scripted_model: ScriptedModel
) -> None:
    scripted_model.script(Hang())
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        with trio.CancelScope() as scope:
            async with app_server(spec, stream) as client:
                pgid = client.process_group
                thread_id = await start_thread(client)
                await start_turn(client, thread_id, "hang")
                await scripted_model.wait_streaming()
                scope.cancel(reason="test: owner of the app-server cancelled")
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert client.exit_status is not None
        await assert_group_gone(pgid)
        scripted_model.release_hangs()


async def test_opt_out_of_notifications(spec: ChildSpec, scripted_model: ScriptedModel) -> None:
    scripted_model.script(Streamed(["a", "b", "c"]))
    stream = Notifications()
    with trio.fail_after(HANG_GUARD):
        async with open_app_server(spec, on_notification=stream, initialize=False) as client:
            result = await client.initialize(
                name="optout",
                version="9.9",
                title="Opt-out test",
                opt_out_notifications=["item/agentMessage/delta"],
            )
            assert result["userAgent"].startswith("optout/")
            assert client.initialize_result == result
            thread_id = await start_thread(client)
            turn_id = await start_turn(client, thread_id, "no deltas please")
            turn = await stream.turn_completed(turn_id)
    assert turn["status"] == "completed"
    assert stream.of("item/agentMessage/delta") == []
    completed = stream.of("item/completed", item=lambda i: i["type"] == "agentMessage")
    assert [n.params["item"]["text"] for n in completed] == ["abc"]


async def test_read_and_resume_after_a_restart(
    spec: ChildSpec, scripted_model: ScriptedModel
) -> None:
    scripted_model.script(Plain("first answer"), Plain("second answer"))
    with trio.fail_after(HANG_GUARD):
        stream = Notifications()
        async with app_server(spec, stream) as client:
            thread_id = await start_thread(client)
            turn_id = await start_turn(client, thread_id, "remember PAPAYA")
            assert (await stream.turn_completed(turn_id))["status"] == "completed"
        stream = Notifications()
        async with app_server(spec, stream) as client:
            read = await client.thread_read(thread_id, include_turns=True)
            assert read["thread"]["status"] == {"type": "notLoaded"}
            assert [t["status"] for t in read["thread"]["turns"]] == ["completed"]
            resumed = await client.thread_resume(thread_id)
            assert resumed["thread"]["id"] == thread_id
            assert resumed["thread"]["turns"] == []  # excludeTurns by default
            turn_id = await start_turn(client, thread_id, "what was the word?")
            assert (await stream.turn_completed(turn_id))["status"] == "completed"
    # The resumed thread's history went to the model.
    history = scripted_model.requests[-1].user_texts()
    assert history[-2:] == ["remember PAPAYA", "what was the word?"]
