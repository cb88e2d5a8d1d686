"""The everyday commands as a person runs them: ``codexd`` as a subprocess against a real codexd
(the real Codex binary, the scripted model playing each prompt's directive: ``SLOW``,
``SHELL``, ``FAIL``...), and ``conductor pause|resume|drain|status`` against a real conductor."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.cli.connect import short_id
from codexd_trio.client import CodexdClient
from codexd_trio.testing import Plain, Prompted, ScriptedModel, Streamed, codex_child_env
from codexd_trio.testing.daemon import CodexdProcess, running_codexd
from tests.fake_codexd import spawn_daemon

pytestmark = pytest.mark.real_codex

CODEXD = [sys.executable, "-m", "codexd_trio"]
CONDUCTOR = [sys.executable, "-m", "conductor_trio"]
PATCH = ("SHELL: apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: hello.txt\n+hi\n+there\n"
         "*** End Patch\nEOF\n")


def clean_env(**extra: str) -> dict[str, str]:
    """The developer's environment without their node's settings (tokens, a conductor)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAA_") and k != "NO_COLOR"}
    env.update(extra)
    return env


def _run(argv: list[str], stdin: str | None, env: dict[str, str] | None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=REPO_ROOT,
                          env=env or clean_env(), timeout=120, check=False)


async def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(_run, [*CODEXD, *args], stdin, env)


async def conductor(*args: str, env: dict[str, str] | None = None
                    ) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(_run, [*CONDUCTOR, *args], None, env)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(("codexd: ", "conductor: ")), result.stderr
    return result.stderr


@asynccontextmanager
async def prompted_codexd(tmp_path: Path, model: ScriptedModel, home: Path,
                          env: dict[str, str] | None = None) -> AsyncIterator[CodexdProcess]:
    model.default = Prompted()
    with trio.fail_after(150):
        async with running_codexd(tmp_path / "node", home, env=env) as daemon:
            yield daemon


async def new_session(base: list[str], work: Path, *extra: str) -> str:
    work.mkdir(exist_ok=True)
    made = await cli("new", *base, "--cwd", str(work), "--sandbox", "workspace-write", *extra)
    assert made.returncode == 0, made.stderr
    session_id = made.stdout.strip()
    assert session_id.startswith("session-")
    assert made.stdout == session_id + "\n"  # only the id, for id=$(codexd new)
    return session_id


async def follow_send(nursery: trio.Nursery, client: CodexdClient, session_id: str,
                      argv: list[str], until: str) -> tuple[dict[str, Any], Any]:
    """Start ``codexd send`` in the background and return once the session's stream shows an
    event of type ``until`` (the send subscribed before it posted, so it sees it too).
    ``result["process"]`` is the running send, ``result["done"]`` its outcome once it ended."""
    result: dict[str, Any] = {}

    async def run(task_status: trio.TaskStatus[trio.Process]) -> None:
        result["done"] = await trio.run_process(
            [*CODEXD, *argv], capture_stdout=True, capture_stderr=True, check=False,
            cwd=REPO_ROOT, env=clean_env(), task_status=task_status)

    async with client.events(session_id=session_id) as stream:
        result["process"] = await nursery.start(run)
        async for event in stream:
            if event.type == until:
                return result, event
    raise AssertionError(f"the stream ended before {until}")


