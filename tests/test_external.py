"""``--server-strategy external``: codexd attaches to an app-server it does not own (the real
``codex app-server --listen unix://…`` / ``ws://…``), never starts or kills it, survives losing
it, and re-attaches when it comes back — sessions continue with their history."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
import pytest
import trio

from codexd_trio.client import CodexdClient, EventStream
from codexd_trio.testing import Plain, ScriptedModel, codex_child_env
from codexd_trio.testing.daemon import group_alive, pid_alive, running_codexd

pytestmark = pytest.mark.real_codex

GUARD = 120
FAST_RETRY = ["--restart-backoff", "0.05", "--restart-backoff-max", "0.2"]


@asynccontextmanager
async def listening_app_server(
    binary: Path, home: Path, listen: str
) -> AsyncIterator[trio.Process]:
    """``codex app-server --listen …`` in its own process group, as a user would run it."""
    stderr = (home / "external-stderr.log").open("ab")
    try:
        process = await trio.lowlevel.open_process(
            [str(binary), "app-server", "--listen", listen],
            env=codex_child_env(home, binary),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    finally:
        stderr.close()
    try:
        yield process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await process.wait()


async def _until(stream: EventStream, type_: str) -> None:
    async for event in stream:
        if event.type == type_:
            return
    raise AssertionError(f"the event stream ended before {type_}")


async def _attach_turn_lose_and_reattach(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path, codex_binary: Path,
    endpoint: str, cleanup: Path | None,
) -> None:
    listen = endpoint  # the app-server's --listen and codexd's endpoint are the same URL
    args = ["--server-strategy", "external", "--server-endpoint", endpoint, *FAST_RETRY]
    with trio.fail_after(GUARD):
        async with (
            listening_app_server(codex_binary, codex_home, listen) as first,
            running_codexd(tmp_path / "node", codex_home, *args) as codexd,
            CodexdClient(codexd.url) as client,
            httpx.AsyncClient(base_url=codexd.url) as http,
        ):
            # codexd retries the connection until the app-server listens (no sleeps here).
            async with client.events(after=0) as stream:
                await _until(stream, "child.started")
            child = (await client.status())["snapshot"]["daemon"]["child"]
            assert (child["status"], child["strategy"], child["endpoint"], child["pid"]) == (
                "running", "external", endpoint, None)

            session = await client.create_session()
            scripted_model.script(Plain("first answer"))
            turn = await client.start_turn(session.sessionId, "remember the word KIWI")
            done = await client.wait_for_turn(session.sessionId, turn["turnId"])
            assert done.lastTurnOutput == "first answer"

            # The app-server goes away: codexd says so and stays up.
            async with client.events() as stream:
                os.killpg(first.pid, signal.SIGKILL)
                await _until(stream, "child.exited")
            assert pid_alive(codexd.pid)
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 503

            # It comes back at the same place: codexd re-attaches by itself.
            if cleanup is not None:
                cleanup.unlink(missing_ok=True)
            async with (
                client.events() as stream,
                listening_app_server(codex_binary, codex_home, listen) as second,
            ):
                await _until(stream, "child.started")
                scripted_model.script(Plain("second answer"))
                again = await client.start_turn(session.sessionId, "which word?")
                done = await client.wait_for_turn(session.sessionId, again["turnId"])
                assert done.lastTurnOutput == "second answer"
                # The old thread was resumed: the model saw the first turn's prompt again.
                texts = scripted_model.requests[-1].user_texts()
                assert any("KIWI" in t for t in texts)
                assert group_alive(second.pid)  # codexd never kills what it does not own
            assert pid_alive(codexd.pid)


async def test_attaches_over_a_unix_socket_survives_its_loss_and_reattaches(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path, codex_binary: Path
) -> None:
    sock = codex_home / "app-server.sock"
    await _attach_turn_lose_and_reattach(
        tmp_path, scripted_model, codex_home, codex_binary,
        f"unix://{sock}", sock,
    )


async def test_attaches_over_loopback_websocket(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path, codex_binary: Path
) -> None:
    with socket.socket() as probe:  # a free port; the binary does not report the one it binds
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await _attach_turn_lose_and_reattach(
        tmp_path, scripted_model, codex_home, codex_binary,
        f"ws://127.0.0.1:{port}", None,
    )
