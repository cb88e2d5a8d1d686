"""The ``codexd`` command line as a person uses it: status, config, events, smoke, console."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.base.settings import ConfigError
from codexd_trio.client import CodexdClient
from codexd_trio.core.config import CodexdConfig, resolve_config
from codexd_trio.testing import Plain, ScriptedModel
from codexd_trio.testing.daemon import running_codexd


def codexd(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexd_trio", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
        check=False,
    )


async def run_codexd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: codexd(*args, stdin=stdin))


def test_config_precedence_defaults_env_flags() -> None:
    config, rest = resolve_config([], {})
    assert config.local_api_base == "http://127.0.0.1:4319"
    assert config.node_id == "mini-main"
    env = {"BAA_NODE_ID": "from-env", "BAA_CODEXD_LOCAL_API_BASE": "http://localhost:5000"}
    config, _ = resolve_config([], env)
    assert (config.node_id, config.port, config.host) == ("from-env", 5000, "localhost")
    config, rest = resolve_config(
        ["--node-id", "from-flag", "--server-arg", "a", "--server-arg", "b", "x"], env
    )
    assert config.node_id == "from-flag"
    assert config.server_args == ("a", "b")
    assert rest == ["x"]
    for base in ("http://[::1]:4319", "http://127.3.2.1:0"):
        resolve_config(["--local-api-base", base], {})


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--local-api-base", "http://0.0.0.0:4319"], "loopback"),
        (["--local-api-base", "http://192.168.1.5:4319"], "loopback"),
        (["--local-api-base", "ftp://127.0.0.1:4319"], "http://"),
        (["--local-api-base", "http://127.0.0.1:99999"], "port"),
        (["--shutdown-grace", "soon"], "number"),
        (["--event-stream-path", "events"], "start with"),
        (["--server-strategy", "attach"], "spawn"),
        (["--server-endpoint", "tcp://127.0.0.1:1"], "stdio"),
        (["--server-strategy", "external"], "needs --server-endpoint"),
        (["--server-strategy", "external", "--server-endpoint", "unix://relative"], "absolute"),
        (["--server-strategy", "external", "--server-endpoint", "ws://10.1.2.3:4500"], "loopback"),
        (["--server-strategy", "external", "--server-endpoint", "http://127.0.0.1:1"], "unix:///"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        resolve_config(args, {})
    result = codexd("config", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("codexd: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("endpoint", ["stdio", "stdio://", "stdio://codex-app-server"])
def test_the_seeds_stdio_endpoint_spellings_are_accepted(endpoint: str) -> None:
    config, _ = resolve_config(["--server-endpoint", endpoint], {})
    assert config.server_endpoint == endpoint
    assert codexd("config", "--server-endpoint", endpoint).returncode == 0


def test_usage_errors() -> None:
    assert codexd("frobnicate").returncode == 2
    assert codexd().returncode == 2
    help_text = codexd("--help")
    assert help_text.returncode == 0
    assert "smoke" in help_text.stdout
    bad = codexd("events", "--after", "-3")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert codexd("status", "--bogus").returncode == 2


def test_config_json_shows_resolved_values(tmp_path: Path) -> None:
    result = codexd("config", "--json", "--state-dir", str(tmp_path / "s"), "--node-id", "n1")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["node_id"] == "n1"
    assert data["state_dir"] == str(tmp_path / "s")
    assert data["server_args"] == ["app-server"]


def test_each_command_has_its_own_help() -> None:
    events = codexd("events", "--help")
    assert events.returncode == 0, events.stderr
    assert events.stdout.startswith("usage: codexd events")
    for option in ("--follow", "--after", "--session", "--json", "--limit"):
        assert option in events.stdout
    assert "smoke" not in events.stdout  # not the general help
    status = codexd("status", "-h")
    assert status.stdout.startswith("usage: codexd status")
    assert "exit status" in status.stdout
    start = codexd("start", "--help")
    assert start.stdout.startswith("usage: codexd start")
    assert "--server-strategy" in start.stdout  # the configuration flags are start's options
    for command in ("config", "smoke", "console"):
        helped = codexd(command, "--help")
        assert helped.returncode == 0
        assert helped.stdout.startswith(f"usage: codexd {command}")


def test_status_when_nothing_runs(tmp_path: Path) -> None:
    # Like systemctl status: 3 when the daemon does not answer, and the status is still printed.
    result = codexd(
        "status", "--json", "--state-dir", str(tmp_path), "--local-api-base", "http://127.0.0.1:9"
    )
    assert result.returncode == 3
    data = json.loads(result.stdout)
    assert data["running"] is False
    assert data["identity"] is None
    assert data["sessionRegistry"] == {"sessions": []}
    assert data["api"] == {"base": "http://127.0.0.1:9", "reachable": False,
                           "error": data["api"]["error"]}
    table = codexd("status", "--state-dir", str(tmp_path), "--local-api-base", "http://127.0.0.1:9")
    assert "down" in table.stdout
    assert table.returncode == 3


@pytest.mark.real_codex
async def test_status_events_and_console_against_a_running_daemon(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as daemon,
            CodexdClient(daemon.url) as client,
        ):
            session = await client.create_session()
            scripted_model.script(Plain("cli answer"))
            turn = await client.start_turn(session.sessionId, "hi from the cli test")
            await client.wait_for_turn(session.sessionId, turn["turnId"])
            common = ["--state-dir", str(daemon.state_dir), "--local-api-base", daemon.url]

            result = await run_codexd("status", "--json", *common)
            assert result.returncode == 0
            data = json.loads(result.stdout)
            assert data["running"] is True
            assert data["api"]["status"]["snapshot"]["sessions"]["count"] == 1
            assert data["identity"]["daemonId"].startswith("codexd-")
            # The seed's shape (its runbooks read these keys).
            assert data["daemon"]["started"] is True
            assert data["daemon"]["child"]["status"] == "running"
            assert data["daemon"]["child"]["pid"] > 0
            assert [s["sessionId"] for s in data["sessionRegistry"]["sessions"]] == [
                session.sessionId]
            assert data["recentEvents"]["events"]
            assert data["api"]["reachable"] is True
            table = (await run_codexd("status", *common)).stdout
            assert "running" in table
            assert "1 (1 active)" in table

            events = await run_codexd("events", "--session", session.sessionId, *common)
            assert events.returncode == 0
            assert "turn.accepted" in events.stdout
            assert "app-server.turn.completed" in events.stdout
            # Each line names the session by its short id (a prefix every command takes).
            short = session.sessionId.removeprefix("session-")[:8]
            assert all(f" {short} " in line for line in events.stdout.splitlines())
            # A session codexd does not know: one line, exit 2 (it used to print nothing, 0).
            for follow in ([], ["--follow"]):
                missing = await run_codexd("events", *follow, "--session", "nope", *common)
                assert missing.returncode == 2, (follow, missing.stdout, missing.stderr)
                assert missing.stdout == ""
                assert missing.stderr.count("\n") == 1
                assert "nope" in missing.stderr
            as_json = await run_codexd("events", "--json", "--after", "3", "--limit", "2", *common)
            seqs = [json.loads(line)["seq"] for line in as_json.stdout.splitlines()]
            assert seqs == [4, 5]

            console = await run_codexd(
                "console",
                "--local-api-base",
                daemon.url,
                stdin="s = await client.list_sessions()\nprint('SESSIONS', len(s))\n",
            )
            assert console.returncode == 0, console.stderr
            assert "SESSIONS 1" in console.stdout
        # Down: the same shape, from the files.
        down_status = await run_codexd("status", "--json", *common)
        assert down_status.returncode == 3
        down = json.loads(down_status.stdout)
        assert down["api"]["reachable"] is False
        assert down["daemon"]["started"] is False
        assert down["daemon"]["child"]["status"] == "stopped"
        assert [s["sessionId"] for s in down["sessionRegistry"]["sessions"]] == [
            session.sessionId]
        assert down["identity"] == data["identity"]
        assert down["recentEvents"]["events"]
        assert set(down["recentEvents"]) == set(data["recentEvents"])  # the same keys up or down
        assert down["recentEvents"]["lastSeq"] == down["recentEvents"]["events"][-1]["seq"]


@pytest.mark.real_codex
def test_smoke_command_passes() -> None:
    result = codexd("smoke")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: passed" in result.stdout
    assert "FAIL" not in result.stdout


def test_start_on_a_taken_port_is_one_line_and_no_child(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = codexd(
            "start",
            "--local-api-base",
            f"http://127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path / "state"),
            "--logs-dir",
            str(tmp_path / "logs"),
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"codexd: cannot listen on http://127.0.0.1:{port}: ")
    assert lines[-1].endswith("Address already in use")
    assert "Traceback" not in result.stderr
    events = (tmp_path / "logs" / "codexd" / "events.jsonl").read_text()
    assert "child.starting" not in events  # it failed before spawning Codex


@pytest.mark.real_codex
async def test_events_follow_tails_the_live_stream(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "node", codex_home) as daemon,
            CodexdClient(daemon.url) as client,
        ):
            follower = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "codexd_trio",
                    "events",
                    "--follow",
                    "--json",
                    "--after",
                    "0",
                    "--local-api-base",
                    daemon.url,
                ],
                stdout=subprocess.PIPE,
                cwd=REPO_ROOT,
                start_new_session=True,
                # If it ever fails to stop on Ctrl-C, SIGABRT below makes it print where it is.
                env={**os.environ, "PYTHONFAULTHANDLER": "1"},
            )
            try:
                assert follower.stdout is not None
                session = await client.create_session()
                scripted_model.script(Plain("followed"))
                await client.start_turn(session.sessionId, "tail me")
                seen: list[dict[str, Any]] = []
                buffer = b""
                async for chunk in follower.stdout:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    seen += [json.loads(line) for line in lines if line]
                    if any(e["type"] == "app-server.turn.completed" for e in seen):
                        break
                types = [e["type"] for e in seen]
                assert types.index("session.created") < types.index("turn.accepted")
                seqs = [e["seq"] for e in seen]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            finally:
                signal_state = _signal_state(follower.pid)
                follower.send_signal(signal.SIGINT)
                # A margin, not a speed: it stops in well under a second; once, on a 2-core
                # machine at load ~7, it had not stopped after 10 s (and printed nothing).
                with trio.move_on_after(30):
                    await follower.wait()
                if follower.returncode is None:
                    follower.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack
                    with trio.move_on_after(5):
                        await follower.wait()
                if follower.returncode is None:
                    follower.kill()
                    await follower.wait()
            assert follower.returncode == 130, signal_state


def _signal_state(pid: int) -> str:
    """The signal masks of a process (``/proc/<pid>/status``: pending, blocked, ignored,
    caught), for a failure message: a child that inherited SIGINT blocked or ignored cannot be
    stopped by Ctrl-C."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        return f"no /proc status: {exc}"
    return " ".join(line.replace("\t", "") for line in lines if line.startswith(
        ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")))


def test_damaged_files_stop_start_with_one_line(tmp_path: Path) -> None:
    args = [
        "--local-api-base",
        "http://127.0.0.1:0",
        "--logs-dir",
        str(tmp_path / "logs"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    registry = tmp_path / "state" / "codexd" / "session-registry.json"
    registry.parent.mkdir(parents=True)
    registry.write_text("{not json")
    result = codexd("start", *args)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("codexd: cannot open the state files:")
    assert "session-registry.json" in result.stderr
    assert "Traceback" not in result.stderr

    registry.unlink()
    log = tmp_path / "logs" / "codexd" / "events.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text('{"seq":1,"at":"x","type":"t"}\n' + "garbage\n" * 80)
    result = codexd("start", *args)
    assert result.returncode == 1
    assert "codexd: the event log is damaged" in result.stderr
    assert "Traceback" not in result.stderr
    assert log.read_text().count("garbage") == 80  # nothing was cut or lost


def test_configuration_flags_are_never_guessed_from_a_prefix() -> None:
    # argparse's abbreviations let `--state` (a command's own option) become `--state-dir` and
    # made `--all` an "ambiguous option" printed as a whole usage block (exit 2, many lines).
    config, rest = resolve_config(["--state", "pending", "--all", "--log", "x"], {})
    assert rest == ["--state", "pending", "--all", "--log", "x"]
    assert config.state_dir == CodexdConfig().state_dir
    with pytest.raises(ConfigError, match="--node-id"):
        resolve_config(["--node-id"], {})
    missing = codexd("config", "--node-id")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1, missing.stderr
    assert missing.stderr.startswith("codexd: ")
