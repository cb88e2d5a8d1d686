"""Approvals reach their person (issue 25 §1): notifications through Apprise to local receivers
(a ``json://`` webhook and an ntfy stand-in that keeps the ``X-Actions`` header), one tap that
decides, and an outbox that survives a SIGKILL of the conductor. Waits are on what the receivers
got, bounded by deadlines; nothing is timed."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from codexd_trio.client import CodexdClient
from codexd_trio.testing import Prompted, ScriptedModel
from codexd_trio.testing.daemon import running_codexd
from conductor_trio.sinks import parse_sink
from tests.fake_codexd import open_conductor, open_fake_codexd, spawn_daemon
from tests.notify_receivers import Receiver, ntfy_actions, open_receiver

WAIT = 60


def _kind(kind: str) -> Any:
    return lambda p: p.body.get("kind") == kind


async def _until(check: Any) -> None:
    """Poll ``check()``: a condition on another process's state that nothing announces (the
    caller's deadline bounds it)."""
    while not await check():  # noqa: ASYNC110
        await trio.sleep(0.05)


@pytest.mark.real_codex
async def test_an_approval_notifies_and_one_tap_runs_the_command(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    scripted_model.default = Prompted()
    workdir = codex_home / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    with trio.fail_after(120):
        async with open_receiver() as hook, open_receiver() as ntfy:
            sinks = (parse_sink(f"[approval,turn]json://{hook.hostport}/hook", source="t"),
                     parse_sink(f"[approval]ntfy://{ntfy.hostport}/phone", source="t"))
            async with (
                running_codexd(tmp_path / "node", codex_home) as codexd,
                open_conductor(codexd.url, tmp_path / "conductor", notify_sinks=sinks) as c,
            ):
                notifier = c.conductor.notifier

                async def following() -> bool:
                    return bool(notifier.connected and notifier.outbox.cursor is not None)

                await _until(following)
                made = await c.http.post("/v1/codex/sessions", json={
                    "cwd": str(workdir), "approvalPolicy": "untrusted",
                    "sandbox": "workspace-write", "approvals": "clients"})
                assert made.status_code == 201, made.text
                session_id = made.json()["data"]["session"]["sessionId"]
                turn = await c.http.post("/v1/codex/turn", json={
                    "sessionId": session_id, "input": "SHELL: touch tapped.txt"})
                assert turn.status_code == 202, turn.text

                # One notification per sink, with the deep link and both actions.
                [post] = await hook.wait_for(_kind("approval"))
                approval_id = post.body["click"].rsplit("approval=", 1)[1]
                assert post.body["click"] == (
                    f"{c.url}/console#session={session_id}&approval={approval_id}")
                assert post.body["accept"].startswith(f"{c.url}/v1/actions/{approval_id}/accept?t=")
                assert post.body["decline"].startswith(
                    f"{c.url}/v1/actions/{approval_id}/decline?t=")
                assert "touch tapped.txt" in post.body["message"]
                assert "declines by itself at" in post.body["message"]
                [pushed] = await ntfy.wait_for(lambda p: True)
                assert pushed.body["topic"] == "phone"
                assert pushed.headers["x-click"] == post.body["click"]
                actions = ntfy_actions(pushed.headers["x-actions"])
                accept = next(a for a in actions if a[:2] == ["http", "Accept"])
                decline = next(a for a in actions if a[:2] == ["http", "Decline"])
                assert {"method=POST", "headers.Content-Type=application/json",
                        "body={}"} <= set(accept[3:])
                assert ["view", "Open console", post.body["click"]] in actions

                # Tap Accept as ntfy does: the command runs, the turn completes.
                async with httpx.AsyncClient(timeout=30) as phone:
                    tapped = await phone.post(accept[2], content=b"{}",
                                              headers={"Content-Type": "application/json"})
                    assert tapped.status_code == 200, tapped.text
                    assert tapped.json()["data"]["approval"]["decidedBy"] == "notification"
                    async with CodexdClient(codexd.url) as client:
                        settled = await client.wait_for_turn(
                            session_id, turn.json()["data"]["turnId"])
                    assert settled.lastTurnStatus == "completed"
                    assert settled.lastTurnOutput == "ran: touch tapped.txt"
                    assert (workdir / "tapped.txt").exists()
                    # A second tap, or the other button of the same notification: refused.
                    for url in (accept[2], decline[2]):
                        again = await phone.post(url, content=b"{}",
                                                 headers={"Content-Type": "application/json"})
                        assert again.status_code == 409, again.text
                        assert again.json()["error"]["code"] == "action_used"
                    page = await phone.get(accept[2])
                    assert page.status_code == 409
                    assert "already used" in page.text
                await hook.wait_for(_kind("turn.completed"))
            # Exactly one approval notification per sink.
            assert len([p for p in hook.accepted if p.body.get("kind") == "approval"]) == 1
            assert len(ntfy.accepted) == 1


def _approval_detail(approval_id: str) -> dict[str, Any]:
    return {"approval": {"approvalId": approval_id, "sessionId": "session-1",
                         "kind": "commandExecution", "state": "pending",
                         "expiresAt": "2999-01-01T00:00:00.000Z", "onTimeout": "decline",
                         "params": {"command": f"touch {approval_id}"}}}


def _conductor_argv(tmp_path: Path, codexd_url: str, hook: Receiver) -> list[str]:
    return [sys.executable, "-m", "conductor_trio", "start", "--node-id", "kill-test",
            "--local-api", "http://127.0.0.1:0", "--codexd-base", codexd_url,
            "--state-dir", str(tmp_path / "state"),
            "--notify-url", f"json://{hook.hostport}/hook"]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BAA_")}


async def test_a_sigkilled_conductor_delivers_its_outbox_once_after_restart(
        tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with open_fake_codexd() as fake, open_receiver() as hook:
            hook.refuse = True  # the sink is down: notifications wait in the outbox
            argv = _conductor_argv(tmp_path, fake.url, hook)
            async with spawn_daemon(argv, env=_clean_env()) as first:
                async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
                    async def status() -> dict[str, Any]:
                        data: dict[str, Any] = (await http.get("/v1/status")).json()["data"]
                        return data

                    async def following() -> bool:
                        notes = (await status()).get("notifications") or {}
                        return bool(notes.get("following")) and notes.get("cursor") is not None

                    await _until(following)
                    for n in range(3):
                        fake.emit("approval.requested", session_id="session-1",
                                  detail=_approval_detail(f"approval-{n}"))
                    fake.emit("app-server.turn.completed", session_id="session-1",
                              turn_id="turn-1",
                              detail={"turn": {"id": "turn-1", "status": "failed"}})

                    async def tried_and_waiting() -> bool:
                        notes = (await status())["notifications"]
                        return bool(notes["pending"] == 4 and notes["sinks"][0]["failed"] >= 1)

                    await _until(tried_and_waiting)
                    refused = (await status())["notifications"]["sinks"][0]
                    assert refused["last_error"]
                    assert refused["last_error_at"]
                    metrics = (await http.get("/metrics")).text
                    assert "conductor_notifications_failed_total" in metrics
                os.killpg(first.process.pid, signal.SIGKILL)
                await first.process.wait()
            assert hook.accepted == []

            hook.refuse = False
            async with spawn_daemon(argv, env=_clean_env()) as second:
                ids = await hook.wait_for(lambda p: True, count=4)
                # A marker after them: a sink's queue is delivered in order, so once it is in,
                # any second copy of the first four would be too.
                fake.emit("approval.requested", session_id="session-1",
                          detail=_approval_detail("approval-marker"))
                await hook.wait_for(lambda p: "approval-marker" in p.body["message"])
                async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
                    async def all_sent() -> bool:
                        # "sent" is recorded once the sink has answered: a moment after the
                        # receiver saw the post.
                        notes = (await http.get("/v1/status")).json()["data"]["notifications"]
                        return bool(notes["pending"] == 0 and notes["sinks"][0]["sent"] == 5)

                    await _until(all_sent)
                    metrics = (await http.get("/metrics")).text
                    assert 'conductor_notifications_sent_total{sink="' in metrics
            delivered = [p.body["notificationId"] for p in hook.accepted]
            assert len(delivered) == len(set(delivered)) == 5, delivered
            assert {p.body["notificationId"].split(":")[0] for p in ids} == {
                "e1", "e2", "e3", "e4"}


async def test_notify_test_reports_each_sink(tmp_path: Path) -> None:
    async with open_receiver() as good, open_receiver() as bad:
        bad.refuse = True
        argv = [sys.executable, "-m", "conductor_trio", "notify", "test",
                "--notify-url", f"json://{good.hostport}/ok",
                "--notify-url", f"[approval]json://{bad.hostport}/down",
                "--state-dir", str(tmp_path)]
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                      check=False, env=_clean_env())
        lines = done.stdout.decode().splitlines()
        assert done.returncode == 1, (lines, done.stderr)
        assert len(lines) == 2
        assert lines[0].endswith(" ok")
        assert "json://" in lines[0]
        assert "failed:" in lines[1]
        assert f"{bad.hostport}" not in done.stdout.decode()  # no URL (secrets) shown
        assert [p.body["title"] for p in good.accepted] == ["baa-conductor: test notification"]
        none = await trio.run_process([sys.executable, "-m", "conductor_trio", "notify", "test"],
                                      capture_stdout=True, capture_stderr=True, check=False,
                                      env=_clean_env())
        assert none.returncode == 2
        assert b"no notification sinks" in none.stderr
