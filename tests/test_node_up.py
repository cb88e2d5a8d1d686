"""The README's first command: the whole node comes up offline and runs a real turn."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
import pytest
import trio

from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.client import CodexdClient
from codexd_trio.testing import scratch_root


@pytest.mark.real_codex
def test_up_demo_runs_a_real_turn_through_the_conductor_and_stops_cleanly() -> None:
    # Never under /tmp, wherever the checkout is (Codex warns about homes under /tmp).
    var = Path(tempfile.mkdtemp(prefix="test-up-", dir=scratch_root()))
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "conductor_trio.node_up",
                "--demo",
                "--no-wait",
                "--var-dir",
                str(var),
                "--codexd-port",
                "0",
                "--conductor-port",
                "0",
                "--status-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=REPO_ROOT,
            check=False,
        )
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        assert "codex said 'echo: Hello Codex, this is the offline demo.' (completed)" in out
        for name in ("scripted-model", "codexd", "conductor", "status-api"):
            assert f"{name} stopped (exit 0)" in out
        assert (var / "logs" / "codexd" / "events.jsonl").stat().st_size > 0
        assert (var / "state" / "codexd" / "session-registry.json").is_file()
        # One state root for both daemons: the conductor's files sit beside codexd's.
        assert (var / "state" / "conductor" / "lease.json").is_file()
        assert not (var / "state" / "conductor" / "conductor").exists()
    finally:
        shutil.rmtree(var, ignore_errors=True)


def test_up_rejects_bad_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "conductor_trio.node_up", "--codexd-port", "many"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("up: ")
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# up.sh never harms a node that is running (issue 20, item 7)

UP = [sys.executable, "-m", "conductor_trio.node_up"]
READY_MARK = "running; Ctrl-C stops the node"


def _free_ports(count: int) -> list[int]:
    """Ports nobody listens on now (the daemons bind them soon after; not the defaults)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _port_args(ports: Sequence[int]) -> list[str]:
    codexd, conductor, status = ports
    return ["--codexd-port", str(codexd), "--conductor-port", str(conductor),
            "--status-port", str(status)]


def _var() -> Path:
    # Never under /tmp, wherever the checkout is (Codex warns about homes under /tmp).
    return Path(tempfile.mkdtemp(prefix="test-up-", dir=scratch_root()))


def _start_logs(var: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((var / "logs" / "up").glob("*.log"))}


def _assert_no_daemon_started(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    """The daemons' start-up logs were only appended to, and not by a daemon starting (the
    running node keeps logging its own requests and heartbeats)."""
    assert after.keys() == before.keys()
    for name, old in before.items():
        assert after[name].startswith(old), name
        added = after[name][len(old):]
        for start_or_clash in (b"Running on", b"cannot listen", b"in use"):
            assert start_or_clash not in added, (name, added)


def _ready_pids(lines: Sequence[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.search(r"\(pid (\d+)\)$", line))]


@asynccontextmanager
async def running_up(var: Path, ports: Sequence[int]) -> AsyncIterator[list[str]]:
    """``up --demo`` left running (as a user leaves it in a terminal); its stdout lines so far.

    Stopped with SIGTERM as Ctrl-C would; every daemon it reported is killed if it lingers.
    """
    lines: list[str] = []
    ready = trio.Event()

    async def read(process: trio.Process) -> None:
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            lines.extend(raw.decode() for raw in done)
            if any(READY_MARK in line for line in lines):
                ready.set()

    # Beside the var dir, not in it: the node's own files stay exactly what up writes.
    stderr_path = var.parent / f"{var.name}.stderr"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*UP, "--demo", "--var-dir", str(var), *_port_args(ports)],
            stdout=subprocess.PIPE, stderr=stderr, cwd=REPO_ROOT, start_new_session=True)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, process)
            with trio.fail_after(180):
                await ready.wait()
            yield lines
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(60):
                assert await process.wait() == 0
    finally:
        for pid in [process.pid, *_ready_pids(lines)]:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await process.wait()
        stderr_path.unlink(missing_ok=True)


async def _turn_through(conductor: str, codexd: str, text: str) -> str | None:
    async with httpx.AsyncClient(base_url=conductor, timeout=30) as http:
        made = await http.post("/v1/codex/sessions", json={"purpose": "smoke"})
        assert made.status_code == 201, made.text
        session_id = made.json()["data"]["session"]["sessionId"]
        turn = await http.post("/v1/codex/turn", json={"sessionId": session_id, "input": text})
        assert turn.status_code == 202, turn.text
    async with CodexdClient(codexd) as client:
        done = await client.wait_for_turn(session_id, turn.json()["data"]["turnId"])
    return done.lastTurnOutput


@pytest.mark.real_codex
async def test_a_second_up_while_a_node_runs_exits_2_in_one_line_and_changes_nothing() -> None:
    var, ports = _var(), _free_ports(3)
    try:
        async with running_up(var, ports) as first_lines:
            config = var / "demo" / "codex-home" / "config.toml"
            lock = var / "up.lock"
            kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (config, lock)}
            logs = _start_logs(var)
            assert len(logs) == 4, logs.keys()
            with trio.fail_after(120):
                second = await trio.run_process(
                    [*UP, "--demo", "--var-dir", str(var), *_port_args(ports)],
                    capture_stdout=True, capture_stderr=True, check=False, cwd=REPO_ROOT)
            err = second.stderr.decode()
            assert second.returncode == 2, (second.stdout, err)
            assert len(err.strip().splitlines()) == 1, err
            assert err.startswith("up: ")
            assert "already running" in err
            assert f"http://127.0.0.1:{ports[1]}/console" in err  # where to reach it
            assert "kill " in err  # and how to stop it
            assert second.stdout == b""
            # Nothing rewritten, nothing appended to: not the demo home, not one log.
            assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in kept} == kept
            _assert_no_daemon_started(logs, _start_logs(var))
            # The first node still serves a turn, with its own scripted model.
            with trio.fail_after(120):
                answer = await _turn_through(f"http://127.0.0.1:{ports[1]}",
                                             f"http://127.0.0.1:{ports[0]}", "still there?")
            assert answer == "echo: still there?"
            assert any("console: " in line for line in first_lines)
    finally:
        shutil.rmtree(var, ignore_errors=True)


