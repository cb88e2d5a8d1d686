"""The fast compatibility subset: run against every Codex release codexd supports.

With the pinned release these run in the normal suite. CI runs them again against the oldest
supported release (``codex-version.txt``)::

    scripts/setup.sh --codex-version 0.169.0
    BAA_CODEX_BIN=$(.venv/bin/python -m codexd_trio.codexbin --codex-version 0.169.0 --path) \\
        .venv/bin/python -m pytest tests/test_codex_versions.py

``codex_binary`` (and the codexd these tests start) then use that binary. Each test is one short
turn through the scripted model; the whole file takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from codexd_trio.base.codexbin import check_version, version_from_user_agent
from codexd_trio.base.contracts import Session, SessionRegistry, json_encoder, now_iso
from codexd_trio.client import CodexdClient
from codexd_trio.core.domain import Emit, SessionBook
from codexd_trio.protocol.child import ChildSpec
from codexd_trio.protocol.spawn import open_app_server
from codexd_trio.testing import ScriptedModel, Streamed, codex_child_env
from codexd_trio.testing.daemon import running_codexd
from tests.notifications import Notifications

pytestmark = pytest.mark.real_codex

HANG_GUARD = 60


def test_the_binary_under_test_is_in_the_supported_range(codex_binary: Path) -> None:
    check = check_version(codex_binary)
    assert check.version is not None, check.error
    assert check.supported, check.message()


async def test_handshake_thread_and_one_turn_fold_into_a_session(
    codex_binary: Path, codex_home: Path, scripted_model: ScriptedModel
) -> None:
    spec = ChildSpec(
        argv=[str(codex_binary), "app-server"],
        env=codex_child_env(codex_home, codex_binary),
        stderr_log=codex_home / "stderr.log",
    )
    stream = Notifications()
    book = SessionBook()
    emits: list[Emit] = []

    def on_notification(note: Any) -> None:
        stream(note)
        # The codexd fold of everything this release sends (new fields, values, methods).
        emits.extend(book.on_notification(note.method, note.params))

    scripted_model.script(Streamed(["compat", "ible"]))
    with trio.fail_after(HANG_GUARD):
        async with open_app_server(
            spec, on_notification=on_notification, request_timeout=30
        ) as client:
            user_agent = client.initialize_result["userAgent"]
            assert user_agent.startswith("codexd/")
            # What codexd can check without running --version (also for a server it attaches to).
            assert version_from_user_agent(user_agent) == check_version(codex_binary).version
            result = await client.thread_start(cwd=str(codex_home))
            thread_id = result["thread"]["id"]
            now = now_iso()
            book.add(Session(sessionId="session-1", threadId=thread_id, createdAt=now,
                             updatedAt=now))
            book.begin_turn("session-1")
            started = await client.turn_start(
                thread_id, [{"type": "text", "text": "are you compatible?", "text_elements": []}]
            )
            turn_id = started["turn"]["id"]
            book.accept_turn("session-1", turn_id)
            turn = await stream.turn_completed(turn_id)

    assert turn["status"] == "completed"
    session = book.get("session-1")
    assert session.currentTurnId is None
    assert session.lastTurnStatus == "completed"
    assert session.lastTurnOutput == "compatible"
    assert scripted_model.requests[-1].user_texts()[-1] == "are you compatible?"
    types = {e.type for e in emits}
    assert {"app-server.turn.started", "app-server.item.completed",
            "app-server.turn.completed"} <= types
    registry = SessionRegistry(lastSeq=1, sessions=book.all())
    msgspec.json.decode(json_encoder.encode(registry), type=SessionRegistry)


async def test_codexd_runs_a_session_and_a_turn(
    tmp_path: Path, codex_binary: Path, codex_home: Path, scripted_model: ScriptedModel
) -> None:
    scripted_model.script(Streamed(["through ", "codexd"]))
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            CodexdClient(codexd.url) as client,
        ):
            await client.readyz()
            status = await client.status()
            assert status["snapshot"]["daemon"]["child"]["command"] == str(codex_binary)
            session = await client.create_session()
            accepted = await client.start_turn(session.sessionId, "hello")
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])
    assert done.lastTurnStatus == "completed"
    assert done.lastTurnOutput == "through codexd"
    assert done.lastTurnError is None
