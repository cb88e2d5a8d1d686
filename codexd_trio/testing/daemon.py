"""Run a real codexd (``python -m codexd_trio start``) as a subprocess, for tests and benchmarks.

The daemon binds port 0 and prints one JSON "ready" line on stdout; the harness reads that line
(never sleeps), keeps draining stdout, and on exit stops the daemon with SIGTERM — then, as a
safety net, kills both its process group and the codex child's group if anything survived.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import trio

from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.base.contracts import Event, event_decoder
from codexd_trio.base.process import NotReady, follow_ready_line


@dataclass
class CodexdProcess:
    url: str
    process: trio.Process
    logs_dir: Path
    state_dir: Path
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """codexd's pid (also its process-group id: it runs in its own session)."""
        return self.process.pid

    @property
    def codexd_logs(self) -> Path:
        return self.logs_dir / "codexd"

    @property
    def codexd_state(self) -> Path:
        return self.state_dir / "codexd"

    def child_pid(self) -> int | None:
        try:
            state = json.loads((self.codexd_state / "daemon-state.json").read_text())
        except (OSError, ValueError):
            return None
        pid = state.get("child", {}).get("pid")
        return pid if isinstance(pid, int) else None

    async def terminate(self) -> int:
        """SIGTERM and wait for the exit status (bound it with a scope at the call site)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def read_events(log: Path) -> list[Event]:
    """Every event of a codexd ``events.jsonl``, in file order.

    The data ends at the first zero byte: a running (or killed) codexd's active file has
    reserved space after its data (see ``codexd_trio.store._eventlog_segment``)."""
    data = log.read_bytes().partition(b"\0")[0]
    return [event_decoder.decode(line) for line in data.splitlines()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone for every practical purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


async def wait_pid_gone(pid: int) -> None:
    """Wait (without polling) until a process that is not our child has exited (Linux pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def assert_group_gone(pgid: int) -> None:
    """Fail unless the process group disappears within ~10 s.

    Orphaned members are reaped by init asynchronously; after the processes we own have been
    waited for, a bounded poll is the only way to observe that from outside.
    """
    for _ in range(500):
        if not group_alive(pgid):
            return
        await trio.sleep(0.02)
    raise AssertionError(f"process group {pgid} still exists")


def _open_log(workdir: Path, path: Path) -> BinaryIO:
    workdir.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")  # closed by the caller's with-block


@asynccontextmanager
async def running_codexd(
    workdir: Path,
    codex_home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    name: str = "codexd",
) -> AsyncIterator[CodexdProcess]:
    """Start codexd with its files under ``workdir``; yield once it printed its ready line."""
    logs, state = workdir / "logs", workdir / "state"
    stderr_path = workdir / f"{name}.stderr.log"
    argv: Sequence[str] = [
        sys.executable,
        "-m",
        "codexd_trio",
        "start",
        "--local-api-base",
        "http://127.0.0.1:0",
        "--logs-dir",
        str(logs),
        "--state-dir",
        str(state),
        "--server-cwd",
        str(workdir),
        *args,
    ]
    child_env = dict(os.environ)
    # A token the developer exported for their own node is not this throw-away codexd's.
    child_env.pop("BAA_CODEXD_TOKEN", None)
    child_env.pop("BAA_CODEXD_TOKEN_FILE", None)
    child_env["CODEX_HOME"] = str(codex_home)
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.update(env or {})
    with _open_log(workdir, stderr_path) as stderr:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=str(REPO_ROOT),
            env=child_env,
            start_new_session=True,
        )
    assert process.stdout is not None
    handle: CodexdProcess | None = None
    child_pid: int | None = None
    try:
        async with trio.open_nursery() as nursery:
            lines: list[str] = []
            try:
                with trio.fail_after(90):
                    ready = await nursery.start(follow_ready_line, process, lines)
            except NotReady:
                raise RuntimeError(
                    f"codexd exited before it was ready: {stderr_path.read_text()[-3000:]}"
                ) from None
            handle = CodexdProcess(
                url=ready["url"],
                process=process,
                logs_dir=logs,
                state_dir=state,
                stderr_path=stderr_path,
                stdout_lines=lines,
            )
            try:
                yield handle
            finally:
                child_pid = handle.child_pid()
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(30):
                        await handle.terminate()
                nursery.cancel_scope.cancel(reason="codexd harness closing")
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if child_pid is not None:
            with suppress(ProcessLookupError):
                os.killpg(child_pid, signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await process.wait()