def decoded(result: dict[str, Any]) -> tuple[int, str, str]:
    done = result["done"]
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_send_streams_the_answer_commands_and_diffs_and_show_reads_them_back(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    async with prompted_codexd(tmp_path, scripted_model, codex_home) as daemon:
        base = ["--local-api-base", daemon.url]
        work = tmp_path / "work"
        session_id = await new_session(base, work, "--title", "cli test")
        prefix = session_id.removeprefix("session-")[:6]

        text = await cli("send", *base, prefix, "SLOW 5 4: streamed answer")
        assert (text.returncode, text.stdout, text.stderr) == (0, "streamed answer\n", "")

        shell = await cli("send", *base, session_id, "SHELL: echo out-one; echo out-two >&2; "
                          "exit 3")
        assert shell.returncode == 0, shell.stderr  # the command failed, the turn did not
        lines = shell.stdout.splitlines()
        assert lines[0] == "$ echo out-one; echo out-two >&2; exit 3"
        assert "out-one" in lines
        assert "out-two" in lines
        assert next(line for line in lines if line.startswith("exit ")).startswith("exit 3 · ")
        assert lines[-1] == "ran: echo out-one; echo out-two >&2; exit 3"

        patched = await cli("send", *base, session_id, "-", stdin=PATCH)
        assert patched.returncode == 0, patched.stderr
        assert "--- /dev/null\n+++ b/hello.txt\n@@ -0,0 +1,2 @@\n+hi\n+there\n" in patched.stdout
        assert (work / "hello.txt").read_text() == "hi\nthere\n"

        failed = await cli("send", *base, session_id, "FAIL: the model broke")
        assert failed.returncode == 1
        assert "the model broke" in one_line(failed)

        missing = await cli("send", *base, "nope", "hi")
        assert (missing.returncode, missing.stderr) == (2, "codexd: no session matches 'nope'\n")
        empty = await cli("send", *base, session_id, "-", stdin="  \n")
        assert empty.returncode == 2
        assert "empty" in one_line(empty)

        as_json = await cli("send", *base, prefix, "--json", "json please")
        assert as_json.returncode == 0, as_json.stderr
        events = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert {e["sessionId"] for e in events} == {session_id}
        assert "turn.accepted" in [e["type"] for e in events]
        assert events[-1]["type"] == "app-server.turn.completed"
        deltas = [e["detail"]["delta"] for e in events
                  if e["type"] == "app-server.item.agentMessage.delta"]
        assert "".join(deltas) == "echo: json please"

        show = await cli("show", *base, prefix)
        assert show.returncode == 0, show.stderr
        assert show.stdout.startswith(f"session {session_id} · cli test · ")
        assert show.stdout.count("── turn ") == 5
        for piece in ("> SLOW 5 4: streamed answer\n\nstreamed answer\n",
                      "$ echo out-one; echo out-two >&2; exit 3\n", "+++ b/hello.txt\n",
                      "turn failed: ", "> json please\n\necho: json please\n"):
            assert piece in show.stdout, piece
        last = await cli("show", *base, prefix, "--last", "1")
        assert last.stdout.count("── turn ") == 1
        assert "json please" in last.stdout
        transcript = json.loads((await cli("show", *base, session_id, "--json")).stdout)
        assert [t["status"] for t in transcript["turns"]] == [
            "completed", "completed", "completed", "failed", "completed"]

        sessions = await cli("sessions", *base)
        assert sessions.returncode == 0
        header, row = sessions.stdout.splitlines()
        assert header.split() == ["SESSION", "STATE", "TURNS", "LAST", "TURN", "ACTIVE", "CWD",
                                  "TITLE"]
        assert row.split()[:3] == [short_id(session_id), "idle", "5"]
        assert row.endswith("cli test")
        listed = json.loads((await cli("sessions", *base, "--json")).stdout)
        assert [s["sessionId"] for s in listed["sessions"]] == [session_id]

        threads = await cli("threads", *base)
        assert threads.returncode == 0, threads.stderr
        assert short_id(session_id) in threads.stdout.splitlines()[1]

        newest = await cli("events", *base, "--session", prefix, "--last", "3")
        assert newest.returncode == 0, newest.stderr
        three = newest.stdout.splitlines()
        assert len(three) == 3
        assert "app-server.turn.completed" in three[-1]
        assert three[-1].endswith(" completed")
        every = (await cli("events", *base, "--session", prefix)).stdout
        assert '"echo: js"' in every  # the delta's own text, quoted
        assert "$ echo out-one; echo out-two >&2; exit 3 -> exit 3" in every
        assert "fileChange add " in every


async def test_send_no_wait_busy_interrupted_and_colour_on_a_terminal(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    async with (
        prompted_codexd(tmp_path, scripted_model, codex_home) as daemon,
        CodexdClient(daemon.url) as client,
    ):
        base = ["--local-api-base", daemon.url]
        session_id = await new_session(base, tmp_path / "work")

        started = await cli("send", *base, session_id, "--no-wait", "SLOW 100 200: long")
        assert started.returncode == 0, started.stderr
        turn_id = started.stdout.strip()
        busy = await cli("send", *base, session_id, "not now")
        assert busy.returncode == 2
        assert "(turn_in_progress)" in one_line(busy)
        stopped = await cli("interrupt", *base, session_id)
        assert stopped.returncode == 0, stopped.stderr
        assert turn_id in stopped.stdout
        with trio.fail_after(60):
            assert (await client.wait_for_turn(session_id, turn_id)).lastTurnStatus == \
                "interrupted"
        nothing = await cli("interrupt", *base, session_id)
        assert nothing.returncode == 2
        assert "(no_active_turn)" in one_line(nothing)

        async with trio.open_nursery() as nursery:
            result, _ = await follow_send(nursery, client, session_id,
                                          ["send", *base, session_id, "SLOW 100 200: stop me"],
                                          "app-server.item.agentMessage.delta")
            assert (await cli("interrupt", *base, session_id)).returncode == 0
        status, out, err = decoded(result)
        assert status == 4
        streamed, *notes = out.splitlines()
        assert streamed
        assert "stop me".ljust(200, ".").startswith(streamed)  # as far as it got
        # codexd journals the request before or after Codex's turn/completed, as they race.
        assert notes in ([], ["(interrupt requested)"])
        assert err.endswith("was interrupted\n")

        argv = [*CODEXD, "send", *base, session_id, "SHELL: echo coloured"]
        coloured = await trio.to_thread.run_sync(on_a_terminal, argv, clean_env(TERM="xterm"))
        assert coloured[0] == 0
        assert b"\x1b[1m\x1b[35m$ \x1b[0mecho coloured\x1b[0m" in coloured[1]
        plain = await trio.to_thread.run_sync(on_a_terminal, argv,
                                              clean_env(TERM="xterm", NO_COLOR="1"))
        assert plain[0] == 0
        assert b"$ echo coloured" in plain[1]
        assert b"\x1b[" not in plain[1]
        forced = await cli("send", *base, session_id, "--color", "always", "SHELL: echo x")
        assert "\x1b[" in forced.stdout
        piped = await cli("send", *base, session_id, "SHELL: echo x")
        assert "\x1b[" not in piped.stdout


def on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``argv`` with its stdout and stderr on a pseudo-terminal; its exit status and what
    it wrote there."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(argv, stdout=follower, stderr=follower,
                                   stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT)
    finally:
        os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: every writer closed it
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
    return process.wait(timeout=60), b"".join(chunks)


async def test_approvals_listed_approved_and_declined_while_send_waits(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    async with (
        prompted_codexd(tmp_path, scripted_model, codex_home) as daemon,
        CodexdClient(daemon.url) as client,
    ):
        base = ["--local-api-base", daemon.url]
        work = tmp_path / "work"
        session_id = await new_session(base, work, "-a", "untrusted", "--approvals", "clients")
        assert (await cli("approvals", *base)).stdout == "nothing to approve\n"

        async with trio.open_nursery() as nursery:
            result, asked = await follow_send(
                nursery, client, session_id, ["send", *base, session_id,
                                              "SHELL: touch approved.txt"],
                "approval.requested")
            approval_id = asked.detail["approval"]["approvalId"]
            short = approval_id.removeprefix("approval-")[:8]
            listed = await cli("approvals", *base, "--session", session_id[:14])
            header, row = listed.stdout.splitlines()
            assert header.split() == ["APPROVAL", "SESSION", "STATE", "ASKED", "WHAT"]
            assert row.startswith(short)
            assert row.endswith("run `touch approved.txt`")
            approved = await cli("approve", *base, short[:6])
            assert approved.returncode == 0, approved.stderr
            assert approved.stdout.startswith(f"approval {approval_id}: accept")
        status, out, _ = decoded(result)
        assert status == 0
        assert f"? approval {short}: run `touch approved.txt`" in out
        assert f"codexd approve {short}" in out
        assert f"approval {short}: accept (cli:" in out
        assert "$ touch approved.txt" in out
        assert (work / "approved.txt").exists()
        again = await cli("approve", *base, approval_id)
        assert again.returncode == 2
        assert "(approval_resolved)" in one_line(again)

        async with trio.open_nursery() as nursery:
            result, asked = await follow_send(
                nursery, client, session_id, ["send", *base, session_id,
                                              "SHELL: touch declined.txt"],
                "approval.requested")
            declined = await cli("decline", *base, "--json",
                                 asked.detail["approval"]["approvalId"])
            assert declined.returncode == 0, declined.stderr
            assert json.loads(declined.stdout)["decision"] == "decline"
        status, out, _ = decoded(result)
        assert status == 0
        assert ": decline (cli:" in out
        assert not (work / "declined.txt").exists()
        every = json.loads((await cli("approvals", *base, "--all", "--json")).stdout)
        assert [a["decision"] for a in every["approvals"]] == ["accept", "decline"]
        unknown = await cli("approve", *base, "zzzz")
        assert (unknown.returncode, unknown.stderr) == (2, "codexd: no approval matches 'zzzz'\n")


async def test_through_the_conductor_with_its_token_and_the_node_modes(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    codexd_token, shared_token = tmp_path / "codexd.token", tmp_path / "shared.token"
    for path, token in ((codexd_token, "codexd-secret"), (shared_token, "shared-secret")):
        path.write_text(token + "\n")
        path.chmod(0o600)
    async with prompted_codexd(tmp_path, scripted_model, codex_home,
                               env={"BAA_CODEXD_TOKEN_FILE": str(codexd_token)}) as daemon:
        argv = [*CONDUCTOR, "start", "--local-api", "http://127.0.0.1:0", "--codexd-base",
                daemon.url, "--state-dir", str(tmp_path / "cstate"), "--token-file",
                str(shared_token), "--codexd-token-file", str(codexd_token)]
        async with spawn_daemon(argv, env=clean_env()) as node:
            via = ["--via-conductor", node.url]
            with_shared = clean_env(BAA_SHARED_TOKEN_FILE=str(shared_token))
            refused = await cli("sessions", *via)
            assert refused.returncode == 1
            assert "(unauthorized)" in one_line(refused)
            direct = await cli("sessions", "--local-api-base", daemon.url)
            assert direct.returncode == 1  # codexd wants its own token
            made = await cli("new", *via, "--cwd", str(tmp_path), env=with_shared)
            assert made.returncode == 0, made.stderr
            session_id = made.stdout.strip()

            own = ["--local-api", node.url, "--token-file", str(shared_token)]
            status = await conductor("status", *own)
            assert status.returncode == 0, status.stderr
            assert "\nrole        leader (file lease" in status.stdout
            assert "\nmode        running\n" in status.stdout
            assert "\nsessions    1 (1 active)\n" in status.stdout
            envelope = json.loads((await conductor("status", *own, "--json")).stdout)
            assert (envelope["ok"], envelope["data"]["source"]) == (True, "conductor")

            no_token = await conductor("pause", "--local-api", node.url)
            assert no_token.returncode == 1
            assert "(unauthorized)" in one_line(no_token)
            paused = await conductor("pause", *own, "--reason", "maintenance")
            assert paused.returncode == 0, paused.stderr
            assert paused.stdout.startswith("mode   paused (reason 'maintenance', by cli:")
            refused = await cli("send", *via, session_id, "hi", env=with_shared)
            assert refused.returncode == 2
            assert "(system_paused)" in one_line(refused)
            resumed = await conductor("resume", *own)
            assert resumed.stdout.startswith("mode   running")

            env = clean_env(BAA_SHARED_TOKEN_FILE=str(shared_token),
                            BAA_CODEXD_VIA_CONDUCTOR=node.url)
            sent = await cli("send", session_id[:12], "SLOW 5 3: via the conductor", env=env)
            assert (sent.returncode, sent.stdout) == (0, "via the conductor\n"), sent.stderr
            shown = await cli("show", session_id, "--last", "1", env=env)
            assert "via the conductor" in shown.stdout

            drained = await conductor("drain", *own)
            assert drained.returncode == 0, drained.stderr
            assert "drained  yes: no turn is running" in drained.stdout
            as_json = json.loads((await conductor("drain", *own, "--json")).stdout)
            assert as_json["data"]["mode"] == "draining"
            draining = await cli("send", session_id, "hi", env=env)
            assert draining.returncode == 2
            assert "(system_draining)" in one_line(draining)
            assert (await conductor("resume", *own, "--json")).returncode == 0


async def test_a_thread_started_by_codex_exec_is_listed_read_and_adopted(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path, codex_binary: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    scripted_model.script(Plain("exec says PAPAYA"))
    with trio.fail_after(150):
        ran = await trio.run_process(
            [str(codex_binary), "exec", "--skip-git-repo-check", "-C", str(work),
             "remember the word PAPAYA"],
            env=codex_child_env(codex_home, codex_binary), stdin=subprocess.DEVNULL,
            capture_stdout=True, capture_stderr=True, check=False)
    assert ran.returncode == 0, ran.stderr.decode()[-2000:]
    async with prompted_codexd(tmp_path, scripted_model, codex_home) as daemon:
        base = ["--local-api-base", daemon.url]
        listed = await cli("threads", *base)
        assert listed.returncode == 0, listed.stderr
        (row,) = listed.stdout.splitlines()[1:]
        thread, session, source = row.split()[:3]
        assert (session, source) == ("-", "exec")
        assert row.endswith("remember the word PAPAYA")
        read = await cli("show", *base, "--thread", thread)
        assert read.returncode == 0, read.stderr
        assert "> remember the word PAPAYA\n\nexec says PAPAYA" in read.stdout
        adopted = await cli("new", *base, "--thread", thread, "--title", "adopted")
        assert adopted.returncode == 0, adopted.stderr
        session_id = adopted.stdout.strip()
        shown = await cli("show", *base, session_id)
        assert shown.stdout.startswith(f"session {session_id} · adopted · ")
        assert " · imported · " in shown.stdout
        assert "exec says PAPAYA" in shown.stdout
        again = await cli("threads", *base, "--search", "PAPAYA", "--json")
        (held,) = json.loads(again.stdout)["threads"]
        assert held["sessionId"] == session_id
        refused = await cli("new", *base, "--thread", thread, "--cwd", str(work))
        assert refused.returncode == 2
        assert "--thread adopts the thread as it is" in one_line(refused)


async def test_send_queue_waits_for_the_running_turn_then_streams_its_own(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    async with (
        prompted_codexd(tmp_path, scripted_model, codex_home) as daemon,
        CodexdClient(daemon.url) as client,
    ):
        base = ["--local-api-base", daemon.url]
        session_id = await new_session(base, tmp_path / "work")
        # The running turn is held by the model until released: the queued send surely meets a
        # busy session, whatever the machine's speed.
        scripted_model.script(Streamed(["first ", "answer"], hold_after=1))
        started = await cli("send", *base, session_id, "--no-wait", "first")
        assert started.returncode == 0, started.stderr
        with trio.fail_after(60):
            await scripted_model.wait_held()
        refused = await cli("send", *base, session_id, "plain")
        assert refused.returncode == 2
        assert "(turn_in_progress)" in one_line(refused)

        async with trio.open_nursery() as nursery:
            result, _ = await follow_send(nursery, client, session_id,
                                          ["send", *base, session_id, "--queue", "second one"],
                                          "turn.queued")
            later = await cli("send", *base, session_id, "--queue", "--no-wait", "third")
            assert later.returncode == 0, later.stderr
            third = later.stdout.strip()
            assert third.startswith("queue-")
            scripted_model.release_hangs()
        status, out, err = decoded(result)
        assert status == 0, err
        assert out == "echo: second one\n"  # its own turn's answer, not the first turn's
        assert err.startswith("queued as queue-")
        assert "position 0" in err
        # The third starts only after the second settled, and runs to its end.
        order: list[str] = []
        with trio.fail_after(60):
            async with client.events(after=0, session_id=session_id) as stream:
                async for event in stream:
                    if event.type == "turn.dequeued":
                        order.append(f"start {event.detail['queueId']}")
                    elif event.type == "app-server.turn.completed":
                        order.append("settled")
                        if order[-2:] == [f"start {third}", "settled"]:
                            break
        assert order == ["settled", order[1], "settled", f"start {third}", "settled"], order


async def test_ctrl_c_on_send_stops_following_exits_130_and_the_turn_runs_on(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    # Ctrl-C while `codexd send` follows its turn: it stops following at once (exit 130), says
    # the turn runs on and how to stop it, and the turn does run on in codexd.
    async with (
        prompted_codexd(tmp_path, scripted_model, codex_home) as daemon,
        CodexdClient(daemon.url) as client,
    ):
        base = ["--local-api-base", daemon.url]
        session_id = await new_session(base, tmp_path / "work")
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                result, delta = await follow_send(
                    nursery, client, session_id,
                    ["send", *base, session_id, "SLOW 50 20: keep going"],
                    "app-server.item.agentMessage.delta")
                result["process"].send_signal(signal.SIGINT)
        status, _, err = decoded(result)
        turn_id = delta.turnId
        assert turn_id is not None
        assert status == 130, err
        assert err == (f"codexd: stopped following turn {turn_id}; it runs on in codexd "
                       f"('codexd interrupt {short_id(session_id)}' stops it)\n")
        with trio.fail_after(60):
            assert (await client.wait_for_turn(session_id, turn_id)).lastTurnStatus == \
                "completed"