def test_up_refuses_a_port_in_use_before_changing_anything() -> None:
    # Another node (say, from another checkout) holds the conductor's port.
    var = _var()
    codexd, _, status = _free_ports(3)
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            conductor = taken.getsockname()[1]
            result = subprocess.run(
                [*UP, "--demo", "--var-dir", str(var), *_port_args([codexd, conductor, status])],
                capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"port {conductor}" in result.stderr
        assert "--conductor-port" in result.stderr
        assert result.stdout == ""
        assert list(var.iterdir()) == []
    finally:
        shutil.rmtree(var, ignore_errors=True)


@pytest.mark.real_codex
def test_a_paused_node_says_how_to_resume_and_up_resume_resumes_it() -> None:
    var, ports = _var(), _free_ports(3)
    mode = var / "state" / "conductor" / "mode.json"
    mode.parent.mkdir(parents=True)
    mode.write_text('{"mode":"paused","reason":"maintenance","requested_by":"test"}')
    args = [*UP, "--demo", "--no-wait", "--var-dir", str(var), *_port_args(ports)]
    try:
        paused = subprocess.run(args, capture_output=True, text=True, timeout=180,
                                cwd=REPO_ROOT, check=False)
        assert paused.returncode == 2, paused.stdout + paused.stderr
        assert len(paused.stderr.strip().splitlines()) == 1, paused.stderr
        assert "paused" in paused.stderr
        assert "maintenance" in paused.stderr
        assert "--resume" in paused.stderr
        assert "Traceback" not in paused.stdout + paused.stderr

        resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True,
                                 timeout=180, cwd=REPO_ROOT, check=False)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "codex said 'echo: Hello Codex, this is the offline demo.'" in resumed.stdout
        assert '"mode":"running"' in mode.read_text().replace(" ", "")
    finally:
        shutil.rmtree(var, ignore_errors=True)


@pytest.mark.real_codex
def test_up_demo_with_a_codexd_token_needs_the_shared_token_and_sends_it(tmp_path: Path) -> None:
    token = tmp_path / "codexd.token"
    token.write_text("codexd-secret\n")
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items()
           if k not in ("BAA_SHARED_TOKEN", "BAA_SHARED_TOKEN_FILE", "BAA_CODEXD_TOKEN")}
    env["BAA_CODEXD_TOKEN_FILE"] = str(token)
    var = tmp_path / "var"
    result = subprocess.run(
        [*UP, "--demo", "--no-wait", "--var-dir", str(var), *_port_args(_free_ports(3))],
        capture_output=True, text=True, timeout=180, cwd=REPO_ROOT, env=env, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "BAA_SHARED_TOKEN" in result.stderr
    assert not var.exists()  # nothing started, nothing written

    # With the shared token too, the demo sends it to the conductor (which requires a caller
    # credential on /v1/codex/* whenever codexd has a token) and runs its turn.
    shared = tmp_path / "shared.token"
    shared.write_text("shared-secret\n")
    shared.chmod(0o600)
    env["BAA_SHARED_TOKEN_FILE"] = str(shared)
    var = _var()
    try:
        result = subprocess.run(
            [*UP, "--demo", "--no-wait", "--var-dir", str(var), *_port_args(_free_ports(3))],
            capture_output=True, text=True, timeout=180, cwd=REPO_ROOT, env=env, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "codex said 'echo: Hello Codex, this is the offline demo.'" in result.stdout
    finally:
        shutil.rmtree(var, ignore_errors=True)


def _path_without_npm(tmp_path: Path) -> str:
    """A PATH with bash, dirname and a plain python3 (no project packages), and no npm: an
    install started anyway fails ("npm not found")."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    base = Path(sys.base_prefix) / "bin" / "python3"
    (bin_dir / "python3").symlink_to(base if base.exists() else Path(sys.executable))
    return str(bin_dir)


def test_up_sh_help_and_a_bad_flag_answer_before_installing_anything(tmp_path: Path) -> None:
    env = {"PATH": _path_without_npm(tmp_path), "HOME": str(tmp_path)}
    script = REPO_ROOT / "scripts" / "up.sh"
    stamp = REPO_ROOT / ".setup-stamp"
    stamp_before = stamp.stat().st_mtime_ns if stamp.exists() else None

    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                            timeout=60, env=env, check=False)
    assert helped.returncode == 0, helped.stdout + helped.stderr
    assert helped.stdout.startswith("usage: scripts/up.sh")
    for flag in ("--demo", "--no-wait", "--resume", "--var-dir"):
        assert flag in helped.stdout
    assert "npm" not in helped.stdout + helped.stderr

    bad = subprocess.run([str(script), "--demo", "--bogus"], capture_output=True, text=True,
                         timeout=60, env=env, check=False)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "--bogus" in bad.stderr
    assert "usage: scripts/up.sh" in bad.stderr
    assert "npm" not in bad.stdout + bad.stderr
    assert (stamp.stat().st_mtime_ns if stamp.exists() else None) == stamp_before
